package financial_etl.hadoop;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.attribute.PosixFilePermission;
import java.util.EnumSet;
import java.util.Set;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.fs.RawLocalFileSystem;
import org.apache.hadoop.fs.permission.FsPermission;

/**
 * Hadoop's local file system, setting permissions through java.nio. Without Hadoop's native
 * library, RawLocalFileSystem runs a chmod process for every folder it creates: a Spark
 * write of 2,500 day partitions forked thousands of them.
 */
public class NioLocalFileSystem extends RawLocalFileSystem {
  private static final PosixFilePermission[] BITS = PosixFilePermission.values(); // rwx rwx rwx, high bit first

  @Override
  public void setPermission(Path path, FsPermission permission) throws IOException {
    short mode = permission.toShort();
    Set<PosixFilePermission> permissions = EnumSet.noneOf(PosixFilePermission.class);
    for (int i = 0; i < BITS.length; i++) {
      if ((mode & (1 << (BITS.length - 1 - i))) != 0) {
        permissions.add(BITS[i]);
      }
    }
    Files.setPosixFilePermissions(pathToFile(path).toPath(), permissions);
  }
}
