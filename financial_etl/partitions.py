"""The one partitions definition shared by the extract, transform and export assets.

A partition is a calendar year in America/New_York. Dagster records every partition of a
run with its own events (about 30 ms each on the embedded SQLite storage), so daily
partitions made a 25-year history cost minutes of bookkeeping: years keep that to a few
dozen events (README, "Partitions"). The current year's partition exists
(`end_offset=1`), so the evening run can load the session that just closed.

A run's dates are its partitions' window, narrowed by the run tags `financial_etl/start`
and `financial_etl/end` (the CLI's `--start/--end`, the schedule's catch-up range) and
clipped to FINANCIAL_ETL_START_DATE and the configured end (else today): re-materializing
a year from the UI re-runs that year, a daily run loads just its sessions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from dagster import MetadataValue, PartitionKeyRange, TimeWindowPartitionsDefinition

from financial_etl.errors import ConfigError
from financial_etl.settings import Settings

TIMEZONE = "America/New_York"
FMT = "%Y"
START_TAG = "financial_etl/start"  # YYYY-MM-DD: the run's first date, inside its partitions
END_TAG = "financial_etl/end"  # YYYY-MM-DD: the run's last date
# Dagster's own run tags for a partition range run (public names, values are stable).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"


def year_partitions(start: dt.date) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        cron_schedule="0 0 1 1 *",
        start=str(start.year),
        fmt=FMT,
        timezone=TIMEZONE,
        end_offset=1,
    )


def partition_key(day: dt.date) -> str:
    return day.strftime(FMT)


def key_range_for_dates(start: dt.date, end: dt.date) -> PartitionKeyRange:
    """The partition keys whose windows cover [start, end]."""
    if end < start:
        raise ValueError(f"{start} is after {end}")
    return PartitionKeyRange(partition_key(start), partition_key(end))


def range_tags(start: dt.date, end: dt.date) -> dict[str, str]:
    """Tags that make a run cover [start, end] exactly, over the partitions holding it."""
    keys = key_range_for_dates(start, end)
    return {
        RANGE_START_TAG: keys.start,
        RANGE_END_TAG: keys.end,
        START_TAG: start.isoformat(),
        END_TAG: end.isoformat(),
    }


def run_window(
    tags: Mapping[str, str], partitions_def: TimeWindowPartitionsDefinition, settings: Settings
) -> tuple[dt.date, dt.date] | None:
    """The calendar dates, both included, a run covers; None for a run without partitions."""
    first = tags.get(RANGE_START_TAG) or tags.get(PARTITION_TAG)
    last = tags.get(RANGE_END_TAG) or tags.get(PARTITION_TAG)
    if not (first and last):
        return None
    start = partitions_def.time_window_for_partition_key(first).start.date()
    end = partitions_def.time_window_for_partition_key(last).end.date() - dt.timedelta(days=1)
    start = max(start, settings.start_date, _tag_date(tags, START_TAG) or start)
    end = min(end, settings.resolved_end(), _tag_date(tags, END_TAG) or end)
    return start, end


def run_dates(context, settings: Settings) -> tuple[dt.date, dt.date]:
    """The dates this asset step's run covers (see run_window)."""
    window = run_window(context.run.tags, context.assets_def.partitions_def, settings)
    if window is None:  # an asset step always runs for partitions; guard the assumption
        raise RuntimeError(f"run {context.run_id} has no partition range")
    if window[0] > window[1]:
        raise ConfigError(
            f"partitions {', '.join(context.partition_keys)} hold no date from FINANCIAL_ETL_START_DATE="
            f"{settings.start_date} to {settings.resolved_end()}"
        )
    return window


def keys_in_window(partitions_def: TimeWindowPartitionsDefinition, start: dt.date, end: dt.date) -> list[str]:
    return partitions_def.get_partition_keys_in_range(key_range_for_dates(start, end))


def _tag_date(tags: Mapping[str, str], name: str) -> dt.date | None:
    if name not in tags:
        return None
    try:
        return dt.date.fromisoformat(tags[name])
    except ValueError:
        raise ConfigError(f"run tag {name}={tags[name]!r} is not a date (YYYY-MM-DD)") from None


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
