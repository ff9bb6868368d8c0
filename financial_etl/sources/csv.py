"""A folder of Yahoo-format CSV files, one `<TICKER>.csv` per ticker.

Header `Date,Open,High,Low,Close,Adj Close,Volume` (Adj Close optional), dates
YYYY-MM-DD. Every file is parsed in full before anything is handed to dlt, so a
malformed line fails the load with its file and line number and nothing is written.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from financial_etl.errors import ConfigError
from financial_etl.sources.prices import PriceBatch, drop_untraded

REQUIRED = ("Date", "Open", "High", "Low", "Close", "Volume")
OPTIONAL = ("Adj Close",)
MISSING_MARKERS = {"", "null", "nan", "NaN"}


def _number(text: str, where: str, column: str) -> float:
    if text.strip() in MISSING_MARKERS:
        return math.nan
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{where}: {column} {text!r} is not a number") from None
    if math.isinf(value):
        raise ConfigError(f"{where}: {column} {text!r} is not a finite number")
    return value


def read_ticker_csv(path: Path, ticker: str) -> tuple[pd.DataFrame, int]:
    """Parse one file strictly; returns the traded rows and how many untraded were dropped."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    with handle:
        reader = csv.reader(handle)
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise ConfigError(f"{path}:1: the file is empty; expected the header {','.join(REQUIRED)}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}:1: unreadable header ({exc})") from None
        unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
        missing = [h for h in REQUIRED if h not in header]
        if unknown or missing or len(set(header)) != len(header):
            raise ConfigError(
                f"{path}:1: header {','.join(header)!r} is not Yahoo's CSV format "
                f"(expected Date,Open,High,Low,Close[,Adj Close],Volume)"
            )
        index = {name: header.index(name) for name in REQUIRED}
        dates: list[dt.date] = []
        values: list[tuple[float, float, float, float, float]] = []
        seen: set[dt.date] = set()
        line_no = 1
        try:
            for line_no, row in enumerate(reader, start=2):
                if not row or all(not cell.strip() for cell in row):
                    continue
                where = f"{path}:{line_no}"
                if len(row) != len(header):
                    raise ConfigError(f"{where}: {len(row)} fields, the header has {len(header)}")
                raw_date = row[index["Date"]].strip()
                try:
                    if len(raw_date) != 10:
                        raise ValueError
                    day = dt.date.fromisoformat(raw_date)
                except ValueError:
                    raise ConfigError(f"{where}: Date {raw_date!r} is not YYYY-MM-DD") from None
                if day in seen:
                    raise ConfigError(f"{where}: date {raw_date} appears twice")
                seen.add(day)
                dates.append(day)
                values.append(
                    tuple(_number(row[index[c]], where, c) for c in ("Open", "High", "Low", "Close", "Volume"))
                )
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}:{line_no + 1}: unreadable line ({exc})") from None

    array = np.array(values, dtype="float64").reshape(-1, 5)
    volume = array[:, 4]
    fractional = ~np.isnan(volume) & (volume != np.round(volume))
    if fractional.any():
        raise ConfigError(f"{path}: Volume must be a whole number (first bad date {dates[int(np.argmax(fractional))]})")
    frame = pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "open_price": array[:, 0],
            "high_price": array[:, 1],
            "low_price": array[:, 2],
            "close_price": array[:, 3],
            "volume": volume,
        }
    )
    return drop_untraded(frame)


def ticker_file(csv_dir: Path, ticker: str) -> Path:
    return csv_dir / f"{ticker}.csv"


def check_csv_dir(csv_dir: Path, tickers: Sequence[str]) -> None:
    """Cheap pre-flight: every requested ticker has its file."""
    missing = [t for t in tickers if not ticker_file(csv_dir, t).is_file()]
    if missing:
        raise ConfigError(
            f"FINANCIAL_ETL_CSV_DIR={str(csv_dir)!r} has no file for "
            + ", ".join(f"{t} ({t}.csv)" for t in missing)
        )


def make_csv_fetch(csv_dir: Path):
    def fetch_csv(tickers: Sequence[str], start: dt.date, end: dt.date) -> PriceBatch:
        check_csv_dir(csv_dir, tickers)
        frames, dropped = [], 0
        for ticker in tickers:
            frame, n = read_ticker_csv(ticker_file(csv_dir, ticker), ticker)
            frames.append(frame)
            dropped += n
        frame = pd.concat(frames, ignore_index=True).sort_values(["ticker", "date"]).reset_index(drop=True)
        in_range = frame[(frame["date"] >= start) & (frame["date"] <= end)]
        present = set(in_range["ticker"].unique())
        return PriceBatch(
            frame=in_range.reset_index(drop=True),
            source="csv",
            empty_tickers=[t for t in tickers if t not in present],
            dropped_rows=dropped,
        )

    return fetch_csv
