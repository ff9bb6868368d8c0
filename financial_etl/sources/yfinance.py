"""Yahoo Finance end-of-day prices: one `yf.download` call for all tickers, as in the seed.

The wide (field, ticker) frame is stacked into the long raw shape in bulk. Tickers that
come back empty or all-NaN are reported by name rather than silently missing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from financial_etl.sources.prices import PriceBatch, drop_untraded, to_raw_frame

FIELDS = {"Open": "open_price", "High": "high_price", "Low": "low_price", "Close": "close_price", "Volume": "volume"}


def download(tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
    import yfinance as yf

    # yfinance's `end` is exclusive; the project's ranges include their end date.
    return yf.download(
        list(tickers),
        start=start.isoformat(),
        end=(end + dt.timedelta(days=1)).isoformat(),
        progress=False,
        auto_adjust=True,
        group_by="column",
        multi_level_index=True,
        threads=True,
    )


def wide_to_long(data: pd.DataFrame, tickers: Sequence[str]) -> pd.DataFrame:
    """(field, ticker) columns x date rows -> one row per (ticker, date)."""
    if data is None or data.empty:
        return pd.DataFrame(columns=["ticker", "date", *FIELDS.values()])
    if not isinstance(data.columns, pd.MultiIndex):
        # Old single-ticker answers have flat field columns.
        data = pd.concat({tickers[0]: data}, axis=1).swaplevel(0, 1, axis=1)
    level = 0 if set(FIELDS) & set(data.columns.get_level_values(0)) else 1
    fields = data.columns.get_level_values(level)
    missing = sorted(set(FIELDS) - set(fields))
    if missing:
        raise ValueError(f"Yahoo Finance answer lacks the columns {missing}")
    data = data.loc[:, fields.isin(list(FIELDS))]
    if level == 1:
        data = data.swaplevel(0, 1, axis=1)
    long = data.stack(level=1, future_stack=True)
    long.index = long.index.set_names(["date", "ticker"])
    long = long.rename(columns=FIELDS).reset_index()
    return long


def fetch_yfinance(tickers: Sequence[str], start: dt.date, end: dt.date) -> PriceBatch:
    long = wide_to_long(download(tickers, start, end), tickers)
    if len(long):
        long["date"] = pd.to_datetime(long["date"]).dt.tz_localize(None)
        frame, dropped = drop_untraded(to_raw_frame(long))
    else:
        frame, dropped = to_raw_frame(long), 0
    present = set(frame["ticker"].unique())
    empty = [t for t in tickers if t not in present]
    return PriceBatch(frame=frame, source="yfinance", empty_tickers=empty, dropped_rows=dropped)
