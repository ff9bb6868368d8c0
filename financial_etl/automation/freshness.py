"""Freshness: the mart and the export are due each evening, in New York time.

Dagster's cron freshness policy marks an asset late from a deadline until it
materializes again, unless it materialized inside the window before that deadline. The
window opens at the NYSE close: a run after the close carries the day's session, one
before it does not. The freshness daemon (in `dg dev` and any Dagster daemon) evaluates
it, and the UI shows the asset as failing its freshness policy.
"""

from __future__ import annotations

import datetime as dt

from dagster import Definitions, FreshnessPolicy, apply_freshness_policy
from dagster_shared.check import CheckError  # what FreshnessPolicy.cron raises for a cron it refuses

from financial_etl.calendar import TIMEZONE

CLOSE = dt.time(16, 0)  # the NYSE's regular close, New York time
# 21:00 on weekdays: the 18:30 schedule's run (schedule.py) has two and a half hours.
DEFAULT_DEADLINE_CRON = "0 21 * * 1-5"


def deadline_policy(deadline_cron: str) -> FreshnessPolicy:
    """Due at each tick of `deadline_cron` (New York time), materialized since the close
    before it. Raises ValueError naming what is wrong with the cron."""
    fields = deadline_cron.split()
    if len(fields) != 5 or not (fields[0].isdigit() and fields[1].isdigit()):
        raise ValueError("give five cron fields whose minute and hour are plain numbers (a time of day)")
    minute, hour = int(fields[0]), int(fields[1])
    if minute > 59 or hour > 23:
        raise ValueError(f"{hour}:{minute:02d} is not a time of day")
    day = dt.date(2000, 1, 1)
    since_close = dt.datetime.combine(day, dt.time(hour, minute)) - dt.datetime.combine(day, CLOSE)
    # A deadline before the close (the next morning) counts from the previous day's close.
    window = since_close % dt.timedelta(days=1) or dt.timedelta(days=1)
    try:
        return FreshnessPolicy.cron(deadline_cron=" ".join(fields), lower_bound_delta=window, timezone=TIMEZONE)
    except CheckError as exc:
        raise ValueError(str(exc).removeprefix("Invariant failed. Description: ")) from None


def due_by_deadline(defs: Definitions, deadline_cron: str) -> Definitions:
    """Every asset of `defs` under the deadline policy."""
    policy = deadline_policy(deadline_cron)
    return defs.map_asset_specs(func=lambda spec: apply_freshness_policy(spec, policy))
