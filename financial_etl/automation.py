"""The daily schedule, and the sensors that launch backfills or record failures.

Backfills are requested over an asset-graph subset (the three assets, a partition
range), so they appear under Backfills and run as one run each (single-run policy). Each
sensor's cursor holds what it has already handled, so a second evaluation never
requests the same backfill again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import pandas as pd
from dagster import (
    AssetKey,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TimeWindowPartitionsDefinition,
    run_failure_sensor,
    schedule,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset

from financial_etl.calendar import closure_reason
from financial_etl.errors import ConfigError
from financial_etl.partitions import END_TAG, START_TAG, TIMEZONE, key_range_for_dates, range_tags, run_window
from financial_etl.resources import Project
from financial_etl.run_tags import MODE_TAG, REASON_TAG, RESTATE, TICKERS_TAG
from financial_etl.sources import fetch_for

SCHEDULE_NAME = "daily_after_close"
SCHEDULE_TAG = "dagster/schedule_name"  # set by Dagster on every run a schedule launches
SCHEDULE_CRON = "30 18 * * 1-5"  # weekdays, after the 16:00 close and Yahoo's end-of-day update
RECENT_SESSIONS = 20  # the overlap compared by the restated-history sensor


def last_completed_day(project: Project) -> dt.date:
    """The newest day that has ended in New York, capped by FINANCIAL_ETL_END_DATE."""
    last_day = dt.datetime.now(ZoneInfo(TIMEZONE)).date() - dt.timedelta(days=1)
    if project.settings.end_date:
        last_day = min(last_day, project.settings.end_date)
    return last_day


def backfill_request(
    partitions_def: TimeWindowPartitionsDefinition,
    asset_keys: Sequence[AssetKey],
    start: dt.date,
    end: dt.date,
    tags: dict[str, str],
) -> RunRequest:
    """A backfill of the year partitions holding [start, end], its runs narrowed to those dates."""
    keys = key_range_for_dates(start, end)
    subset = partitions_def.empty_subset().with_partition_key_range(partitions_def, keys)
    return RunRequest.for_asset_graph_subset(
        AssetGraphSubset(partitions_subsets_by_asset_key={key: subset for key in asset_keys}),
        tags={**tags, START_TAG: start.isoformat(), END_TAG: end.isoformat()},
    )


def catch_up_start(instance, job_name: str, day: dt.date) -> dt.date:
    """The first date the evening run for `day` loads: the day after the last date a
    successful scheduled run covered, so a failed night is loaded again the next evening.
    `day` itself when no scheduled run has succeeded yet (history is loaded by a backfill)."""
    runs = instance.get_runs(
        filters=RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.SUCCESS], tags={SCHEDULE_TAG: SCHEDULE_NAME}),
        limit=1,
    )
    if not runs or END_TAG not in runs[0].tags:
        return day
    covered = dt.date.fromisoformat(runs[0].tags[END_TAG])
    return min(day, covered + dt.timedelta(days=1))


def build_daily_schedule(project: Project, job, partitions_def: TimeWindowPartitionsDefinition):
    @schedule(
        name=SCHEDULE_NAME,
        job=job,
        cron_schedule=SCHEDULE_CRON,
        execution_timezone=TIMEZONE,
        default_status=DefaultScheduleStatus.RUNNING,
        description=(
            "After the NYSE close, loads the day's session through the whole graph, checks included, "
            "together with any earlier session since the last successful evening run (a failed night is repaired)."
        ),
    )
    def daily_after_close(context: ScheduleEvaluationContext):
        day = context.scheduled_execution_time.astimezone(ZoneInfo(TIMEZONE)).date()
        if (reason := closure_reason(day)) is not None:
            return SkipReason(f"{day.isoformat()}: the NYSE is closed ({reason}); nothing to load")
        if day < project.settings.start_date:
            return SkipReason(f"{day.isoformat()} is before FINANCIAL_ETL_START_DATE={project.settings.start_date}")
        start = max(catch_up_start(context.instance, job.name, day), project.settings.start_date)
        reason = f"daily schedule for {day}" + (f", catching up from {start}" if start < day else "")
        tags = {REASON_TAG: reason, START_TAG: start.isoformat(), END_TAG: day.isoformat()}
        keys = key_range_for_dates(start, day)
        if keys.start == keys.end:
            return RunRequest(run_key=day.isoformat(), partition_key=keys.start, tags=tags)
        return RunRequest(run_key=day.isoformat(), tags={**tags, **range_tags(start, day)})

    return daily_after_close


def build_new_ticker_sensor(project: Project, partitions_def, asset_keys: Sequence[AssetKey]):
    settings = project.settings
    source = str(settings.tickers_file or "FINANCIAL_ETL_TICKERS")

    @sensor(
        name="new_ticker_backfill",
        minimum_interval_seconds=60,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=list(asset_keys),
        description=f"Backfills a ticker's whole history when it is added to {source}; reports removed tickers.",
    )
    def new_ticker_backfill(context: SensorEvaluationContext):
        universe = settings.current_tickers()
        if context.cursor is None:
            context.update_cursor(json.dumps(sorted(universe)))
            return SkipReason(f"recorded the ticker universe ({len(universe)} tickers) from {source}")
        known = set(json.loads(context.cursor))
        added = [t for t in universe if t not in known]
        removed = sorted(known - set(universe))
        if removed:
            context.log.warning(
                f"tickers removed from {source}: {', '.join(removed)}. Their rows are kept in raw, the mart "
                "and the export; delete them by hand if they must go."
            )
        first, last = settings.start_date, last_completed_day(project)
        requests = []
        if added and last >= first:
            for ticker in added:
                requests.append(
                    backfill_request(partitions_def, asset_keys, first, last, {
                        TICKERS_TAG: ticker,
                        MODE_TAG: RESTATE,
                        REASON_TAG: f"new ticker {ticker} added to {source}: loading {first} to {last}",
                    })
                )
        context.update_cursor(json.dumps(sorted(universe)))
        if requests:
            return SensorResult(run_requests=requests)
        if removed:
            return SkipReason(f"removed tickers reported, not deleted: {', '.join(removed)}")
        return SkipReason("no ticker added")

    return new_ticker_backfill


def _window_fingerprint(frame: pd.DataFrame) -> str:
    rows = frame.sort_values("date")[["date", "open_price", "high_price", "low_price", "close_price", "volume"]]
    text = rows.to_csv(index=False, float_format="%.10g")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def history_changes(stored: pd.DataFrame, fresh: pd.DataFrame) -> str | None:
    """How a ticker's recent history at the source differs from raw, or None if it does not."""
    merged = stored.merge(fresh, on="date", suffixes=("_raw", "_source"))
    if merged.empty:
        return None
    diffs = []
    for column in ("open_price", "high_price", "low_price", "close_price", "volume"):
        a, b = merged[f"{column}_raw"].astype(float), merged[f"{column}_source"].astype(float)
        bad = (a - b).abs() > 1e-9 * b.abs().clip(lower=1.0)
        if bad.any():
            first = merged[bad].iloc[0]
            diffs.append(
                f"{int(bad.sum())} of {len(merged)} recent {column} values differ "
                f"(e.g. {first['date']}: {first[f'{column}_raw']:.6g} in raw, {first[f'{column}_source']:.6g} at the source)"
            )
    return "; ".join(diffs) or None


def build_restated_history_sensor(project: Project, partitions_def, asset_keys: Sequence[AssetKey]):
    settings = project.settings

    @sensor(
        name="restated_history_backfill",
        minimum_interval_seconds=3600,
        default_status=DefaultSensorStatus.RUNNING,
        asset_selection=list(asset_keys),
        description=(
            "After a split, dividend re-adjustment or vendor correction, a ticker's recent history at the "
            "source no longer matches raw: backfills that ticker's whole history."
        ),
    )
    def restated_history_backfill(context: SensorEvaluationContext):
        end = last_completed_day(project)
        if end < settings.start_date or not settings.duckdb_path.exists():
            return SkipReason("nothing loaded yet")
        try:
            with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
                stored = con.execute(
                    "SELECT * FROM (SELECT ticker, date, open_price, high_price, low_price, close_price, volume, "
                    "row_number() OVER (PARTITION BY ticker ORDER BY date DESC) AS n FROM raw.eod_prices_raw "
                    "WHERE date <= ?) WHERE n <= ?",
                    [end, RECENT_SESSIONS],
                ).df()
        except duckdb.CatalogException:
            return SkipReason("nothing loaded yet")
        except duckdb.IOException as exc:
            return SkipReason(f"the warehouse is busy ({exc}); trying again at the next evaluation")
        stored["date"] = pd.to_datetime(stored["date"]).dt.date
        tickers = [t for t in settings.current_tickers() if t in set(stored["ticker"])]
        if not tickers:
            return SkipReason("no loaded ticker to compare")
        start = pd.Timestamp(stored["date"].min()).date()
        fresh = fetch_for(settings)(tickers, start, end).frame
        handled = json.loads(context.cursor) if context.cursor else {}
        requests, notes = [], []
        for ticker in tickers:
            mine = stored[stored["ticker"] == ticker].drop(columns=["ticker", "n"])
            theirs = fresh[fresh["ticker"] == ticker].drop(columns=["ticker"])
            change = history_changes(mine, theirs)
            if change is None:
                handled.pop(ticker, None)
                continue
            fingerprint = _window_fingerprint(theirs)
            if handled.get(ticker) == fingerprint:
                notes.append(f"{ticker}: restatement already requested")
                continue
            handled[ticker] = fingerprint
            requests.append(
                backfill_request(partitions_def, asset_keys, settings.start_date, end, {
                    TICKERS_TAG: ticker,
                    MODE_TAG: RESTATE,
                    REASON_TAG: f"restated history for {ticker}: {change}"[:1000],
                })
            )
            context.log.info(f"{ticker}: history changed at the source ({change}); requesting a restatement")
        context.update_cursor(json.dumps(handled, sort_keys=True))
        if requests:
            return SensorResult(run_requests=requests)
        return SkipReason("; ".join(notes) or f"recent history of {len(tickers)} tickers matches the source")

    return restated_history_backfill


def build_failure_sensor(project: Project, partitions_def, alert_log: Path, webhook_url: str | None):
    @run_failure_sensor(
        name="run_failure_alerts",
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Records every failed run (assets, partitions, error) in {alert_log} and the sensor's log.",
    )
    def run_failure_alerts(context: RunFailureSensorContext):
        run = context.dagster_run
        tags = run.tags
        try:
            window = run_window(tags, partitions_def, project.settings)
            partitions = f"{window[0]} to {window[1]}" if window else ""
        except ConfigError:  # the run may have failed for that very tag: say what it held
            partitions = f"{tags.get(START_TAG, '?')} to {tags.get(END_TAG, '?')} (run tags, not dates)"
        steps = []
        for event in context.get_step_failure_events():
            error = event.step_failure_data.error if event.step_failure_data else None
            while error is not None and error.cause is not None:
                error = error.cause
            steps.append({"step": event.step_key, "error": error.message.strip() if error else ""})
        record = {
            "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "run_id": run.run_id,
            "job": run.job_name,
            "assets": sorted(k.to_user_string() for k in (run.asset_selection or [])),
            "partitions": partitions,
            "reason": tags.get(REASON_TAG, ""),
            "failed_steps": steps,
            "message": context.failure_event.message or "",
        }
        alert_log.parent.mkdir(parents=True, exist_ok=True)
        with alert_log.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        summary = "; ".join(f"{s['step']}: {s['error'][:200]}" for s in steps) or record["message"]
        context.log.error(f"run {run.run_id} ({run.job_name}, partitions {partitions or 'none'}) failed: {summary}")
        if webhook_url:
            request = urllib.request.Request(
                webhook_url, data=json.dumps(record).encode(), headers={"Content-Type": "application/json"}
            )
            try:
                urllib.request.urlopen(request, timeout=5).close()
            except OSError as exc:
                context.log.warning(f"alert webhook unreachable ({type(exc).__name__}); the alert is in {alert_log}")

    return run_failure_alerts
