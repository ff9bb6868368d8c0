"""The Debian packages the tests need, and how the tests find each one: the one list.

`scripts/install-system-packages` runs this file with the system's python3 (before any
venv exists, so it imports only the standard library); it prints the missing packages,
one a line, and the script apt-get installs them. `conftest.py` calls `missing_message()`
before collection and stops a run that lacks any of them with one line naming the
packages, instead of an ImportError or a skip.
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass

INSTALL_COMMAND = "scripts/install-system-packages"


@dataclass(frozen=True)
class SystemPackage:
    package: str  # the Debian package that provides `needs`
    kind: str  # "library": loadable by its soname; "executable": a path (glob); "file": a readable path;
    # "command": on PATH
    needs: str
    why: str

    def present(self) -> bool:
        return PROBES[self.kind](self.needs)


def _loads(soname: str) -> bool:
    """The dynamic loader finds and loads it, as pyodbc's import will."""
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def _executable(pattern: str) -> bool:
    return any(os.access(path, os.X_OK) for path in glob.glob(pattern))


PROBES: dict[str, Callable[[str], bool]] = {
    "library": _loads,
    "executable": _executable,
    "file": lambda path: os.access(path, os.R_OK),
    "command": lambda name: shutil.which(name) is not None,
}

PACKAGES: tuple[SystemPackage, ...] = (
    SystemPackage(
        "postgresql",
        "executable",
        "/usr/lib/postgresql/*/bin/initdb",
        "the export and warehouse tests start their own server (servers.py)",
    ),
    SystemPackage(
        "unixodbc",
        "library",
        "libodbc.so.2",
        "pyodbc, which dlt's mssql destination imports (export/test_export_mssql.py)",
    ),
    SystemPackage("libkrb5-3", "library", "libkrb5.so.3", "Microsoft's ODBC Driver 18"),
    SystemPackage("libgssapi-krb5-2", "library", "libgssapi_krb5.so.2", "Microsoft's ODBC Driver 18"),
    SystemPackage("chromium", "executable", "/usr/bin/chromium", "the UI test (browser.py)"),
    SystemPackage("chromium-driver", "executable", "/usr/bin/chromedriver", "the UI test (browser.py)"),
    SystemPackage(
        "openjdk-17-jre-headless", "command", "java", "pyspark (warehouse/test_engines.py runs the model on Spark)"
    ),
    SystemPackage(
        "openjdk-17-jdk-headless",
        "command",
        "javac",
        "the check that Spark's Hadoop adapter jar is built from its source (warehouse/test_spark_local_fs.py)",
    ),
    SystemPackage(
        "libpostgresql-jdbc-java",
        "file",
        "/usr/share/java/postgresql.jar",
        "the Hive metastore service keeps its tables in PostgreSQL (scripts/spark-cluster, spark_cluster.py)",
    ),
    SystemPackage(
        "libdisruptor-java",
        "file",
        "/usr/share/java/disruptor.jar",
        "the Hive metastore service: Hive's logging picks log4j2's async loggers (scripts/spark-cluster)",
    ),
)


def missing(packages: tuple[SystemPackage, ...] = PACKAGES) -> list[SystemPackage]:
    return [p for p in packages if not p.present()]


def missing_message(packages: tuple[SystemPackage, ...] = PACKAGES) -> str | None:
    """One line naming every missing package and what was looked for; None when none is."""
    gone = missing(packages)
    if not gone:
        return None
    names = ", ".join(f"{p.package} ({p.needs} not found)" for p in gone)
    return (
        f"financial_etl tests: missing system package(s): {names}; "
        f"install with: {INSTALL_COMMAND} (runs apt-get as root, or through sudo)"
    )


if __name__ == "__main__":
    # For scripts/install-system-packages: the missing packages, one a line (--all: every one).
    chosen = PACKAGES if sys.argv[1:] == ["--all"] else missing()
    for package in chosen:
        print(package.package)
