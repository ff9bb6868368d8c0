"""The raw contract: which fetched rows may enter raw.eod_prices_raw, and why others can't.

Every source's rows pass through `apply_contract` before dlt sees them. A row that breaks
a quarantine rule goes to raw.eod_prices_quarantine with every rule it breaks; the other
rows load. Rules that only warn let the row load and are counted, because real vendor
data breaks them (Yahoo's adjusted open can sit a cent above its high). The rule table in
docs/data-contract.md lists the rules; the names here are the reasons operators see. The
quarantine stores at most QUARANTINE_KEEP rows per ticker and reason of a batch and counts
the rest.

Checks run on Arrow columns, so the cost stays a few vectorized passes over the batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

PRICE_COLUMNS = ("open_price", "high_price", "low_price", "close_price")
VALUE_COLUMNS = (*PRICE_COLUMNS, "volume")  # what a source says about one (ticker, date)

_PRICES = [pa.field(col, pa.float64()) for col in PRICE_COLUMNS]
RAW_SCHEMA = pa.schema(
    [
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        *_PRICES,
        pa.field("volume", pa.int64()),
    ]
)
# What a fetched frame holds before the contract: any value may be missing, volume a float.
FETCHED_SCHEMA = pa.schema(
    [pa.field("ticker", pa.string()), pa.field("date", pa.date32()), *_PRICES, pa.field("volume", pa.float64())]
)

RAW_COLUMN_HINTS = {
    "ticker": {"data_type": "text", "nullable": False},
    "date": {"data_type": "date", "nullable": False},
    **{col: {"data_type": "double"} for col in PRICE_COLUMNS},
    "volume": {"data_type": "bigint"},
}

# Plausibility bounds (docs/data-contract.md says why these numbers): wider than any real
# split-adjusted price or volume, narrow enough that every indicator the mart computes from
# them is finite (a close of 1e308 overflowed STDDEV_POP; one of 1e-320 made an infinite return).
MIN_PRICE = 1e-6
MAX_PRICE = 1e18
MAX_VOLUME = 1e15  # 6,500 sessions of it still sum below 2**63, on every engine

# Quarantine rules: (reason, what it means), in the order reasons are listed on a row.
MISSING_KEY = "missing ticker or date"
MISSING_PRICE = "missing price"
NON_FINITE = "infinite value"
NON_POSITIVE_PRICE = "price not above zero"
PRICE_TOO_SMALL = "price too small"  # above zero, below MIN_PRICE
PRICE_TOO_LARGE = "price too large"  # finite, above MAX_PRICE
HIGH_BELOW_LOW = "high below low"
MISSING_VOLUME = "missing volume"
NEGATIVE_VOLUME = "negative volume"
FRACTIONAL_VOLUME = "fractional volume"
VOLUME_TOO_LARGE = "volume too large"  # finite, above MAX_VOLUME
DUPLICATE_KEY = "duplicate (ticker, date) in one batch"
OUTSIDE_RANGE = "date outside the requested range"
UNREQUESTED_TICKER = "ticker not requested"
UNPARSEABLE = "unparseable line"
# Warn-only rule: the row loads and is counted.
OPEN_CLOSE_OUTSIDE_HIGH_LOW = "open or close outside high-low"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("quarantine_id", pa.string(), nullable=False),
        *FETCHED_SCHEMA,
        pa.field("reason", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("location", pa.string()),
        pa.field("raw_line", pa.string()),
        pa.field("run_id", pa.string()),
        pa.field("first_seen_at", pa.timestamp("us", tz="UTC")),
    ]
)

QUARANTINE_COLUMN_HINTS = {
    "quarantine_id": {"data_type": "text", "nullable": False},
    "ticker": {"data_type": "text", "nullable": True},
    "date": {"data_type": "date", "nullable": True},
    **{col: {"data_type": "double", "nullable": True} for col in VALUE_COLUMNS},
    "reason": {"data_type": "text", "nullable": False},
    "source": {"data_type": "text", "nullable": False},
    "location": {"data_type": "text", "nullable": True},
    "raw_line": {"data_type": "text", "nullable": True},
    "run_id": {"data_type": "text", "nullable": True},
    "first_seen_at": {"data_type": "timestamp", "nullable": True},
}

RAW_LINE_LIMIT = 500
# Quarantine rows kept per ticker and reason in one batch; the rest are counted, not stored
# (a file's 869,589 duplicated rows are one fault, not 869,589 records to keep).
QUARANTINE_KEEP = 1_000
EPOCH = dt.date(1970, 1, 1)


@dataclass
class Rejected:
    """Input a source could not turn into a row at all (an unparseable CSV line)."""

    ticker: str
    location: str
    raw_line: str
    detail: str
    date: dt.date | None = None


@dataclass
class ContractResult:
    valid: pa.Table  # the raw schema, volume int64
    quarantine: pa.Table  # QUARANTINE_SCHEMA
    untraded: int = 0  # rows with no price and no volume at all: no trade, dropped
    warned: dict[str, int] = field(default_factory=dict)  # warn-only rule -> rows loaded anyway
    # (ticker, reason) -> bad rows beyond QUARANTINE_KEEP, quarantined but not stored
    not_kept: dict[tuple[str | None, str], int] = field(default_factory=dict)

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    @property
    def not_kept_rows(self) -> int:
        return sum(self.not_kept.values())

    def reasons(self) -> dict[str, int]:
        """Quarantined rows per rule (a row breaking two rules counts for both)."""
        return count_rules(self.quarantine.column("reason").to_pylist())


def count_rules(reasons: Iterable[str]) -> dict[str, int]:
    """Rows per rule from quarantine `reason` texts ("rule; rule: detail"), by rule name."""
    counts: dict[str, int] = {}
    for text in reasons:
        for reason in text.split("; "):
            rule = reason.split(":", 1)[0]
            counts[rule] = counts.get(rule, 0) + 1
    return dict(sorted(counts.items()))


def fetched_table(frame: pd.DataFrame) -> pa.Table:
    """A source's long frame as Arrow, before the contract (volume still float).
    Column by column: building an intermediate DataFrame copied every value once more."""
    arrays = [
        pa.array(
            frame[name].to_numpy(dtype="float64") if name == "volume" else frame[name],
            type=field.type,
            from_pandas=True,
        )
        for name, field in zip(FETCHED_SCHEMA.names, FETCHED_SCHEMA, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=FETCHED_SCHEMA)


@dataclass
class _Keys:
    """(ticker, date) as integers: a ticker run's number and the date's day number
    (INT_MIN where missing). Sources hand over rows grouped by ticker, so the tickers are
    compared as strings only where they change, not on every row."""

    codes: np.ndarray  # run number: consecutive rows with the same ticker share it
    names: list[str | None]  # the ticker of each run
    missing_ticker: np.ndarray
    days: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> _Keys:
        ticker = table.column("ticker")
        n = table.num_rows
        missing = np.asarray(pc.is_null(ticker).to_numpy(zero_copy_only=False), dtype=bool)
        filled = pc.fill_null(ticker, "")
        changes = np.zeros(n, dtype=bool)
        if n > 1:
            changes[1:] = np.asarray(
                pc.not_equal(filled.slice(0, n - 1), filled.slice(1)).to_numpy(zero_copy_only=False), dtype=bool
            ) | (missing[1:] != missing[:-1])
        if n:
            changes[0] = True
        starts = np.flatnonzero(changes)
        names = pc.take(ticker, pa.array(starts)).to_pylist() if n else []
        days = pc.fill_null(pc.cast(table.column("date"), pa.int32()), np.iinfo(np.int32).min)
        codes = np.cumsum(changes) - 1
        return cls(codes, names, missing, np.asarray(days.to_numpy(), dtype=np.int64))

    def is_sorted(self) -> bool:
        """Each ticker in one run, runs in ticker order, dates ascending within a run."""
        if any(name is None for name in self.names):
            return False
        if any(a >= b for a, b in zip(self.names, self.names[1:], strict=False)):
            return False
        same_run = np.diff(self.codes) == 0
        return bool((np.diff(self.days)[same_run] >= 0).all())

    def duplicated(self) -> np.ndarray:
        """Every row whose (ticker, date) its neighbour shares: all copies (sorted keys)."""
        n = len(self.codes)
        dup = np.zeros(n, dtype=bool)
        if n < 2:
            return dup
        same = (self.codes[1:] == self.codes[:-1]) & (self.days[1:] == self.days[:-1]) & ~self.missing_ticker[1:]
        dup[:-1] |= same
        dup[1:] |= same
        return dup

    def requested(self, tickers: Sequence[str]) -> np.ndarray:
        wanted = set(tickers)
        return (
            np.array([name in wanted for name in self.names], dtype=bool)[self.codes]
            if self.names
            else np.zeros(0, dtype=bool)
        )


def _sorted_by_key(table: pa.Table) -> tuple[pa.Table, _Keys]:
    """Sort by (ticker, date) unless it already is: the duplicate rule compares neighbours."""
    keys = _Keys.of(table)
    if keys.is_sorted():
        return table, keys
    table = table.sort_by([("ticker", "ascending"), ("date", "ascending")])
    return table, _Keys.of(table)


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype="float64")


def _price_rules(prices: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """The rules on the four prices. One pass per column finds the rows with a price missing,
    infinite or out of bounds (NaN fails both comparisons); each rule looks at those only."""
    plausible = np.logical_and.reduce([(v >= MIN_PRICE) & (v <= MAX_PRICE) for v in prices.values()])
    suspect = np.flatnonzero(~plausible)
    suspects = {name: values[suspect] for name, values in prices.items()}

    def any_price(test) -> np.ndarray:
        mask = np.zeros(n, dtype=bool)
        if len(suspect):
            mask[suspect] = np.logical_or.reduce([test(values) for values in suspects.values()])
        return mask

    return {
        MISSING_PRICE: any_price(np.isnan),
        NON_FINITE: any_price(np.isinf),
        NON_POSITIVE_PRICE: any_price(lambda values: values <= 0),
        PRICE_TOO_SMALL: any_price(lambda values: (values > 0) & (values < MIN_PRICE)),
        PRICE_TOO_LARGE: any_price(lambda values: np.isfinite(values) & (values > MAX_PRICE)),
    }


def apply_contract(
    frame: pd.DataFrame,
    start: dt.date,
    end: dt.date,
    tickers: Sequence[str],
    source: str,
    rejected: Sequence[Rejected] = (),
    run_id: str | None = None,
) -> ContractResult:
    """Split a fetched batch into rows that load and rows that go to quarantine."""
    table, keys = _sorted_by_key(fetched_table(frame) if len(frame) else FETCHED_SCHEMA.empty_table())
    prices = {name: _column(table, name) for name in PRICE_COLUMNS}
    volume = _column(table, "volume")
    untraded = np.logical_and.reduce([np.isnan(values) for values in prices.values()]) & np.isnan(volume)

    with np.errstate(invalid="ignore"):
        price_rules = _price_rules(prices, table.num_rows)
        rules = {
            MISSING_KEY: keys.missing_ticker | (keys.days == np.iinfo(np.int32).min),
            **price_rules,
            NON_FINITE: price_rules[NON_FINITE] | np.isinf(volume),
            HIGH_BELOW_LOW: prices["high_price"] < prices["low_price"],
            MISSING_VOLUME: np.isnan(volume),
            NEGATIVE_VOLUME: volume < 0,
            FRACTIONAL_VOLUME: np.isfinite(volume) & (volume != np.round(volume)),
            VOLUME_TOO_LARGE: np.isfinite(volume) & (volume > MAX_VOLUME),
            DUPLICATE_KEY: keys.duplicated(),
            OUTSIDE_RANGE: (keys.days != np.iinfo(np.int32).min)
            & ((keys.days < (start - EPOCH).days) | (keys.days > (end - EPOCH).days)),
            UNREQUESTED_TICKER: ~keys.requested(tickers),
        }
        low_close = np.fmin(prices["open_price"], prices["close_price"])
        high_close = np.fmax(prices["open_price"], prices["close_price"])
        warn_only = (prices["high_price"] < high_close) | (prices["low_price"] > low_close)
    bad = np.zeros(table.num_rows, dtype=bool)
    for mask in rules.values():
        bad |= mask
    bad &= ~untraded  # a session with no trade at all is a gap, not bad data

    valid = table.filter(pa.array(~bad & ~untraded)).cast(RAW_SCHEMA)
    warned = int((warn_only & ~bad & ~untraded).sum())
    kept, not_kept = _kept_rows(keys, bad, rules)
    rejected, not_kept_lines = _kept_lines(rejected)
    quarantine = _quarantine_rows(table, kept, rules, source, rejected, run_id)
    return ContractResult(
        valid=valid,
        quarantine=quarantine,
        untraded=int(untraded.sum()),
        warned={OPEN_CLOSE_OUTSIDE_HIGH_LOW: warned} if warned else {},
        not_kept={**not_kept, **not_kept_lines},
    )


def _kept_rows(keys: _Keys, bad: np.ndarray, rules: dict[str, np.ndarray]) -> tuple[np.ndarray, dict]:
    """The bad rows to store: the first QUARANTINE_KEEP of each (ticker, reason) in (ticker,
    date) order, so re-reading the same input keeps the same rows. And the count of the rest."""
    indices = np.flatnonzero(bad)
    if len(indices) <= QUARANTINE_KEEP:
        return indices, {}
    reasons = np.zeros(len(indices), dtype=np.int64)  # a bit per rule broken
    for bit, mask in enumerate(rules.values()):
        reasons |= mask[indices].astype(np.int64) << bit
    group = (keys.codes[indices].astype(np.int64) << len(rules)) | reasons
    order = np.argsort(group, kind="stable")
    ordered = group[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    sizes = np.diff(np.r_[starts, len(ordered)])
    rank = np.empty(len(indices), dtype=np.int64)
    rank[order] = np.arange(len(ordered)) - np.repeat(starts, sizes)
    names = list(rules)
    not_kept = {}
    for start, size in zip(starts[sizes > QUARANTINE_KEEP], sizes[sizes > QUARANTINE_KEEP], strict=True):
        code, bits = divmod(int(ordered[start]), 1 << len(rules))
        reason = "; ".join(name for bit, name in enumerate(names) if bits >> bit & 1)
        not_kept[(keys.names[code], reason)] = int(size) - QUARANTINE_KEEP
    return indices[rank < QUARANTINE_KEEP], not_kept


def _kept_lines(rejected: Sequence[Rejected]) -> tuple[list[Rejected], dict[tuple[str | None, str], int]]:
    """The first QUARANTINE_KEEP unparseable lines of each ticker, and the count of the rest."""
    seen: dict[str, int] = {}
    kept = []
    for item in rejected:
        seen[item.ticker] = seen.get(item.ticker, 0) + 1
        if seen[item.ticker] <= QUARANTINE_KEEP:
            kept.append(item)
    return kept, {(ticker, UNPARSEABLE): n - QUARANTINE_KEEP for ticker, n in seen.items() if n > QUARANTINE_KEEP}


def _quarantine_rows(table, indices, rules, source, rejected, run_id) -> pa.Table:
    rows = table.take(pa.array(indices, pa.int64())).to_pylist()
    now = dt.datetime.now(dt.UTC)
    for row, index in zip(rows, indices, strict=True):
        row["reason"] = "; ".join(reason for reason, mask in rules.items() if mask[index])
        row.update(source=source, location=None, raw_line=None)
    for item in rejected:
        rows.append(
            {
                "ticker": item.ticker,
                "date": item.date,
                **{c: None for c in VALUE_COLUMNS},
                "reason": f"{UNPARSEABLE}: {item.detail}",
                "source": source,
                "location": item.location,
                "raw_line": item.raw_line[:RAW_LINE_LIMIT],
            }
        )
    copies: dict[str, int] = {}
    for row in rows:
        row["quarantine_id"] = quarantine_id(row, copies)
        row["run_id"] = run_id
        row["first_seen_at"] = now
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA) if rows else QUARANTINE_SCHEMA.empty_table()


def quarantine_id(row: dict, copies: dict[str, int] | None = None) -> str:
    """Stable for the same bad input, so re-reading it never adds a second quarantine row.

    The location (a CSV line number) is left out: inserting a line above must not make
    every later bad line look new. The same input twice in one batch (Yahoo's doubled last
    row, a repeated CSV line) is two rows: with `copies` (counts per id so far in the batch)
    the nth copy's id also hashes n, so the id stays the table's unique primary key."""
    parts = [
        row["source"],
        row["ticker"],
        row["date"],
        *(row[c] for c in VALUE_COLUMNS),
        row["reason"],
        row["raw_line"],
    ]
    first = hashlib.sha1("\x1f".join(repr(p) for p in parts).encode()).hexdigest()
    if copies is None:
        return first
    copy = copies[first] = copies.get(first, -1) + 1
    return first if not copy else hashlib.sha1(f"{first}\x1f{copy}".encode()).hexdigest()
