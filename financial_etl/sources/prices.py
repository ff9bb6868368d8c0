"""The raw price contract shared by every source, and the dlt resource that loads it.

A source is a plain function `fetch(tickers, start, end) -> PriceBatch`. The resource
hands its frame to dlt as one Arrow table (bulk, never a dict per row), merged on
(ticker, date) so a repeated load never duplicates a row.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import dlt
import numpy as np
import pandas as pd
import pyarrow as pa

log = logging.getLogger(__name__)

RAW_TABLE = "eod_prices_raw"
RAW_DATASET = "raw"
PRICE_COLUMNS = ("open_price", "high_price", "low_price", "close_price")

RAW_SCHEMA = pa.schema(
    [
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        ("open_price", pa.float64()),
        ("high_price", pa.float64()),
        ("low_price", pa.float64()),
        ("close_price", pa.float64()),
        ("volume", pa.int64()),
    ]
)

RAW_COLUMN_HINTS = {
    "ticker": {"data_type": "text", "nullable": False},
    "date": {"data_type": "date", "nullable": False},
    "open_price": {"data_type": "double"},
    "high_price": {"data_type": "double"},
    "low_price": {"data_type": "double"},
    "close_price": {"data_type": "double"},
    "volume": {"data_type": "bigint"},
}


@dataclass
class PriceBatch:
    """What a source fetched for one range: the rows, and what an operator should know."""

    frame: pd.DataFrame
    source: str
    empty_tickers: list[str] = field(default_factory=list)
    dropped_rows: int = 0  # rows without a close or volume (no trade that day)
    synthetic: bool = False


Fetch = Callable[[Sequence[str], dt.date, dt.date], PriceBatch]


def to_raw_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Coerce a long frame to the raw columns and types, sorted by ticker and date."""
    out = pd.DataFrame(
        {
            "ticker": frame["ticker"].astype(str),
            "date": pd.to_datetime(frame["date"]).dt.date,
            **{col: frame[col].astype("float64") for col in PRICE_COLUMNS},
            "volume": frame["volume"].astype("float64"),
        }
    )
    return out.sort_values(["ticker", "date"], kind="stable").reset_index(drop=True)


def drop_untraded(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Drop rows with no close or no volume, as the seed does: no trade was recorded."""
    keep = frame["close_price"].notna() & frame["volume"].notna()
    kept = frame.loc[keep].copy()
    kept["volume"] = kept["volume"].astype(np.int64)
    return kept.reset_index(drop=True), int((~keep).sum())


def to_arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame[list(RAW_SCHEMA.names)], schema=RAW_SCHEMA, preserve_index=False)


def eod_prices_resource(
    fetch: Fetch,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    report: list[PriceBatch] | None = None,
    replace_tickers: bool = False,
):
    """The dlt resource for raw.eod_prices_raw; `report` receives the fetched batch.

    Rows merge on (ticker, date). With `replace_tickers`, the merge key is the ticker, so
    dlt first deletes every stored row of each loaded ticker: a restated history leaves
    no stale row behind."""

    @dlt.resource(
        name=RAW_TABLE,
        table_name=RAW_TABLE,
        primary_key=("ticker", "date"),
        merge_key="ticker" if replace_tickers else (),
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns=RAW_COLUMN_HINTS,
    )
    def eod_prices_raw() -> Iterator[pa.Table]:
        batch = fetch(tickers, start, end)
        in_range = batch.frame[(batch.frame["date"] >= start) & (batch.frame["date"] <= end)]
        batch.frame = in_range.reset_index(drop=True)
        if report is not None:
            report.append(batch)
        if batch.empty_tickers:
            log.warning("no rows for %s from the %s source", ", ".join(batch.empty_tickers), batch.source)
        # An empty table still carries the schema, so a first run on a holiday creates
        # raw.eod_prices_raw (empty) and the transform and checks find it.
        yield to_arrow(batch.frame) if len(batch.frame) else RAW_SCHEMA.empty_table()

    return eod_prices_raw
