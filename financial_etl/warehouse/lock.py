"""One process at a time on the DuckDB warehouse.

DuckDB lets one process write a file (and no other process even read it meanwhile).
Every step that opens the warehouse holds this advisory lock (filelock's flock on
`<warehouse>.lock`), so a backfill, the daily schedule and a hand-run `financial-etl`
queue up instead of failing on DuckDB's own lock. The holder's pid is written into the
lock file, so a waiting run can say whom it waits for. A program outside the pipeline
(a DuckDB shell, a notebook) takes no advisory lock: DuckDB's refusal is then turned into
a WarehouseUnavailableError naming the file and the holder.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
from filelock import FileLock, Timeout

from financial_etl.errors import WarehouseBusyError, WarehouseUnavailableError
from financial_etl.warehouse.storage import causes

# DuckDB raises a plain IOException for a file another process holds, with no code: only its
# text says so (and names the holder), so DuckDB's errors are matched by text here.
HELD_TEXT = re.compile(r'Could not set lock on file "([^"]+)": Conflicting lock is held in (.+?) \(PID (\d+)\)')


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


def _write_holder(fd: int) -> None:
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)


def _holder(path: Path) -> str:
    try:
        return path.read_text().strip() or "another process"
    except OSError:
        return "another process"


def held_elsewhere(exc: BaseException) -> WarehouseUnavailableError | None:
    """The clear error when DuckDB refused a file another process holds, else None."""
    for cause in causes(exc):
        if isinstance(cause, duckdb.Error) and (match := HELD_TEXT.search(str(cause))):
            path, program, pid = match.groups()
            return WarehouseUnavailableError(
                f"the DuckDB file {path} is held by another process ({program}, pid {pid}), such as a DuckDB "
                "shell or a notebook with it open; close it there and re-run"
            )
    return None


def check_not_held(db_path: Path) -> None:
    """Fail before a run when a program outside the pipeline holds the warehouse file. A
    run of the pipeline's own (it holds the advisory lock) is waited for instead."""
    if not db_path.exists():
        return
    # No lock file: no run of the pipeline has ever held it, and none is created here.
    lock = FileLock(lock_path(db_path), fallback_to_soft=False, preserve_lock_file=True)
    if lock_path(db_path).exists():
        try:
            lock.acquire(blocking=False)
        except Timeout:
            return
    try:
        duckdb.connect(str(db_path)).close()  # read-write: a reader elsewhere would block the run too
    except duckdb.IOException as exc:
        if (error := held_elsewhere(exc)) is None:
            raise
        raise error from None
    finally:
        lock.release()


@contextmanager
def warehouse_lock(
    db_path: Path,
    *,
    timeout_s: float = 3600.0,
    log: Callable[[str], None] | None = None,
    poll_s: float = 0.25,
) -> Iterator[None]:
    path = lock_path(db_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # No soft-lock fallback: a folder without flock must fail, not lock half-heartedly.
    lock = FileLock(path, fallback_to_soft=False, preserve_lock_file=True, on_acquired=_write_holder)
    started = time.monotonic()
    try:
        lock.acquire(blocking=False)
        waited = False
    except Timeout:
        if log:
            log(f"waiting for the warehouse {db_path}: in use by {_holder(path)}")
        try:
            lock.acquire(timeout=timeout_s, poll_interval=poll_s)
        except Timeout:
            raise WarehouseBusyError(
                f"the warehouse {db_path} stayed in use by another run for more than {timeout_s:.0f} s "
                f"(lock file {path}); try again when it has finished"
            ) from None
        waited = True
    try:
        if waited and log:
            log(f"got the warehouse after {time.monotonic() - started:.1f} s")
        yield
    except Exception as exc:
        if (error := held_elsewhere(exc)) is None:
            raise
        raise error from exc
    finally:
        lock.release()


@contextmanager
def pipeline_folder_lock(pipelines_dir: Path, pipeline_name: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold while creating a dlt pipeline object.

    Until a pipeline's state file exists, dlt wipes and recreates its working folder on
    every `dlt.pipeline(...)`; two processes doing that at once (a backfill and the daily
    run on a fresh data folder) delete each other's files. A creation beside another
    process's load does the same, so the steps also create their pipeline under the
    stage lock their load holds.
    """
    pipelines_dir.mkdir(parents=True, exist_ok=True)
    path = pipelines_dir / f".{pipeline_name}.lock"
    try:
        lock = FileLock(path, fallback_to_soft=False).acquire(timeout=timeout_s)
    except Timeout:
        raise WarehouseBusyError(
            f"the dlt pipeline folder {pipelines_dir / pipeline_name} stayed locked for more than "
            f"{timeout_s:.0f} s (lock file {path})"
        ) from None
    with lock:
        yield
