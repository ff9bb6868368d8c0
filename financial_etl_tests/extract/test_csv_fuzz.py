"""Property tests (issue 8): malformed CSV content fed to the CSV source never crashes with
anything but the designed ConfigError, and never lets a row that breaks the raw contract
reach raw.eod_prices_raw.

Three generators feed the source and then the contract: arbitrary bytes, arbitrary text
(alone, behind Yahoo's header, or as dated lines of CSV-ish noise), and Yahoo files whose
every line says what the source must do with it (load it, quarantine it for a named
reason, reject it with a named detail, or anything at all for random edits). Every input
is also checked against an oracle that re-derives the contract from the parsed rows: the
valid table must be exactly the rows obeying it, and every line must be accounted for.
A smaller run loads through dlt into DuckDB and checks what was stored.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import dlt
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from financial_etl.errors import ConfigError, FinancialEtlError, MissingTickersError
from financial_etl.extract import contract as c
from financial_etl.extract.contract import PRICE_COLUMNS, RAW_SCHEMA, ContractResult, Rejected, apply_contract
from financial_etl.extract.resource import PriceBatch, eod_prices_resource, fetch_batch
from financial_etl.extract.sources.csv import make_csv_fetch, read_ticker_csv
from financial_etl.warehouse import QUARANTINE_TABLE, RAW_TABLE

TICKER = "AAA"
START, END = dt.date(2024, 1, 1), dt.date(2024, 3, 31)
REQUIRED = ("Date", "Open", "High", "Low", "Close", "Volume")
VALUES = ("Open", "High", "Low", "Close", "Volume")
PRICES = VALUES[:4]
MISSING = ("", "null", "nan", "NaN", " ", " null ")  # what Yahoo writes for no value
EXAMPLES: Counter = Counter()  # inputs tried per test, printed at the end of the module

PURE = settings(
    max_examples=300,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example],
)
LOAD = settings(
    PURE,
    max_examples=25,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.large_base_example, HealthCheck.function_scoped_fixture],
)


def teardown_module():
    print(f"\ncsv fuzz inputs tried: {dict(EXAMPLES)}, total {sum(EXAMPLES.values())}")


# --- the checks every input goes through ------------------------------------------------


@dataclass
class Outcome:
    rows: pd.DataFrame  # every parsed line of the file, before the range filter
    rejected: list[Rejected]  # every rejected line of the file
    batch: PriceBatch
    result: ContractResult


def header_is_yahoos(content: bytes) -> bool:
    """The spec's word on the first line: Yahoo's columns, Adj Close optional, any order."""
    lines = content.splitlines()
    if not lines or not lines[0].strip():
        return False
    try:
        names = [h.strip() for h in next(csv.reader([lines[0].decode("utf-8-sig")]))]
    except (UnicodeDecodeError, csv.Error):
        return False
    return sorted(names) in (sorted(REQUIRED), sorted((*REQUIRED, "Adj Close")))


def run_source(directory: Path, content: bytes) -> Outcome | None:
    """`content` as AAA.csv through the fetch and the contract, every invariant checked;
    None when the file is refused (with ConfigError, the only exception allowed)."""
    path = directory / f"{TICKER}.csv"
    path.write_bytes(content)
    try:
        batch = make_csv_fetch(directory)([TICKER], START, END)
    except ConfigError as exc:
        assert not header_is_yahoos(content), f"a file with Yahoo's header was refused: {exc}"
        assert str(path) in str(exc)
        event("file refused (ConfigError)")
        return None
    assert header_is_yahoos(content), "a file without Yahoo's header was accepted"
    rows, rejected = read_ticker_csv(path, TICKER)
    result = apply_contract(batch.frame, START, END, [TICKER], "csv", batch.rejected, run_id="fuzz")
    check_every_line_accounted(content, path, rows, rejected, batch)
    check_contract_split(batch, result)
    assert result.valid.schema == RAW_SCHEMA
    assert_raw_contract(result.valid)
    for what, count in [
        ("valid rows", result.valid.num_rows),
        ("quarantined rows", result.quarantined),
        ("rejected lines", len(rejected)),
        ("untraded rows", result.untraded),
    ]:
        event(f"some {what}" if count else f"no {what}")
    return Outcome(rows, rejected, batch, result)


def feed(generator: str, content: bytes) -> Outcome | None:
    """One generated input through `run_source` in a fresh folder, counted."""
    EXAMPLES[generator] += 1
    with tempfile.TemporaryDirectory() as tmp:
        return run_source(Path(tmp).resolve(), content)


def check_every_line_accounted(content, path, rows, rejected, batch) -> None:
    """Each non-blank line after the header is a row or a rejection, never both, never
    neither; the fetch keeps the rows in range and the rejections not dated outside it."""
    physical = content.splitlines()[1:]
    nonblank = {number: line for number, line in enumerate(physical, start=2) if line.strip()}
    assert len(rows) + len(rejected) == len(nonblank)
    numbers = [int(r.location.rpartition(":")[2]) for r in rejected]
    assert len(set(numbers)) == len(numbers)
    for item, number in zip(rejected, numbers, strict=True):
        assert item.location == f"{path.name}:{number}" and number in nonblank
        assert item.ticker == TICKER and item.detail
        assert item.raw_line == nonblank[number].decode("utf-8", errors="backslashreplace")
    assert (rows["ticker"] == TICKER).all()
    in_range = rows[(rows["date"] >= START) & (rows["date"] <= END)] if len(rows) else rows
    pd.testing.assert_frame_equal(batch.frame.reset_index(drop=True), in_range.reset_index(drop=True))
    assert batch.rejected == [r for r in rejected if r.date is None or START <= r.date <= END]


def check_contract_split(batch: PriceBatch, result: ContractResult) -> None:
    """Oracle: the valid table is exactly the fetched rows obeying the raw contract; every
    other row is quarantined (with a reason) or is an all-empty untraded day."""
    frame = batch.frame
    dates = frame["date"].tolist()
    prices = frame[list(PRICE_COLUMNS)].to_numpy(dtype="float64").reshape(len(frame), 4)
    volume = frame["volume"].to_numpy(dtype="float64")
    untraded = np.isnan(prices).all(axis=1) & np.isnan(volume)
    per_date = Counter(dates)
    with np.errstate(invalid="ignore"):
        good = (
            (prices >= c.MIN_PRICE).all(axis=1)
            & (prices <= c.MAX_PRICE).all(axis=1)
            & (prices[:, 1] >= prices[:, 2])
            & np.isfinite(volume)
            & (volume == np.round(volume))
            & (volume >= 0)
            & (volume <= c.MAX_VOLUME)
            & np.array([per_date[d] == 1 and START <= d <= END for d in dates], dtype=bool)
        )
    expected = sorted(
        (TICKER, d, *map(float, p), int(v)) for d, p, v, ok in zip(dates, prices, volume, good, strict=True) if ok
    )
    assert sorted(tuple(r.values()) for r in result.valid.to_pylist()) == expected
    assert result.untraded == int(untraded.sum())

    # Quarantined: every other row and every rejected line, each under its own id (the
    # quarantine table's primary key), even the same bad input twice.
    quarantine = result.quarantine.to_pylist()
    from_rows = [q for q in quarantine if q["location"] is None]
    from_lines = [q for q in quarantine if q["location"] is not None]
    assert Counter(q["date"] for q in from_rows) == Counter(
        d for d, bad in zip(dates, ~good & ~untraded, strict=True) if bad
    )
    assert sorted(q["location"] for q in from_lines) == sorted(r.location for r in batch.rejected)
    ids = [q["quarantine_id"] for q in quarantine]
    assert len(set(ids)) == len(ids)
    for q in quarantine:
        assert q["reason"] and q["source"] == "csv" and len(q["quarantine_id"]) == 40


def assert_raw_contract(table: pa.Table) -> None:
    """Every row obeys the raw contract, rule by rule (for the contract's output and for
    what DuckDB stored)."""
    tickers, dates = table.column("ticker").to_pylist(), table.column("date").to_pylist()
    assert None not in tickers and None not in dates
    assert set(tickers) <= {TICKER}
    assert all(START <= d <= END for d in dates)
    prices = np.column_stack([table.column(col).to_numpy() for col in PRICE_COLUMNS]).reshape(-1, 4)
    assert (prices >= c.MIN_PRICE).all() and (prices <= c.MAX_PRICE).all()
    assert (prices[:, 1] >= prices[:, 2]).all()
    assert pa.types.is_int64(table.schema.field("volume").type) and table.column("volume").null_count == 0
    assert (table.column("volume").to_numpy() >= 0).all() and (table.column("volume").to_numpy() <= c.MAX_VOLUME).all()
    assert len(set(zip(tickers, dates, strict=True))) == len(dates)


# --- arbitrary bytes and text -------------------------------------------------------------

HEADERS = [b"Date,Open,High,Low,Close,Adj Close,Volume", b"Date,Open,High,Low,Close,Volume"]
CSVISH = '0123456789-+.,eEinfatyINul "\t\r\n\x00'


def behind_header(body: st.SearchStrategy[bytes]) -> st.SearchStrategy[bytes]:
    return st.tuples(st.sampled_from(HEADERS), st.sampled_from([b"\n", b"\r\n", b"\r"]), body).map(b"".join)


dated_noise = st.lists(
    st.tuples(st.dates(START - dt.timedelta(days=3), END + dt.timedelta(days=3)), st.text(CSVISH, max_size=40)),
    max_size=20,
).map(lambda lines: "".join(f"{day.isoformat()},{rest}\n" for day, rest in lines).encode())


@PURE
@given(st.one_of(st.binary(max_size=600), behind_header(st.binary(max_size=600))))
@example(b"")
@example(b"\xef\xbb\xbf")
@example(b"Date,Open,High,Low,Close,Volume\n\xff,\xfe\n")
def test_arbitrary_bytes_never_crash_the_csv_source(content):
    feed("arbitrary bytes", content)


@PURE
@given(
    st.one_of(
        st.text(max_size=400).map(str.encode),
        behind_header(st.text(max_size=400).map(str.encode)),
        behind_header(st.text(CSVISH, max_size=400).map(str.encode)),
        behind_header(dated_noise),
    )
)
@example(b"Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1,9223372036854775807\n")
@example(b"Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1,1e19\n")
def test_arbitrary_text_never_crashes_the_csv_source(content):
    feed("arbitrary text", content)


# --- Yahoo files with malformed lines, each line knowing its fate -------------------------


@dataclass
class Line:
    kind: str
    date: dt.date | None  # the date the source must read, None when it cannot
    values: tuple[float, ...] = ()  # open, high, low, close, volume as the source must read them
    reason: str = ""  # the quarantine reason, or the rejection detail
    number: int = 0  # line number in the file


@dataclass
class YahooFile:
    content: bytes
    header_ok: bool
    lines: list[Line]


GOOD = "good"
ROW_FAULTS = {  # kind -> the reason the contract must quarantine it for
    "missing price": c.MISSING_PRICE,
    "missing volume": c.MISSING_VOLUME,
    "infinite": c.NON_FINITE,
    "non-positive price": c.NON_POSITIVE_PRICE,
    "tiny price": c.PRICE_TOO_SMALL,
    "huge price": c.PRICE_TOO_LARGE,
    "high below low": c.HIGH_BELOW_LOW,
    "fractional volume": c.FRACTIONAL_VOLUME,
    "negative volume": c.NEGATIVE_VOLUME,
    "huge volume": c.VOLUME_TOO_LARGE,
    "duplicate": c.DUPLICATE_KEY,
}
ROW_KINDS = {GOOD, "untraded", *ROW_FAULTS}
REJECT_KINDS = {"bad date", "bad number", "field count", "not utf-8"}
KINDS = [GOOD] * 8 + [*ROW_FAULTS, "untraded", *sorted(REJECT_KINDS), "random edit", "split", "blank"]
HEADER_FAULTS = [
    "missing column",
    "unknown column",
    "duplicate column",
    "lowercase",
    "semicolons",
    "not utf-8",
    "blank first line",
    "empty file",
]
BAD_DATES = [
    "2024-13-01",
    "2024-02-30",
    "02/01/2024",
    "2024/01/02",
    "20240102",
    "",
    "2024-1-2",
    "2024-01-02T00:00",
    "yesterday",
    "2024-01-0x",
    "0000-01-01",
    "2024-00-10",
    "2024-01-32",
    "2024-W04-5",
    "2024-W01-1",
    "\uff12\uff10\uff12\uff14-01-02",
]
BAD_NUMBERS = [
    "abc",
    "1.2.3",
    "--1",
    "N/A",
    "None",
    "NULL",
    "$5",
    "0x10",
    "1e",
    "-",
    ".",
    "1 2",
    "1\x002",
    "1_000",
    "1_0.5",
    "\uff11",
    "\u0661\u0662",
]  # float() reads the last four
INFINITE = ["inf", "-inf", "Infinity", "-Infinity", "+inf", "INF", "1e999", "-1e999"]
NON_POSITIVE = ["0", "-0", "0.0", "-0.0", "-1.5", "-5e-324"]
TINY_PRICES = ["1e-320", "5e-324", "1e-7", "9.99e-7"]  # positive, below MIN_PRICE
HUGE_PRICES = ["1e308", "1.7976931348623157e308", "1e19", "2000000000000000000"]  # finite, above MAX_PRICE
HUGE_VOLUMES = ["9223372036854775807", "9223372036854775808", "1e19", "1.7e308", str(2**64), "1000000000000001", "1e16"]
NOT_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80"]
NOISE = ['"', "\x00", ",", '""', "\t", "\ufeff"]  # quotes, NUL, a field more, a BOM mid-line
BLANKS = ["", " ", "\t", " \t ", "\x0b", "\x0c"]
TERMINATORS = ["\n", "\r\n", "\r"]

positive = st.floats(min_value=0.0, exclude_min=True, allow_nan=False, allow_infinity=False)
plausible = st.floats(min_value=c.MIN_PRICE, max_value=c.MAX_PRICE)  # a price the contract loads
safe_text = st.text(st.characters(blacklist_characters=',"\r\n', blacklist_categories=("Cs",)), max_size=12)


def parses_as_date(text: str) -> bool:
    """The spec: YYYY-MM-DD in ASCII digits, a real day."""
    try:
        return bool(re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", text.strip())) and bool(
            dt.date.fromisoformat(text.strip())
        )
    except ValueError:
        return False


def parses_as_number(text: str) -> bool:
    """The spec: a missing marker, or what float() reads written in ASCII without underscores."""
    if text.strip() in {"", "null", "nan", "NaN"}:
        return True
    if "_" in text or not text.strip().isascii():
        return False
    try:
        float(text)
    except ValueError:
        return False
    return True


@st.composite
def cell(draw, text: str) -> str:
    """The same value written plainly, padded with spaces or quoted."""
    style = draw(st.sampled_from(["plain", "padded", "quoted"]))
    return {"plain": text, "padded": f" {text}  ", "quoted": f'"{text}"'}[style]


@st.composite
def good_values(draw) -> dict[str, str]:
    low, high = sorted((draw(plausible), draw(plausible)))
    volume = draw(st.integers(0, int(c.MAX_VOLUME)))
    return {
        "Open": repr(draw(plausible)),
        "High": repr(high),
        "Low": repr(low),
        "Close": repr(draw(plausible)),
        "Volume": draw(st.sampled_from([str(volume), f"{volume}.0", repr(float(volume))])),
    }


def read_as(text: str) -> float:
    return math.nan if text.strip() in {"", "null", "nan", "NaN"} else float(text)


@st.composite
def data_line(draw, kind: str, day: dt.date, names: list[str]) -> tuple[list[bytes], Line]:
    """One generated line: its physical lines (a split makes two) and its expected fate."""
    cells = draw(good_values())
    line = Line(kind, day, reason=ROW_FAULTS.get(kind, ""))
    price = draw(st.sampled_from(PRICES))
    if kind == "missing price":
        cells[price] = draw(st.sampled_from(MISSING))
    elif kind == "missing volume":
        cells["Volume"] = draw(st.sampled_from(MISSING))
    elif kind == "untraded":
        cells.update({col: draw(st.sampled_from(MISSING)) for col in VALUES})
    elif kind == "infinite":
        cells[draw(st.sampled_from(VALUES))] = draw(st.sampled_from(INFINITE))
    elif kind == "non-positive price":
        cells[price] = draw(st.one_of(st.sampled_from(NON_POSITIVE), positive.map(lambda x: repr(-x))))
    elif kind == "tiny price":
        cells[price] = draw(
            st.one_of(
                st.sampled_from(TINY_PRICES),
                st.floats(min_value=0.0, max_value=c.MIN_PRICE, exclude_min=True, exclude_max=True).map(repr),
            )
        )
    elif kind == "huge price":
        cells[price] = draw(
            st.one_of(
                st.sampled_from(HUGE_PRICES),
                st.floats(min_value=c.MAX_PRICE, exclude_min=True, allow_infinity=False).map(repr),
            )
        )
    elif kind == "high below low":
        low, high = sorted((draw(plausible), draw(plausible)))
        if low == high:
            low = high / 2  # strictly below (0.0 when high is the smallest float: still below)
        cells["Low"], cells["High"] = repr(high), repr(low)
    elif kind == "fractional volume":
        cells["Volume"] = f"{draw(st.integers(0, 10**12))}{draw(st.sampled_from(['.5', '.25', '.001']))}"
    elif kind == "negative volume":
        cells["Volume"] = f"-{draw(st.integers(1, 2**62))}"
    elif kind == "huge volume":
        cells["Volume"] = draw(st.one_of(st.sampled_from(HUGE_VOLUMES), st.integers(2**63, 10**40).map(str)))
    elif kind == "bad date":
        line.date, line.reason = None, "Date "
        cells["Date"] = draw(st.one_of(st.sampled_from(BAD_DATES), safe_text.filter(lambda t: not parses_as_date(t))))
    elif kind == "bad number":
        column = draw(st.sampled_from(VALUES))
        not_numbers = safe_text.filter(lambda t: not parses_as_number(t))
        cells[column] = draw(st.one_of(st.sampled_from(BAD_NUMBERS), not_numbers))
        line.reason = f"{column} {cells[column].strip()[:40]!r} is not a number"
    cells.setdefault("Date", day.isoformat())
    cells["Adj Close"] = draw(st.one_of(positive.map(repr), safe_text))
    row = [draw(cell(cells[name])) for name in names]
    if kind == "field count":
        if draw(st.booleans()):
            at = draw(st.integers(0, len(row) - 1))
            del row[at : at + draw(st.integers(1, min(len(row) - 1, len(row) - at)))]
        else:
            row += ["1"] * draw(st.integers(1, 3))
        line.date, line.reason = None, f"{len(row)} fields, the header has {len(names)}"
        if len(row) == len(names):  # nothing removed after all
            line.kind, line.reason = "random edit", ""
    raw = ",".join(row).encode()
    if kind == "not utf-8":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from(NOT_UTF8)) + raw[at:]
        line.date, line.reason = None, "not UTF-8"
        if raw.decode("utf-8", errors="ignore") == raw.decode("utf-8", errors="replace"):
            line.kind = "random edit"  # the bytes happened to make valid UTF-8
    elif kind == "random edit":
        text = raw.decode()
        for _ in range(draw(st.integers(1, 3))):
            at = draw(st.integers(0, len(text)))
            noise = draw(st.one_of(st.sampled_from(NOISE), safe_text, st.text(max_size=4)))
            text = text[:at] + noise.replace("\r", "").replace("\n", "") + text[at:]
        raw = text.encode()
    if kind in ROW_KINDS:
        line.values = tuple(read_as(cells[col]) for col in VALUES)
    if not raw.strip():  # what is left of the line is blank: skipped like a blank line
        line.kind = "random edit"
    if kind == "split":
        at = draw(st.integers(0, len(raw)))
        return [raw[:at], raw[at:]], line
    return [raw], line


@st.composite
def header_line(draw) -> tuple[list[str], bytes, str | None]:
    """The column names, the header's bytes (a BOM maybe) and what is wrong with it."""
    names = ["Date", "Open", "High", "Low", "Close", *(["Adj Close"] if draw(st.booleans()) else []), "Volume"]
    if draw(st.booleans()):
        names = draw(st.permutations(names))
    text = ",".join(draw(cell(name)) for name in names)
    bom = "\ufeff" if draw(st.booleans()) else ""
    fault = draw(st.sampled_from(HEADER_FAULTS)) if draw(st.integers(0, 7)) == 7 else None
    if fault == "missing column":
        dropped = draw(st.sampled_from(REQUIRED))
        text = ",".join(n for n in names if n != dropped)
    elif fault == "unknown column":
        text += ",Dividends"
    elif fault == "duplicate column":
        text += "," + draw(st.sampled_from(names))
    elif fault == "lowercase":
        text = text.lower()
    elif fault == "semicolons":
        text = ";".join(names)
    raw = (bom + text).encode()
    if fault == "not utf-8":
        raw += b"\xff"
    return list(names), raw, fault


@st.composite
def yahoo_files(draw) -> YahooFile:
    names, header, fault = draw(header_line())
    days = draw(st.lists(st.integers(-20, 110), unique=True, max_size=25))
    physical: list[bytes] = [header]
    lines: list[Line] = []
    for offset in days:
        kind = draw(st.sampled_from(KINDS))
        day = START + dt.timedelta(days=offset)
        if kind == "blank":
            physical.append(draw(st.sampled_from(BLANKS)).encode())
            continue
        for _ in range(2 if kind == "duplicate" else 1):
            parts, line = draw(data_line(kind, day, names))
            repeats = 2 if draw(st.integers(0, 9)) == 9 else 1  # the same line twice, byte for byte
            if repeats == 2 and line.kind == GOOD:
                line.kind, line.reason = "duplicate", c.DUPLICATE_KEY
            for _copy in range(repeats):
                lines.append(replace(line, number=len(physical) + 1))
                physical.extend(parts)
    ends = [draw(st.sampled_from(TERMINATORS)) for _ in physical]
    if physical[-1] and draw(st.booleans()):
        ends[-1] = ""  # no newline at the end of the file
    for i in range(len(physical) - 1):  # "\r" then an empty line's "\n" would be one "\r\n"
        if ends[i] == "\r" and not physical[i + 1] and ends[i + 1].startswith("\n"):
            ends[i] = "\r\n"
    content = b"".join(line + end.encode() for line, end in zip(physical, ends, strict=True))
    assert len(content.splitlines()) == len(physical), "generator: line numbering is off"
    if fault == "blank first line":
        content = b"\n" + content
    elif fault == "empty file":
        content = b""
    assert header_is_yahoos(content) == (fault is None), f"generator: header {fault or 'ok'}"
    return YahooFile(content, fault is None, lines)


def same_values(read: tuple, expected: tuple) -> bool:
    return all(a == b or (math.isnan(a) and math.isnan(b)) for a, b in zip(read, expected, strict=True))


def check_each_line_fate(file: YahooFile, outcome: Outcome) -> None:
    """Each generated line became what it had to: a row read as written (then valid,
    quarantined for its reason or dropped as untraded), or a rejection with its detail."""
    read = defaultdict(list)
    for row in outcome.rows.itertuples(index=False):
        read[row.date].append((row.open_price, row.high_price, row.low_price, row.close_price, row.volume))
    rejected = {int(r.location.rpartition(":")[2]): r for r in outcome.rejected}
    reported = {r.location for r in outcome.batch.rejected}
    valid = {row["date"]: row for row in outcome.result.valid.to_pylist()}
    quarantined = defaultdict(list)
    for row in outcome.result.quarantine.to_pylist():
        if row["location"] is None:
            quarantined[row["date"]].append(row["reason"])
    fetched = Counter(outcome.batch.frame["date"])
    twins = Counter(line.date for line in file.lines if line.kind in ROW_KINDS)
    noisy = any(line.kind in ("random edit", "split") for line in file.lines)
    for line in file.lines:
        where = f"line {line.number} ({line.kind})"
        if line.kind in ROW_KINDS:
            assert line.number not in rejected, f"{where} was rejected: {rejected[line.number].detail}"
            assert any(same_values(v, line.values) for v in read[line.date]), f"{where} was not read as written"
            if not START <= line.date <= END or (noisy and fetched[line.date] > twins[line.date]):
                continue  # out of range: filtered by the fetch (checked); or a random edit made a twin
            if line.kind == GOOD:
                o, h, lo, cl, v = line.values
                assert valid.get(line.date) == {
                    "ticker": TICKER,
                    "date": line.date,
                    "open_price": o,
                    "high_price": h,
                    "low_price": lo,
                    "close_price": cl,
                    "volume": int(v),
                }, where
            elif line.kind == "untraded":
                assert line.date not in valid and line.date not in quarantined, where
            else:
                assert line.date not in valid, f"{where} loaded"
                assert any(line.reason in reason for reason in quarantined[line.date]), f"{where} not quarantined"
        elif line.kind in REJECT_KINDS:
            item = rejected.get(line.number)
            assert item is not None, f"{where} was not rejected"
            assert line.reason in item.detail and item.date == line.date, (where, item)
            assert (item.location in reported) == (item.date is None or START <= item.date <= END), where


# Found by this test: a volume written as int64's maximum reads as the float 2**63, which
# crashed the contract's cast to bigint (pyarrow ArrowInvalid) instead of quarantining it.
HUGE_VOLUME_REGRESSION = YahooFile(
    b"Date,Open,High,Low,Close,Volume\n2024-01-01,1.0,1.0,1.0,1.0,9223372036854775807\n",
    True,
    [Line("huge volume", START, (1.0, 1.0, 1.0, 1.0, 2.0**63), c.VOLUME_TOO_LARGE, 2)],
)

# Found by this test: the same bad line twice, or the same row twice, gave two quarantine
# rows with one quarantine_id, the table's primary key (DuckDB stored both under it).
_REPEATED_ROW = Line("duplicate", dt.date(2024, 1, 12), (1.0, 1.0, 0.5, 1.0, 7.0), c.DUPLICATE_KEY)
_REPEATED_BAD_DATE = Line("bad date", None, (), "Date ")
REPEATED_LINES_REGRESSION = YahooFile(
    b"Date,Open,High,Low,Close,Volume\n2024-01-12,1.0,1.0,0.5,1.0,7\n2024-01-12,1.0,1.0,0.5,1.0,7\n"
    b"2024-13-01,1.0,1.0,1.0,1.0,0\n2024-13-01,1.0,1.0,1.0,1.0,0\n",
    True,
    [
        replace(_REPEATED_ROW, number=2),
        replace(_REPEATED_ROW, number=3),
        replace(_REPEATED_BAD_DATE, number=4),
        replace(_REPEATED_BAD_DATE, number=5),
    ],
)


@PURE
@given(yahoo_files())
@example(HUGE_VOLUME_REGRESSION)
@example(REPEATED_LINES_REGRESSION)
def test_malformed_yahoo_files_load_good_lines_and_quarantine_or_reject_the_rest(file):
    outcome = feed("structured", file.content)
    assert (outcome is not None) == file.header_ok
    if outcome is not None:
        check_each_line_fate(file, outcome)


# --- through dlt into DuckDB ----------------------------------------------------------------


def stored(database: Path, sql: str):
    with duckdb.connect(str(database), read_only=True) as con:
        return con.execute(sql).fetch_arrow_table()


def stored_tables(database: Path) -> set[str]:
    if not database.exists():
        return set()
    found = stored(database, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'raw'")
    return set(found.column("table_name").to_pylist())


# Bytes DuckDB must store as they are: NUL and invalid UTF-8 in rejected lines, and the
# same bad line and the same duplicated row twice (two rows, two quarantine ids).
NASTY_LOAD = YahooFile(
    b"Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1,1\x002\n2024-01-02,1,2,0.5,1,1\x002\n"
    b"2024-01-03,1,2,0.5,1,10\n2024-01-04,1,2,0.5,1,10\r\n2024-01-04,1,2,0.5,1,10\r2024-01-05,\xff,2,0.5,1,10\n",
    True,
    [],
)


@pytest.mark.slow
@LOAD
@given(file=yahoo_files())
@example(file=NASTY_LOAD)
def test_loading_malformed_csv_stores_only_rows_obeying_the_contract(monkeypatch, file):
    EXAMPLES["dlt to duckdb"] += 1
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp).resolve()
        (root / "csv").mkdir()
        (root / "csv" / f"{TICKER}.csv").write_bytes(file.content)
        database = root / "fuzz.duckdb"
        pipeline = dlt.pipeline(
            pipeline_name="csv_fuzz",
            destination=dlt.destinations.duckdb(str(database)),
            dataset_name="raw",
            pipelines_dir=str(root / "dlt"),
        )
        fetched: list[PriceBatch] = []

        def fetch(tickers, start, end):
            fetched.append(make_csv_fetch(root / "csv")(tickers, start, end))
            return fetched[-1]

        def load():
            # The fetch and the contract run first and raise before dlt; only a batch
            # that passed them is handed to dlt.
            batch = fetch_batch(fetch, [TICKER], START, END, allow_partial=True, run_id="fuzz")
            pipeline.run(eod_prices_resource(batch))

        try:
            load()
        except FinancialEtlError as error:
            event(f"load failed: {type(error).__name__}")
            if isinstance(error, ConfigError):
                assert not file.header_ok and str(root / "csv" / f"{TICKER}.csv") in str(error)
            else:
                # A file with no row in the range: a missing ticker, naming the file.
                assert isinstance(error, MissingTickersError), repr(error)
                assert str(root / "csv" / f"{TICKER}.csv") in str(error)
                assert fetched[0].contract.valid.num_rows == 0 and fetched[0].contract.quarantined == 0
            assert not stored_tables(database) & {RAW_TABLE, QUARANTINE_TABLE}, "a failed load wrote rows"
            return
        assert file.header_ok
        contract = fetched[0].contract
        event("loaded with valid rows" if contract.valid.num_rows else "loaded only quarantine rows")
        raw = stored(database, f"SELECT ticker, date, {', '.join(PRICE_COLUMNS)}, volume FROM raw.{RAW_TABLE}")
        assert_raw_contract(raw)
        assert sorted(tuple(r.values()) for r in raw.to_pylist()) == sorted(
            tuple(r.values()) for r in contract.valid.to_pylist()
        )
        ids = stored(database, f"SELECT quarantine_id FROM raw.{QUARANTINE_TABLE}").column(0).to_pylist()
        assert len(ids) == len(set(ids)) == len(set(contract.quarantine.column("quarantine_id").to_pylist()))
        assert sorted(ids) == sorted(contract.quarantine.column("quarantine_id").to_pylist())
        load()  # the same file again adds nothing: valid rows merge, quarantine ids are known
        assert stored(database, f"SELECT count(*) FROM raw.{RAW_TABLE}").column(0)[0].as_py() == raw.num_rows
        assert stored(database, f"SELECT count(*) FROM raw.{QUARANTINE_TABLE}").column(0)[0].as_py() == len(ids)
