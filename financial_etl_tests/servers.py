"""A real PostgreSQL server for the export tests, on a loopback port in a temp directory.

`scripts/install-system-packages` installs Debian's `postgresql` package (conftest.py
stops a run without it); here the server is initialised and started by the tests
themselves (as the `postgres` user when running as root, since initdb refuses root).
Should initdb still be missing here, the tests skip outside CI and fail in CI (CI=true).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from financial_etl_tests.helpers import unavailable

PASSWORD = "pg-Test-Secret-7731"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


@dataclass
class PostgresServer:
    data_dir: Path
    port: int
    log: Path

    user: str = "postgres"
    password: str = PASSWORD
    database: str = "financial_mart"

    def _as_postgres(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *args]
        return list(args)

    def url(self, password: str | None = None, database: str | None = None) -> str:
        return f"postgresql://{self.user}:{password or self.password}@127.0.0.1:{self.port}/{database or self.database}"

    def start(self) -> None:
        subprocess.run(
            self._as_postgres(
                _pg_bin("pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ),
            check=True,
            capture_output=True,
        )

    def kill(self) -> None:
        """Stop at once, as a crash would: `immediate` mode aborts every connection."""
        subprocess.run(
            self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "immediate", "stop"),
            check=True,
            capture_output=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "stop"), capture_output=True
        )

    def connect(self, database: str | None = None):
        import psycopg2

        return psycopg2.connect(
            host="127.0.0.1", port=self.port, user=self.user, password=self.password, dbname=database or self.database
        )

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.connect() as con, con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()

    def reset_database(self, database: str | None = None) -> None:
        """`database` (the mart's by default) dropped if there, and created empty."""
        name = database or self.database
        con = self.connect("postgres")
        con.autocommit = True
        with con.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            cur.execute(f"CREATE DATABASE {name}")
        con.close()


def start_postgres() -> PostgresServer:
    initdb = _pg_bin("initdb")
    if not initdb or not _pg_bin("pg_ctl"):
        unavailable("PostgreSQL is not installed (scripts/install-system-packages)")
    root = Path(tempfile.mkdtemp(prefix="fetl_pg_"))
    data_dir, pwfile = root / "data", root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(pwfile, "postgres", "postgres")
    server = PostgresServer(data_dir=data_dir, port=free_port(), log=root / "server.log")
    subprocess.run(
        server._as_postgres(
            initdb, "-D", str(data_dir), "-U", "postgres", "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync"
        ),
        check=True,
        capture_output=True,
    )
    server.start()
    deadline = time.monotonic() + 30
    while True:
        try:
            server.reset_database()
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    return server
