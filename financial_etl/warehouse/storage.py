"""Clear errors when the machine cannot store what the pipeline writes.

A full disk or a read-only folder surfaces deep inside DuckDB, dlt or SQLMesh, wrapped
two or three times. `check_writable` finds it before a run starts; `storage_errors`
turns one found mid-run into a StorageError that names the path (exit code 5). Either
way DuckDB rolls back the open transaction and dlt keeps its load package for the next
run, so nothing already loaded is lost.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from financial_etl.errors import FinancialEtlError, StorageError

# What each driver gives: the OS an errno, SQLite (Dagster's run storage) a result code,
# PostgreSQL a SQLSTATE (53100 disk_full).
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
SQLITE_CODES = {sqlite3.SQLITE_FULL, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM}
PG_DISK_FULL = "53100"
# DuckDB's IOException carries no errno, only the OS's reason in its text
# ('Could not write file "<path>": No space left on device'): the one place matched by text.
STORAGE_TEXT = re.compile(
    r"No space left on device|Disk quota exceeded|Read-only file system|Permission denied|File too large",
    re.IGNORECASE,
)
QUOTED_PATH = re.compile(r"""["'](/[^"']+)["']""")
ADVICE = "free space there (or point the setting at another disk) and re-run; what was loaded before is intact"


def causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception, what it wraps, and the errors dagster-sqlmesh collects in `.errors`."""
    pending, seen = [exc], set()
    while pending and len(seen) < 50:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend([current.__cause__, current.__context__])
        pending.extend(e for e in getattr(current, "errors", None) or [] if isinstance(e, BaseException))
        if isinstance(inner := getattr(current, "exception", None), BaseException):
            pending.append(inner)


def storage_problem(exc: BaseException, where: Path | None = None) -> str | None:
    """'<path>: <what went wrong>' when the failure is the disk or its permissions;
    `where` names the folder when the library did not say which file (pyarrow doesn't)."""
    unnamed = f"a file under {where}" if where else "(path not reported)"
    for cause in causes(exc):
        if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS:
            return f"{cause.filename or unnamed}: {cause.strerror or os.strerror(cause.errno)}"
        if isinstance(cause, sqlite3.Error) and (cause.sqlite_errorcode or 0) & 0xFF in SQLITE_CODES:
            return f"{unnamed}: {cause}"
        if getattr(cause, "pgcode", None) == PG_DISK_FULL:  # psycopg2's SQLSTATE
            return f"the PostgreSQL server's disk: {str(cause).strip()}"
        text = str(cause)
        if isinstance(cause, duckdb.Error) and (match := STORAGE_TEXT.search(text)):
            # The path quoted just before the reason ("Could not write file "/x": ..."),
            # not one from a traceback elsewhere in the text.
            before = text[max(0, match.start() - 400) : match.start()].splitlines()[-1:] or [""]
            paths = QUOTED_PATH.findall(before[0])
            return f"{paths[-1] if paths else unnamed}: {match.group(0)}"
    return None


def warehouse_file(warehouse) -> Path | None:
    """The DuckDB file to checkpoint around a write; a server engine keeps its own log."""
    return warehouse.duckdb_path if warehouse.engine == "duckdb" else None


def checkpoint(database: Path) -> None:
    """Fold DuckDB's write-ahead log into the database file, leaving the log empty."""
    from financial_etl.warehouse.project import duckdb_settings

    if database.exists():
        with duckdb.connect(str(database), config=duckdb_settings(database)) as con:
            con.execute("CHECKPOINT")


def wal_path(database: Path) -> Path:
    return database.with_name(database.name + ".wal")


def storage_error(what: str, exc: BaseException, where: Path | None = None) -> StorageError | None:
    """The StorageError for `exc` when its cause is the disk, else None."""
    problem = storage_problem(exc, where)
    return StorageError(f"{what} could not write {problem}; {ADVICE}") if problem else None


@contextmanager
def storage_errors(
    what: str, database: Path | None = None, on_failure: Callable[[], None] | None = None, where: Path | None = None
) -> Iterator[None]:
    """Re-raise a storage failure inside the block as a StorageError naming the path.

    With `database`, the block starts from a checkpoint, and a storage failure discards
    the write-ahead log: DuckDB can leave a half-written transaction in it when a write
    fails (measured with DuckDB 1.5: a merge's deletes replayed without its inserts),
    and the checkpoint is the state before the step. `on_failure` then drops whatever
    else the step left half done (dlt's pending load package). `where` names the folder
    written when there is no database."""
    if database is not None:
        with storage_errors(f"{what} (checkpoint before writing)"):
            checkpoint(database)
    try:
        yield
    except Exception as exc:
        if isinstance(exc, StorageError):
            error = exc
        elif (
            isinstance(exc, FinancialEtlError)
            or (error := storage_error(what, exc, database.parent if database else where)) is None
        ):
            raise
        if database is not None:
            wal_path(database).unlink(missing_ok=True)
        if on_failure is not None:
            on_failure()
        if error is exc:
            raise
        raise error from exc


def check_writable(directory: Path, setting: str) -> None:
    """Fail before the run when `directory` cannot hold the pipeline's files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-test-"):
            pass
    except OSError as exc:
        raise StorageError(
            f"{setting}: the folder {directory} is not writable ({exc.strerror or exc}); "
            "make it writable or point the setting at another folder"
        ) from None
