"""The NYSE (XNYS) trading calendar: sessions, and why a weekday is not one."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache

import pandas as pd

FIRST_DAY = dt.date(1990, 1, 2)
LAST_DAY = dt.date(2040, 12, 31)


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
