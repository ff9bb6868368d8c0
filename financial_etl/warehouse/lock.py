"""One process at a time on the DuckDB warehouse.

DuckDB lets one process write a file (and no other process even read it meanwhile).
Every step that opens the warehouse holds this advisory lock (filelock's flock on
`<warehouse>.lock`), so a backfill, the daily schedule and a hand-run `financial-etl`
queue up instead of failing on DuckDB's own lock. The holder's pid is written into the
lock file, so a waiting run can say whom it waits for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from financial_etl.errors import WarehouseBusyError


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
    finally:
        lock.release()


@contextmanager
def pipeline_folder_lock(pipelines_dir: Path, pipeline_name: str, timeout_s: float = 300.0) -> Iterator[None]:
    """Hold while creating a dlt pipeline object.

    Until a pipeline's state file exists, dlt wipes and recreates its working folder on
    every `dlt.pipeline(...)`; two processes doing that at once (a backfill and the daily
    run on a fresh data folder) delete each other's files.
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
