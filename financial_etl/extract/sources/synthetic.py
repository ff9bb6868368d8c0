"""Deterministic synthetic OHLCV, so the project runs with no network.

Each ticker's series is a seeded random walk over XNYS sessions from a fixed origin, so
the price on a given date never depends on the requested range: loading 2024 then 2025
gives the same rows as loading both at once.
"""

from __future__ import annotations

import datetime as dt
import zlib
from collections.abc import Sequence

import numpy as np
import pandas as pd

from financial_etl.calendar import FIRST_DAY, trading_sessions
from financial_etl.extract.resource import PriceBatch, to_raw_frame

ORIGIN = FIRST_DAY
SEED = 20251127


def synthetic_series(ticker: str, sessions: Sequence[dt.date]) -> pd.DataFrame:
    """One ticker's OHLCV on the given sessions (which must start at ORIGIN's first session)."""
    rng = np.random.default_rng([SEED, zlib.crc32(ticker.encode())])
    n = len(sessions)
    start_price = 20 + 180 * rng.random()
    drift, vol = 0.0002, 0.01 + 0.015 * rng.random()
    # One draw of all shocks, row by row: a row's values depend only on the rows before
    # it, never on how many sessions were asked for.
    shocks = rng.standard_normal((n, 5))
    close = start_price * np.exp(np.cumsum(drift + vol * shocks[:, 0]))
    open_ = close * np.exp(vol / 2 * shocks[:, 1])
    high = np.maximum(open_, close) * (1 + np.abs(vol / 2 * shocks[:, 2]))
    low = np.minimum(open_, close) * (1 - np.abs(vol / 2 * shocks[:, 3]))
    volume = np.round(2e6 * np.exp(0.3 * shocks[:, 4])).astype(np.int64) + 1
    return pd.DataFrame(
        {
            "ticker": ticker,
            "date": list(sessions),
            "open_price": open_,
            "high_price": high,
            "low_price": low,
            "close_price": close,
            "volume": volume,
        }
    )


def fetch_synthetic(tickers: Sequence[str], start: dt.date, end: dt.date) -> PriceBatch:
    sessions = trading_sessions(ORIGIN, end)
    frames = [synthetic_series(t, sessions) for t in tickers]
    frame = to_raw_frame(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
    frame["volume"] = frame["volume"].astype(np.int64)
    frame = frame[(frame["date"] >= start) & (frame["date"] <= end)].reset_index(drop=True)
    return PriceBatch(frame=frame, source="synthetic", synthetic=True)
