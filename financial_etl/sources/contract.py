"""The raw contract: which fetched rows may enter raw.eod_prices_raw, and why others can't.

Every source's rows pass through `apply_contract` before dlt sees them. A row that breaks
a quarantine rule goes to raw.eod_prices_quarantine with every rule it breaks; the other
rows load. Rules that only warn let the row load and are counted, because real vendor
data breaks them (Yahoo's adjusted open can sit a cent above its high). The README's
"Raw contract" table lists the rules; the names here are the reasons operators see.

Checks run on Arrow columns, so the cost stays a few vectorized passes over the batch.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

RAW_TABLE = "eod_prices_raw"
QUARANTINE_TABLE = "eod_prices_quarantine"
RAW_DATASET = "raw"
PRICE_COLUMNS = ("open_price", "high_price", "low_price", "close_price")

_PRICES = [pa.field(col, pa.float64()) for col in PRICE_COLUMNS]
RAW_SCHEMA = pa.schema(
    [pa.field("ticker", pa.string(), nullable=False), pa.field("date", pa.date32(), nullable=False),
     *_PRICES, pa.field("volume", pa.int64())]
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

# Quarantine rules: (reason, what it means), in the order reasons are listed on a row.
MISSING_KEY = "missing ticker or date"
MISSING_PRICE = "missing price"
NON_FINITE = "infinite value"
NON_POSITIVE_PRICE = "price not above zero"
HIGH_BELOW_LOW = "high below low"
MISSING_VOLUME = "missing volume"
NEGATIVE_VOLUME = "negative volume"
FRACTIONAL_VOLUME = "fractional volume"
VOLUME_TOO_LARGE = "volume too large"  # 2**63 or more does not fit the bigint column
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
    **{col: {"data_type": "double", "nullable": True} for col in (*PRICE_COLUMNS, "volume")},
    "reason": {"data_type": "text", "nullable": False},
    "source": {"data_type": "text", "nullable": False},
    "location": {"data_type": "text", "nullable": True},
    "raw_line": {"data_type": "text", "nullable": True},
    "run_id": {"data_type": "text", "nullable": True},
    "first_seen_at": {"data_type": "timestamp", "nullable": True},
}

RAW_LINE_LIMIT = 500


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

    @property
    def quarantined(self) -> int:
        return self.quarantine.num_rows

    def reasons(self) -> dict[str, int]:
        """Quarantined rows per rule (a row breaking two rules counts for both)."""
        counts: dict[str, int] = {}
        for text in self.quarantine.column("reason").to_pylist():
            for reason in text.split("; "):
                rule = reason.split(":", 1)[0]
                counts[rule] = counts.get(rule, 0) + 1
        return dict(sorted(counts.items()))


def fetched_table(frame: pd.DataFrame) -> pa.Table:
    """A source's long frame as Arrow, before the contract (volume still float)."""
    columns = {name: frame[name] for name in FETCHED_SCHEMA.names}
    columns["volume"] = frame["volume"].astype("float64")
    return pa.Table.from_pandas(pd.DataFrame(columns), schema=FETCHED_SCHEMA, preserve_index=False)


def _fill(mask) -> np.ndarray:
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), dtype=bool)


def _sorted_by_key(table: pa.Table) -> pa.Table:
    """Sort by (ticker, date) unless it already is: the duplicate rule compares neighbours."""
    if table.num_rows < 2:
        return table
    ticker, date = table.column("ticker"), table.column("date")
    t0, t1 = ticker.slice(0, table.num_rows - 1), ticker.slice(1)
    d0, d1 = date.slice(0, table.num_rows - 1), date.slice(1)
    ordered = pc.or_(pc.less(t0, t1), pc.and_(pc.equal(t0, t1), pc.less_equal(d0, d1)))
    if _fill(ordered).all():
        return table
    return table.sort_by([("ticker", "ascending"), ("date", "ascending")])


def _duplicate_mask(table: pa.Table) -> np.ndarray:
    n = table.num_rows
    if n < 2:
        return np.zeros(n, dtype=bool)
    ticker, date = table.column("ticker"), table.column("date")
    same = _fill(pc.and_(pc.equal(ticker.slice(0, n - 1), ticker.slice(1)), pc.equal(date.slice(0, n - 1), date.slice(1))))
    dup = np.zeros(n, dtype=bool)
    dup[:-1] |= same
    dup[1:] |= same
    return dup


def _column(table: pa.Table, name: str) -> np.ndarray:
    return np.asarray(table.column(name).to_numpy(), dtype="float64")


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
    table = _sorted_by_key(fetched_table(frame)) if len(frame) else FETCHED_SCHEMA.empty_table()
    prices = {name: _column(table, name) for name in PRICE_COLUMNS}
    volume = _column(table, "volume")
    price_matrix = np.column_stack(list(prices.values())) if table.num_rows else np.empty((0, 4))
    missing_price = np.isnan(price_matrix)
    untraded = missing_price.all(axis=1) & np.isnan(volume)

    with np.errstate(invalid="ignore"):
        rules = {
            MISSING_KEY: _fill(pc.or_(pc.is_null(table.column("ticker")), pc.is_null(table.column("date")))),
            MISSING_PRICE: missing_price.any(axis=1),
            NON_FINITE: np.isinf(price_matrix).any(axis=1) | np.isinf(volume),
            NON_POSITIVE_PRICE: (price_matrix <= 0).any(axis=1),
            HIGH_BELOW_LOW: prices["high_price"] < prices["low_price"],
            MISSING_VOLUME: np.isnan(volume),
            NEGATIVE_VOLUME: volume < 0,
            FRACTIONAL_VOLUME: np.isfinite(volume) & (volume != np.round(volume)),
            VOLUME_TOO_LARGE: np.isfinite(volume) & (volume >= 2.0**63),
            DUPLICATE_KEY: _duplicate_mask(table),
            OUTSIDE_RANGE: _fill(
                pc.or_(pc.less(table.column("date"), pa.scalar(start, pa.date32())),
                       pc.greater(table.column("date"), pa.scalar(end, pa.date32())))
            ),
            UNREQUESTED_TICKER: ~_fill(pc.is_in(table.column("ticker"), value_set=pa.array(list(tickers), pa.string()))),
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
    quarantine = _quarantine_rows(table, bad, rules, source, rejected, run_id)
    return ContractResult(
        valid=valid,
        quarantine=quarantine,
        untraded=int(untraded.sum()),
        warned={OPEN_CLOSE_OUTSIDE_HIGH_LOW: warned} if warned else {},
    )


def _quarantine_rows(table, bad, rules, source, rejected, run_id) -> pa.Table:
    rows = table.filter(pa.array(bad)).to_pylist()
    indices = np.flatnonzero(bad)
    now = dt.datetime.now(dt.timezone.utc)
    for row, index in zip(rows, indices):
        row["reason"] = "; ".join(reason for reason, mask in rules.items() if mask[index])
        row.update(source=source, location=None, raw_line=None)
    for item in rejected:
        rows.append(
            {"ticker": item.ticker, "date": item.date, **{c: None for c in (*PRICE_COLUMNS, "volume")},
             "reason": f"{UNPARSEABLE}: {item.detail}", "source": source, "location": item.location,
             "raw_line": item.raw_line[:RAW_LINE_LIMIT]}
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
    parts = [row["source"], row["ticker"], row["date"], *(row[c] for c in (*PRICE_COLUMNS, "volume")),
             row["reason"], row["raw_line"]]
    first = hashlib.sha1("\x1f".join(repr(p) for p in parts).encode()).hexdigest()
    if copies is None:
        return first
    copy = copies[first] = copies.get(first, -1) + 1
    return first if not copy else hashlib.sha1(f"{first}\x1f{copy}".encode()).hexdigest()
