"""The one daily partitions definition shared by the extract, transform and export assets.

Partitions are weekdays in America/New_York. A partition's window runs from its day to
the next weekday, so a Friday partition also covers the weekend. Exchange holidays are
ordinary partitions that load 0 rows. `end_offset=1` makes today's partition exist, so
the evening run can load the session that just closed.
"""

from __future__ import annotations

import datetime as dt

from dagster import (
    AssetExecutionContext,
    PartitionKeyRange,
    TimeWindowPartitionsDefinition,
)

TIMEZONE = "America/New_York"
FMT = "%Y-%m-%d"


def trading_day_partitions(start: dt.date) -> TimeWindowPartitionsDefinition:
    return TimeWindowPartitionsDefinition(
        cron_schedule="0 0 * * 1-5",
        start=start.strftime(FMT),
        fmt=FMT,
        timezone=TIMEZONE,
        end_offset=1,
    )


def run_dates(context: AssetExecutionContext) -> tuple[dt.date, dt.date]:
    """The calendar dates, both included, that this run's partition range covers."""
    window = context.partition_time_window
    return window.start.date(), (window.end - dt.timedelta(days=1)).date()


def key_range_for_dates(
    partitions_def: TimeWindowPartitionsDefinition, start: dt.date, end: dt.date
) -> PartitionKeyRange:
    """The partition keys whose windows cover [start, end]; weekends snap to their weekday."""
    first = start
    while first.weekday() >= 5:
        first += dt.timedelta(days=1)
    last = end
    while last.weekday() >= 5:
        last -= dt.timedelta(days=1)
    if first > last:
        raise ValueError(f"{start} to {end} holds no weekday")
    return PartitionKeyRange(first.strftime(FMT), last.strftime(FMT))
