"""One process at a time on the DuckDB warehouse.

DuckDB lets one process write a file (and no other process even read it meanwhile).
Every step that opens the warehouse holds this advisory lock, so a backfill, the daily
schedule and a hand-run `financial-etl` queue up instead of failing on DuckDB's own lock.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from financial_etl.errors import FinancialEtlError


class WarehouseBusyError(FinancialEtlError):
    """Another run held the warehouse for longer than the wait allows."""


def lock_path(db_path: Path) -> Path:
    return db_path.with_name(db_path.name + ".lock")


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
    with path.open("a+") as handle:
        started = time.monotonic()
        waited = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited and log:
                    holder = path.read_text().strip() or "another process"
                    log(f"waiting for the warehouse {db_path}: in use by {holder}")
                waited = True
                if time.monotonic() - started > timeout_s:
                    raise WarehouseBusyError(
                        f"the warehouse {db_path} stayed in use by another run for more than {timeout_s:.0f} s "
                        f"(lock file {path}); try again when it has finished"
                    ) from None
                time.sleep(poll_s)
        try:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
            if waited and log:
                log(f"got the warehouse after {time.monotonic() - started:.1f} s")
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            fcntl.flock(handle, fcntl.LOCK_UN)
