"""Deterministic synthetic OHLCV, so the project runs with no network.

Each ticker's close is a seeded random walk over the XNYS sessions since a fixed origin,
and the row of a given date never depends on the requested range: loading 2024 then
2025 gives the same rows as loading both at once. A range costs its own rows, not the
history before it: the walk is built in blocks of BLOCK sessions, each block's end drawn
from one short per-ticker sequence and its inside from the block's own generator as a
Brownian bridge between its ends, so any session's value needs only its block.
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
BLOCK = 256  # sessions per block of the walk
DRIFT = 0.0002


def _key(ticker: str) -> int:
    return zlib.crc32(ticker.encode())


def synthetic_series(ticker: str, sessions: Sequence[dt.date], first: int = 0) -> pd.DataFrame:
    """One ticker's OHLCV on `sessions`, consecutive XNYS sessions of which the first is
    session number `first` counted from ORIGIN's first session."""
    n = len(sessions)
    key = _key(ticker)
    params = np.random.default_rng([SEED, key])
    start_price = 20 + 180 * params.random()
    vol = 0.01 + 0.015 * params.random()
    index = np.arange(first, first + n)
    blocks = np.unique(index // BLOCK)
    # The walk at each block's end: a prefix of one sequence, the same whatever the range.
    count = int(blocks[-1]) + 1 if n else 0
    ends = np.concatenate(
        [[0.0], np.cumsum(np.sqrt(BLOCK) * np.random.default_rng([SEED, key, 1]).standard_normal(count))]
    )
    walk, shocks = np.empty(n), np.empty((n, 4))
    for block in blocks:
        draws = np.random.default_rng([SEED, key, 2, int(block)]).standard_normal((BLOCK, 5))
        steps = np.cumsum(draws[:, 0])
        share = np.arange(1, BLOCK + 1) / BLOCK
        bridge = ends[block] + steps - share * steps[-1] + share * (ends[block + 1] - ends[block])
        rows = index // BLOCK == block
        within = index[rows] % BLOCK
        walk[rows], shocks[rows] = bridge[within], draws[within, 1:]
    close = start_price * np.exp(DRIFT * (index + 1) + vol * walk)
    open_ = close * np.exp(vol / 2 * shocks[:, 0])
    high = np.maximum(open_, close) * (1 + np.abs(vol / 2 * shocks[:, 1]))
    low = np.minimum(open_, close) * (1 - np.abs(vol / 2 * shocks[:, 2]))
    volume = np.round(2e6 * np.exp(0.3 * shocks[:, 3])).astype(np.int64) + 1
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
    sessions = trading_sessions(max(start, ORIGIN), end)
    first = len(trading_sessions(ORIGIN, sessions[0])) - 1 if sessions else 0
    frames = [synthetic_series(t, sessions, first) for t in tickers]
    frame = to_raw_frame(pd.concat(frames, ignore_index=True)) if frames else pd.DataFrame()
    if len(frame):
        frame["volume"] = frame["volume"].astype(np.int64)
    return PriceBatch(frame=frame, source="synthetic", synthetic=True)
