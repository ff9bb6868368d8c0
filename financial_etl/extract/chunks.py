"""The extract in bounded memory: tickers fetched and checked a group at a time.

A universe's whole history (5,000 tickers x 6,500 sessions, 32.5M rows) does not fit in
memory as one batch. So the extract fetches a group of tickers (about CHUNK_ROWS rows),
passes it through the raw contract, writes its three tables to Parquet files in a folder
of the run under the data folder, and drops it: only counts stay in memory. When every
group is in, the missing-ticker rule runs over all of them, before anything reaches dlt;
then dlt reads the files back one group at a time. No warehouse lock is held while the
source answers, and a daily run (a session of every ticker) is one group.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from financial_etl.calendar import trading_sessions
from financial_etl.extract.contract import QUARANTINE_SCHEMA, RAW_SCHEMA
from financial_etl.extract.resource import ACTIONS_SCHEMA, PriceBatch, RawTables, answered, missing_answers

# Rows fetched and checked at a time: a group as pandas and Arrow copies takes about
# 100 MB, and a group's fixed cost (a source call, the contract) stays under 1% of its time.
CHUNK_ROWS = 250_000
SCHEMAS = (RAW_SCHEMA, ACTIONS_SCHEMA, QUARANTINE_SCHEMA)
NAMES = ("valid", "actions", "quarantine")
FOLDER_PREFIX = ".extract-"


def ticker_groups(
    tickers: Sequence[str], start: dt.date, end: dt.date, chunk_rows: int | None = None
) -> list[list[str]]:
    """`tickers` in groups of about `chunk_rows` (CHUNK_ROWS) rows over the range's
    sessions, at least one ticker each."""
    per_group = max(1, (chunk_rows or CHUNK_ROWS) // max(1, len(trading_sessions(start, end))))
    return [list(tickers[i : i + per_group]) for i in range(0, len(tickers), per_group)]


@dataclass
class StagedBatch:
    """A batch held as Parquet files, one set per group, and what the contract counted."""

    folder: Path
    source: str
    synthetic: bool = False
    groups: int = 0
    rows: int = 0  # loaded rows (valid), the reloaded histories included
    action_rows: int = 0
    quarantined: int = 0
    untraded: int = 0
    warned: dict[str, int] = field(default_factory=dict)
    reason_counts: dict[str, int] = field(default_factory=dict)
    not_kept: dict[tuple[str | None, str], int] = field(default_factory=dict)  # bad rows counted, not stored
    found: set[str] = field(default_factory=set)
    ticker_errors: dict[str, str] = field(default_factory=dict)
    ticker_causes: dict = field(default_factory=dict)
    missing_tickers: list[str] = field(default_factory=list)

    def add(self, batch: PriceBatch) -> None:
        """Write one group's tables (the contract has run) and keep only its counts."""
        contract = batch.contract
        assert contract is not None
        tables = (contract.valid, batch.actions_table(), contract.quarantine)
        for name, table in zip(NAMES, tables, strict=True):
            if table.num_rows:
                pq.write_table(table, self.folder / f"{self.groups:05d}.{name}.parquet")
        self.groups += 1
        self.synthetic = self.synthetic or batch.synthetic
        self.rows += contract.valid.num_rows
        self.action_rows += tables[1].num_rows
        self.quarantined += contract.quarantined
        self.untraded += contract.untraded
        for rule, n in contract.warned.items():
            self.warned[rule] = self.warned.get(rule, 0) + n
        for rule, n in contract.reasons().items():
            self.reason_counts[rule] = self.reason_counts.get(rule, 0) + n
        for key, n in contract.not_kept.items():
            self.not_kept[key] = self.not_kept.get(key, 0) + n
        self.found |= answered(contract)
        self.ticker_errors.update(batch.ticker_errors)
        self.ticker_causes.update(batch.ticker_causes)

    @property
    def not_kept_rows(self) -> int:
        return sum(self.not_kept.values())

    def reasons(self) -> dict[str, int]:
        return dict(sorted(self.reason_counts.items()))

    def counts(self) -> tuple[int, int, int]:
        return self.rows, self.action_rows, self.quarantined

    def parts(self) -> Iterator[RawTables]:
        """Each group's tables, read back one group at a time."""
        for group in range(self.groups):
            yield tuple(  # type: ignore[misc]
                pq.read_table(path, schema=schema)
                if (path := self.folder / f"{group:05d}.{name}.parquet").exists()
                else schema.empty_table()
                for name, schema in zip(NAMES, SCHEMAS, strict=True)
            )


def stage_batch(
    fetch_group: Callable[[list[str]], PriceBatch],
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    folder: Path,
    source: str,
    allow_partial: bool,
    chunk_rows: int | None = None,
) -> StagedBatch:
    """Fetch and check `tickers` group by group into `folder`; then the missing-ticker rule
    over all of them (see resource.missing_answers), raising before anything is loaded."""
    staged = StagedBatch(folder=folder, source=source)
    for group in ticker_groups(tickers, start, end, chunk_rows):
        staged.add(fetch_group(group))
    staged.missing_tickers = missing_answers(
        staged.found, tickers, start, end, allow_partial, source, staged.ticker_errors, staged.ticker_causes
    )
    return staged


def batch_folder(data_dir: Path) -> Path:
    """A new folder for this process's staged batch. Folders left by a process that has
    died (a killed run) are removed first; a live one's are another run's and stay."""
    data_dir.mkdir(parents=True, exist_ok=True)
    for old in data_dir.glob(f"{FOLDER_PREFIX}*"):
        pid = old.name[len(FOLDER_PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = data_dir / f"{FOLDER_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
    folder.mkdir()
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
