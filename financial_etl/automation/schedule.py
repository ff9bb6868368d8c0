"""The evening schedule: after the NYSE close, the day's session through the whole graph.

A failed night is repaired by the next evening: each run starts the day after the last
date a successful scheduled run covered.
"""

import datetime as dt
from zoneinfo import ZoneInfo

from dagster import (
    DagsterRunStatus,
    DefaultScheduleStatus,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    schedule,
)

from financial_etl.calendar import TIMEZONE, closure_reason, key_range_for_dates
from financial_etl.runs import END_TAG, REASON_TAG, SCHEDULE_TAG, START_TAG, range_tags
from financial_etl.settings import Settings

SCHEDULE_NAME = "daily_after_close"
SCHEDULE_CRON = "30 18 * * 1-5"  # weekdays, after the 16:00 close and Yahoo's end-of-day update


def last_completed_day(settings: Settings) -> dt.date:
    """The newest day that has ended in New York, capped by FINANCIAL_ETL_END_DATE."""
    last_day = dt.datetime.now(ZoneInfo(TIMEZONE)).date() - dt.timedelta(days=1)
    if settings.end_date:
        last_day = min(last_day, settings.end_date)
    return last_day


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


def build_daily_schedule(settings: Settings, job):
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
        if day < settings.start_date:
            return SkipReason(f"{day.isoformat()} is before FINANCIAL_ETL_START_DATE={settings.start_date}")
        start = max(catch_up_start(context.instance, job.name, day), settings.start_date)
        reason = f"daily schedule for {day}" + (f", catching up from {start}" if start < day else "")
        tags = {REASON_TAG: reason, START_TAG: start.isoformat(), END_TAG: day.isoformat()}
        keys = key_range_for_dates(start, day)
        if keys.start == keys.end:
            return RunRequest(run_key=day.isoformat(), partition_key=keys.start, tags=tags)
        return RunRequest(run_key=day.isoformat(), tags={**tags, **range_tags(start, day)})

    return daily_after_close
