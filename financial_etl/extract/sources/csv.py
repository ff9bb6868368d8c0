"""A folder of Yahoo-format CSV files, one `<TICKER>.csv` per ticker.

Header `Date,Open,High,Low,Close,Adj Close,Volume` (Adj Close optional), dates
YYYY-MM-DD, numbers as Yahoo writes them (ASCII digits, a point, an exponent). A file that
cannot be read, or whose header is not Yahoo's, fails the run naming the file. A line that
cannot be parsed (wrong field count, a bad date or number, bytes that are not UTF-8) is
rejected with its file and line number and goes to the quarantine; the file's other lines
still load. A file with no row in the range says so by name: the run reports the ticker
missing. Files are read only inside the configured folder: a symlink pointing elsewhere is
refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from financial_etl.errors import ConfigError
from financial_etl.extract.contract import VALUE_COLUMNS, Rejected
from financial_etl.extract.resource import PriceBatch
from financial_etl.settings import validate_tickers

REQUIRED = ("Date", "Open", "High", "Low", "Close", "Volume")
OPTIONAL = ("Adj Close",)
MISSING_MARKERS = {"", "null", "nan", "NaN"}
VALUES = ("Open", "High", "Low", "Close", "Volume")
# Python's fromisoformat also reads ISO week dates (2024-W04-5); Yahoo writes only this.
DATE_FORMAT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class BadLine(ValueError):
    """One line that cannot become a row; the message says why."""


def _number(text: str, column: str) -> float:
    raw = text.strip()
    if raw in MISSING_MARKERS:
        return math.nan
    try:
        # float() also reads 1_000 and non-ASCII digits, which no price file writes.
        if "_" in raw or not raw.isascii():
            raise ValueError
        return float(raw)
    except ValueError:
        raise BadLine(f"{column} {raw[:40]!r} is not a number") from None


def _date(text: str) -> dt.date:
    raw = text.strip()
    try:
        if not DATE_FORMAT.fullmatch(raw):
            raise ValueError
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise BadLine(f"Date {raw[:40]!r} is not YYYY-MM-DD") from None


def _header(first: bytes, path: Path) -> list[str]:
    try:
        text = first.decode("utf-8-sig")
        header = [h.strip() for h in next(csv.reader([text]))]
    except (UnicodeDecodeError, csv.Error, StopIteration) as exc:
        raise ConfigError(f"{path}:1: unreadable header ({exc})") from None
    unknown = [h for h in header if h not in REQUIRED + OPTIONAL]
    missing = [h for h in REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        raise ConfigError(
            f"{path}:1: header {','.join(header)[:200]!r} is not Yahoo's CSV format "
            f"(expected Date,Open,High,Low,Close[,Adj Close],Volume)"
        )
    return header


def read_ticker_csv(path: Path, ticker: str) -> tuple[pd.DataFrame, list[Rejected]]:
    """Every parseable line as a row (values as written), and every other line rejected."""
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror})") from None
    if not lines or not lines[0].strip():
        raise ConfigError(f"{path}:1: the file is empty; expected the header {','.join(REQUIRED)}")
    header = _header(lines[0], path)
    index = {name: header.index(name) for name in REQUIRED}
    dates: list[dt.date] = []
    values: list[tuple[float, ...]] = []
    rejected: list[Rejected] = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        text = line.decode("utf-8", errors="backslashreplace")
        day = None
        try:
            if text != line.decode("utf-8", errors="ignore"):
                raise BadLine("not UTF-8 text")
            row = next(csv.reader([text]))
            if len(row) != len(header):
                raise BadLine(f"{len(row)} fields, the header has {len(header)}")
            day = _date(row[index["Date"]])
            numbers = tuple(_number(row[index[c]], c) for c in VALUES)
        except (BadLine, csv.Error) as exc:
            rejected.append(
                Rejected(ticker=ticker, location=f"{path.name}:{line_no}", raw_line=text, detail=str(exc), date=day)
            )
            continue
        dates.append(day)
        values.append(numbers)
    frame = pd.DataFrame(values, columns=list(VALUE_COLUMNS), dtype="float64")
    frame.insert(0, "date", dates)
    frame.insert(0, "ticker", ticker)
    return frame, rejected


def ticker_file(csv_dir: Path, ticker: str) -> Path:
    """The ticker's file, refused when it (or a symlink on the way) leads outside csv_dir."""
    validate_tickers([ticker])
    root = csv_dir.resolve()
    path = csv_dir / f"{ticker}.csv"
    target = path.resolve()
    if not target.is_relative_to(root):
        raise ConfigError(
            f"{path} resolves to {target}, outside FINANCIAL_ETL_CSV_DIR={str(root)!r}; "
            "the CSV source reads only files inside that folder"
        )
    return target


def check_csv_dir(csv_dir: Path, tickers: Sequence[str]) -> None:
    """Cheap pre-flight: every requested ticker has its file, inside the folder."""
    missing = [t for t in tickers if not ticker_file(csv_dir, t).is_file()]
    if missing:
        raise ConfigError(
            f"FINANCIAL_ETL_CSV_DIR={str(csv_dir)!r} has no file for " + ", ".join(f"{t} ({t}.csv)" for t in missing)
        )


def no_rows(path: Path, frame: pd.DataFrame, rejected: Sequence[Rejected], start: dt.date, end: dt.date) -> str | None:
    """Why the file gives the ticker no row for [start, end], naming it; None when it has one."""
    in_range = frame[(frame["date"] >= start) & (frame["date"] <= end)] if len(frame) else frame
    if in_range[list(VALUE_COLUMNS)].notna().any(axis=None):
        return None
    if not len(frame) and not rejected:
        return f"{path} has only its header"
    if len(in_range):
        return f"{path} has no value on any line from {start} to {end}"
    span = f" (its rows run from {min(frame['date'])} to {max(frame['date'])})" if len(frame) else ""
    return f"{path} has no row from {start} to {end}{span}"


def make_csv_fetch(csv_dir: Path):
    def fetch_csv(tickers: Sequence[str], start: dt.date, end: dt.date) -> PriceBatch:
        check_csv_dir(csv_dir, tickers)
        frames, rejected, errors = [], [], {}
        for ticker in tickers:
            path = ticker_file(csv_dir, ticker)
            frame, bad = read_ticker_csv(path, ticker)
            frames.append(frame[(frame["date"] >= start) & (frame["date"] <= end)] if len(frame) else frame)
            # A bad line dated outside the range is that range's business, not this run's.
            rejected.extend(r for r in bad if r.date is None or start <= r.date <= end)
            why = no_rows(path, frame, bad, start, end)
            if why:
                errors[ticker] = why
        frame = pd.concat(frames, ignore_index=True)
        # A file that was read and has no row is data missing, not a source to retry.
        return PriceBatch(
            frame=frame,
            source="csv",
            rejected=rejected,
            ticker_errors=errors,
            ticker_causes=dict.fromkeys(errors, "absent"),
        )

    return fetch_csv
