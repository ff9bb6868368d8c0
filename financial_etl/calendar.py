"""Time: the NYSE (XNYS) trading calendar, and the year partitions all assets share.

A partition is a calendar year in America/New_York. Dagster records every partition of a
run with its own events (about 30 ms each on the embedded SQLite storage), so daily
partitions made a 25-year history cost minutes of bookkeeping: years keep that to a few
dozen events (docs/operations.md, "Partitions: why years"). The current year's partition
exists (`end_offset=1`), so the evening run can load the session that just closed.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import pandas as pd
from dagster import MetadataValue, PartitionKeyRange, TimeWindowPartitionsDefinition

FIRST_DAY = dt.date(1990, 1, 2)
LAST_DAY = dt.date(2040, 12, 31)
TIMEZONE = "America/New_York"
PARTITION_FORMAT = "%Y"


@lru_cache(maxsize=1)
def xnys():
    import exchange_calendars as xcals

    return xcals.get_calendar("XNYS", start=FIRST_DAY.isoformat(), end=LAST_DAY.isoformat())


def trading_sessions(start: dt.date, end: dt.date) -> list[dt.date]:
    """XNYS sessions from start to end, both included."""
    if end < start:
        return []
    sessions = xnys().sessions_in_range(pd.Timestamp(start), pd.Timestamp(end))
    return [ts.date() for ts in sessions]


def is_session(day: dt.date) -> bool:
    return xnys().is_session(pd.Timestamp(day))


def closure_reason(day: dt.date) -> str | None:
    """None on a session; else why the exchange is closed (weekend, the holiday's name)."""
    if is_session(day):
        return None
    if day.weekday() >= 5:
        return f"{day:%A}"
    ts = pd.Timestamp(day)
    names = xnys().regular_holidays.holidays(ts, ts, return_name=True)
    if len(names):
        return str(names.iloc[0])
    return "an unscheduled exchange closure"


def year_partitions(start: dt.date) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        cron_schedule="0 0 1 1 *",
        start=str(start.year),
        fmt=PARTITION_FORMAT,
        timezone=TIMEZONE,
        end_offset=1,
    )


def partition_key(day: dt.date) -> str:
    return day.strftime(PARTITION_FORMAT)


def key_range_for_dates(start: dt.date, end: dt.date) -> PartitionKeyRange:
    """The partition keys whose windows cover [start, end]."""
    if end < start:
        raise ValueError(f"{start} is after {end}")
    return PartitionKeyRange(partition_key(start), partition_key(end))


def keys_in_window(partitions_def: TimeWindowPartitionsDefinition, start: dt.date, end: dt.date) -> list[str]:
    return partitions_def.get_partition_keys_in_range(key_range_for_dates(start, end))


def partition_counts_sql(column: str, partitions_def, keys, placeholder: str = "?") -> tuple[str, list]:
    """`count(...)` columns, one per partition key, for a query returning every partition's
    row count at once; plain CASE WHEN works on DuckDB, PostgreSQL and SQL Server alike."""
    parts, params = [], []
    for key in keys:
        window = partitions_def.time_window_for_partition_key(key)
        parts.append(f"count(CASE WHEN {column} BETWEEN {placeholder} AND {placeholder} THEN 1 END)")
        params += [window.start.date(), window.end.date() - dt.timedelta(days=1)]
    return ", ".join(parts), params


def add_partition_row_counts(context, asset_key, keys, counts) -> None:
    """Each partition's own `dagster/partition_row_count` (the rows of its year in the
    table), on that partition's event only: MaterializeResult metadata would copy one
    figure into every partition of a range run."""
    for key, count in zip(keys, counts, strict=True):
        context.add_asset_metadata(
            {"dagster/partition_row_count": MetadataValue.int(int(count))}, asset_key=asset_key, partition_key=key
        )
