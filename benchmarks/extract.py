"""Extract stage: a source frame -> raw.eod_prices_raw in DuckDB through dlt, by the
project's bulk resource (one Arrow table) and by the seed's per-row dict generator
(`yfinance_eod_prices`: `iterrows()` over each ticker, one dict per row), same frame."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dlt
import duckdb
import pandas as pd

from benchmarks.clock import Clock
from financial_etl.extract.resource import PriceBatch, eod_prices_resource, fetch_batch
from financial_etl.warehouse import RAW, RAW_DATASET, RAW_TABLE
from financial_etl.warehouse.dlt_settings import pipeline_settings

# The seed's yf.download columns and the raw columns they become.
YAHOO_COLUMNS = {
    "Open": "open_price",
    "High": "high_price",
    "Low": "low_price",
    "Close": "close_price",
    "Volume": "volume",
}


def yahoo_layout(frame: pd.DataFrame) -> pd.DataFrame:
    """The long frame in the shape `yf.download` hands the seed: a Timestamp index and
    (Price, Ticker) columns."""
    named = frame.rename(columns={raw: yahoo for yahoo, raw in YAHOO_COLUMNS.items()})
    wide = named.pivot(index="date", columns="ticker", values=list(YAHOO_COLUMNS))
    wide.columns = wide.columns.set_names(["Price", "Ticker"])
    wide.index = pd.DatetimeIndex(pd.to_datetime(wide.index), name="Date")
    return wide


# The seed's resource (seed 000, `yfinance_eod_prices`), with `yf.download` replaced by
# the frame it would have returned.
@dlt.resource(
    table_name=RAW_TABLE,
    write_disposition="replace",
    columns={
        "ticker": {"data_type": "text"},
        "date": {"data_type": "date"},
        "open_price": {"data_type": "double"},
        "high_price": {"data_type": "double"},
        "low_price": {"data_type": "double"},
        "close_price": {"data_type": "double"},
        "volume": {"data_type": "bigint"},
    },
)
def seed_eod_prices(data: pd.DataFrame, tickers: list[str]):
    for ticker in tickers:
        ticker_data = data.xs(ticker, level=1, axis=1) if len(tickers) > 1 else data
        for date_idx, row in ticker_data.iterrows():
            if pd.notna(row["Close"]) and pd.notna(row["Volume"]):
                yield {
                    "ticker": ticker,
                    "date": date_idx.date(),
                    "open_price": float(row["Open"]),
                    "high_price": float(row["High"]),
                    "low_price": float(row["Low"]),
                    "close_price": float(row["Close"]),
                    "volume": int(row["Volume"]),
                }


def bulk_resource(frame: pd.DataFrame):
    """The project's resource, its fetch returning the frame a source produced. The raw
    contract runs here (in `fetch_batch`), so call this inside the timed section."""
    tickers = list(dict.fromkeys(frame["ticker"]))
    return eod_prices_resource(
        fetch_batch(
            lambda _tickers, _start, _end: PriceBatch(frame=frame, source="benchmark"),
            tickers,
            min(frame["date"]),
            max(frame["date"]),
        )
    )


def load(make_resource, workdir: Path, name: str) -> tuple[Clock, int]:
    """How long building the resource (for the project's, the raw contract) and dlt
    running it into a fresh DuckDB file take; rows landed."""
    db = workdir / f"{name}.duckdb"
    with pipeline_settings():  # the project's dlt settings, as the extract runs it
        pipeline = dlt.pipeline(
            pipeline_name=f"bench_{name}",
            destination=dlt.destinations.duckdb(str(db)),
            dataset_name=RAW_DATASET,
            pipelines_dir=str(workdir / ".dlt_pipelines"),
        )
        with Clock() as clock:
            pipeline.run(make_resource()).raise_on_failed_jobs()
    with duckdb.connect(str(db), read_only=True) as con:
        (rows,) = con.execute(f"SELECT count(*) FROM {RAW}").fetchone()
    return clock, int(rows)


def per_row_sample(frame: pd.DataFrame, min_rows: int) -> pd.DataFrame:
    """Whole tickers from the start of the frame, at least `min_rows` rows (or all)."""
    sizes = frame.groupby("ticker", sort=False).size()
    count = int((sizes.cumsum() < min_rows).sum()) + 1
    return frame[frame["ticker"].isin(set(sizes.index[:count]))]


def measure(frame: pd.DataFrame, workdir: Path | None = None, per_row_rows: int = 250_000) -> dict:
    """Bulk on the whole frame; per-row on whole tickers covering `per_row_rows` rows
    (the seed's cost is per row, so its rows/s on a sample is its rows/s on the frame)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_extract_"))
    bulk, bulk_rows = load(lambda: bulk_resource(frame), workdir, "bulk")
    sample = per_row_sample(frame, per_row_rows)
    wide = yahoo_layout(sample)  # what yf.download would have returned: not timed
    sample_tickers = list(dict.fromkeys(sample["ticker"]))
    per_row, per_row_rows_loaded = load(lambda: seed_eod_prices(wide, sample_tickers), workdir, "per_row")
    bulk_rate, per_row_rate = bulk_rows / bulk.wall, per_row_rows_loaded / per_row.wall
    return {
        "rows": len(frame),
        "bulk_rows": bulk_rows,
        "bulk_s": bulk.wall,
        "bulk_cpu_s": bulk.cpu,
        "bulk_rows_per_s": bulk_rate,
        "per_row_rows": per_row_rows_loaded,
        "per_row_s": per_row.wall,
        "per_row_cpu_s": per_row.cpu,
        "per_row_rows_per_s": per_row_rate,
        "bulk_vs_per_row": bulk_rate / per_row_rate,
    }
