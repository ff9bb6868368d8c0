"""What a run covers: its dates, its tickers, and the run tags that say so.

A run's dates are its partitions' window, narrowed by the run tags `financial_etl/start`
and `financial_etl/end` (the CLI's `--start/--end`, the schedule's catch-up range) and
clipped to FINANCIAL_ETL_START_DATE and the configured end (else today): re-materializing
a year from the UI re-runs that year, a daily run loads just its sessions. Sensors add
tags that narrow the tickers or restate a ticker's history; the UI shows them as the
run's reason. Every run tag the project reads or writes is named here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from dagster import TimeWindowPartitionsDefinition

from financial_etl.calendar import key_range_for_dates
from financial_etl.errors import ConfigError
from financial_etl.settings import Settings, parse_tickers

START_TAG = "financial_etl/start"  # YYYY-MM-DD: the run's first date, inside its partitions
END_TAG = "financial_etl/end"  # YYYY-MM-DD: the run's last date
TICKERS_TAG = "financial_etl/tickers"  # comma-separated: load only these tickers
MODE_TAG = "financial_etl/mode"  # "restate": replace these tickers' whole history
RESTATE = "restate"
REASON_TAG = "financial_etl/reason"  # why the run was requested, for the operator
EXPORT_TAG = "financial_etl/export"  # "full_refresh": replace the export target with the whole mart
FULL_REFRESH = "full_refresh"
# duckdb, postgres or spark: dagster.yaml queues one run at a time on a single-writer engine.
WAREHOUSE_TAG = "financial_etl/warehouse"
CHECK_START_TAG = "financial_etl/check_start"  # `financial-etl check --start/--end`
CHECK_END_TAG = "financial_etl/check_end"
# Dagster's own run tags (public names, stable values).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
PARTITION_TAG = "dagster/partition"
SCHEDULE_TAG = "dagster/schedule_name"


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


def check_range(tags: Mapping[str, str], partitions_def, settings: Settings) -> tuple[dt.date, dt.date]:
    """The dates a check looks at: `financial-etl check --start/--end`, else the run's
    dates, else (a check run alone) the whole configured range."""
    if CHECK_START_TAG in tags and CHECK_END_TAG in tags:
        return dt.date.fromisoformat(tags[CHECK_START_TAG]), dt.date.fromisoformat(tags[CHECK_END_TAG])
    return run_window(tags, partitions_def, settings) or (settings.start_date, settings.resolved_end())


def _tag_date(tags: Mapping[str, str], name: str) -> dt.date | None:
    if name not in tags:
        return None
    try:
        return dt.date.fromisoformat(tags[name])
    except ValueError:
        raise ConfigError(f"run tag {name}={tags[name]!r} is not a date (YYYY-MM-DD)") from None


def run_tickers(tags: Mapping[str, str], settings: Settings) -> tuple[str, ...]:
    if TICKERS_TAG in tags:
        return parse_tickers(f"run tag {TICKERS_TAG}", tags[TICKERS_TAG])
    return settings.current_tickers()


def restated_tickers(tags: Mapping[str, str], settings: Settings, start: dt.date) -> tuple[str, ...] | None:
    """The tickers whose history this run replaces, or None for an ordinary merge run."""
    if tags.get(MODE_TAG) != RESTATE:
        return None
    if TICKERS_TAG not in tags:
        raise ConfigError(f"run tag {MODE_TAG}={RESTATE} needs {TICKERS_TAG} naming the tickers to restate")
    if start > settings.start_date:
        raise ConfigError(
            f"a restatement replaces a ticker's whole history, so its range must start at "
            f"FINANCIAL_ETL_START_DATE={settings.start_date}, not {start}"
        )
    return run_tickers(tags, settings)
