"""Synthetic universes of N tickers x D trading sessions, for the benchmarks."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from financial_etl.calendar import trading_sessions
from financial_etl.extract.sources.synthetic import ORIGIN, synthetic_series


def sessions(days: int) -> list[dt.date]:
    all_sessions = trading_sessions(ORIGIN, dt.date(2040, 12, 31))
    if days > len(all_sessions):
        raise ValueError(f"at most {len(all_sessions)} sessions are available")
    return all_sessions[:days]


def universe(tickers: int, days: int) -> pd.DataFrame:
    """Long raw frame (ticker, date, OHLC, volume), sorted by ticker then date."""
    days_list = sessions(days)
    names = [f"T{i:04d}" for i in range(tickers)]
    return pd.concat([synthetic_series(name, days_list) for name in names], ignore_index=True)
