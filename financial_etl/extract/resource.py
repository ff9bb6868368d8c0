"""The dlt resource that loads raw.eod_prices_raw (and its quarantine) from any source.

A source is a plain function `fetch(tickers, start, end) -> PriceBatch` returning the rows
as fetched. `fetch_batch` passes them through the raw contract (`contract.py`) and makes
sure every requested ticker answered; the resource then hands dlt one Arrow table per
table: valid rows merged on (ticker, date) so a repeated load never duplicates a row,
broken rows inserted once into the quarantine.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import dlt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from financial_etl.calendar import trading_sessions
from financial_etl.errors import MissingTickersError, SourceUnavailableError, UnknownTickerError
from financial_etl.extract.contract import (
    PRICE_COLUMNS,
    QUARANTINE_COLUMN_HINTS,
    RAW_COLUMN_HINTS,
    ContractResult,
    Rejected,
    apply_contract,
)
from financial_etl.settings import validate_tickers
from financial_etl.warehouse import ACTIONS_TABLE, QUARANTINE_TABLE, RAW_KEY_COLUMNS, RAW_TABLE
from financial_etl.warehouse.engines import load_file_format

log = logging.getLogger(__name__)

# Why a ticker did not answer: retried and still failing, a symbol the source does not
# know, no rows for a known symbol, no rows in what the source holds (a CSV file read whole:
# asking again cannot help), or anything else.
TickerCause = Literal["transient", "unknown", "no_data", "absent", "error"]

# raw.corporate_actions: a day's dividend and split, and the factor the source multiplied
# every earlier price by for them (1 / split ratio, times 1 - dividend / previous close).
ACTION_COLUMNS = ("ticker", "date", "dividend", "split_ratio", "price_factor")
ACTIONS_SCHEMA = pa.schema(
    [
        pa.field("ticker", pa.string(), nullable=False),
        pa.field("date", pa.date32(), nullable=False),
        pa.field("dividend", pa.float64()),
        pa.field("split_ratio", pa.float64()),
        pa.field("price_factor", pa.float64()),
    ]
)
ACTION_COLUMN_HINTS = {
    "ticker": {"data_type": "text", "nullable": False},
    "date": {"data_type": "date", "nullable": False},
    **{col: {"data_type": "double"} for col in ("dividend", "split_ratio", "price_factor")},
}


@dataclass
class PriceBatch:
    """What a source fetched for one range, and, once the contract ran, what became of it."""

    frame: pd.DataFrame  # one row per (ticker, date) as fetched; gaps may be all-NaN rows
    source: str
    rejected: list[Rejected] = field(default_factory=list)  # input that never became a row
    ticker_errors: dict[str, str] = field(default_factory=dict)  # the source's word on a ticker
    ticker_causes: dict[str, TickerCause] = field(default_factory=dict)  # what each error means
    actions: pd.DataFrame | None = None  # ACTION_COLUMNS: the source's dividends and splits in the range
    synthetic: bool = False
    contract: ContractResult | None = None
    missing_tickers: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.contract.valid.num_rows if self.contract else 0

    def actions_table(self) -> pa.Table:
        """The batch's actions for its requested range and tickers, as raw.corporate_actions holds them."""
        frame = self.actions if self.actions is not None else pd.DataFrame(columns=list(ACTION_COLUMNS))
        return pa.Table.from_pandas(frame[list(ACTION_COLUMNS)], schema=ACTIONS_SCHEMA, preserve_index=False)


def with_history(batch: PriceBatch, history: PriceBatch, tickers: Sequence[str]) -> PriceBatch:
    """`batch` with the rows, actions and quarantine of `tickers` taken from `history`
    (their whole history, fetched again) instead."""
    assert batch.contract is not None and history.contract is not None
    replaced = pa.array(sorted(tickers), pa.string())

    def others(table: pa.Table) -> pa.Table:
        return table.filter(pc.invert(pc.fill_null(pc.is_in(table.column("ticker"), value_set=replaced), False)))

    contract = ContractResult(
        valid=pa.concat_tables([others(batch.contract.valid), history.contract.valid]),
        quarantine=pa.concat_tables([others(batch.contract.quarantine), history.contract.quarantine]),
        untraded=batch.contract.untraded + history.contract.untraded,
        warned={
            k: batch.contract.warned.get(k, 0) + history.contract.warned.get(k, 0)
            for k in {*batch.contract.warned, *history.contract.warned}
        },
        not_kept={
            **{key: n for key, n in batch.contract.not_kept.items() if key[0] not in tickers},
            **history.contract.not_kept,
        },
    )
    actions = pa.concat_tables([others(batch.actions_table()), history.actions_table()]).to_pandas()
    return PriceBatch(
        frame=batch.frame,
        source=batch.source,
        rejected=batch.rejected + history.rejected,
        ticker_errors={**batch.ticker_errors, **history.ticker_errors},
        ticker_causes={**batch.ticker_causes, **history.ticker_causes},
        actions=actions,
        synthetic=batch.synthetic,
        contract=contract,
        missing_tickers=sorted({*batch.missing_tickers, *history.missing_tickers}),
    )


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


def answered(contract: ContractResult) -> set[str]:
    """The tickers with a row in the batch, loaded or quarantined."""
    found = set(pc.unique(contract.valid.column("ticker")).to_pylist())
    return found | {t for t in pc.unique(contract.quarantine.column("ticker")).to_pylist() if t}


def require_answers(
    batch: PriceBatch, tickers: Sequence[str], start: dt.date, end: dt.date, allow_partial: bool
) -> None:
    """Every ticker must answer for a range with NYSE sessions; none is expected otherwise."""
    assert batch.contract is not None
    batch.missing_tickers = missing_answers(
        answered(batch.contract),
        tickers,
        start,
        end,
        allow_partial,
        batch.source,
        batch.ticker_errors,
        batch.ticker_causes,
    )


def missing_answers(
    found: set[str],
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    allow_partial: bool,
    source: str,
    ticker_errors: dict[str, str],
    ticker_causes: dict[str, TickerCause],
) -> list[str]:
    """The requested tickers that did not answer (`found` holds those that did), when
    partial loads allow it; else the error that names them."""
    sessions = trading_sessions(start, end)
    missing = [t for t in tickers if t not in found] if sessions else []
    if not missing:
        return missing
    why = "; ".join(f"{t}: {ticker_errors.get(t, 'no rows')}" for t in missing)
    span = f"{start} to {end} ({len(sessions)} NYSE session{'s' if len(sessions) > 1 else ''})"
    causes = {t: ticker_causes.get(t, "no_data") for t in missing}
    transient = [t for t, cause in causes.items() if cause == "transient"]
    unknown = [t for t, cause in causes.items() if cause == "unknown"]
    if transient and not allow_partial:
        raise SourceUnavailableError(
            f"the {source} source kept failing with transient errors for {', '.join(transient)} "
            f"for {span} ({why}); nothing was loaded. Run again later"
        )
    if len(missing) == len(tickers) and len(unknown) < len(tickers):
        # Nothing at all: a source that is down, unless it holds no rows (then even a partial load has none).
        error = MissingTickersError if set(causes.values()) <= {"unknown", "absent"} else SourceUnavailableError
        raise error(f"the {source} source returned no rows for any of the {len(tickers)} tickers for {span}: {why}")
    if not allow_partial and unknown:
        raise UnknownTickerError(
            f"the {source} source does not know {', '.join(unknown)} ({why}); nothing was loaded. "
            "Fix or remove the symbol in the ticker list, or set FINANCIAL_ETL_ALLOW_PARTIAL_LOADS=true "
            "to load the other tickers"
        )
    if not allow_partial:
        raise MissingTickersError(
            f"the {source} source returned no rows for {', '.join(missing)} for {span} ({why}); "
            "nothing was loaded. Fix or remove the symbol, or set FINANCIAL_ETL_ALLOW_PARTIAL_LOADS=true "
            "to load the other tickers"
        )
    log.warning("loading without %s (FINANCIAL_ETL_ALLOW_PARTIAL_LOADS): %s", ", ".join(missing), why)
    return missing


def fetch_batch(
    fetch: Fetch,
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    allow_partial: bool = False,
    run_id: str | None = None,
) -> PriceBatch:
    """Fetch [start, end] for `tickers` and pass the rows through the raw contract; raises
    before anything is written when a ticker did not answer (see `require_answers`)."""
    batch = fetch_checked(fetch, tickers, start, end, run_id)
    require_answers(batch, tickers, start, end, allow_partial)
    return batch


def fetch_checked(
    fetch: Fetch, tickers: Sequence[str], start: dt.date, end: dt.date, run_id: str | None = None
) -> PriceBatch:
    """Fetch [start, end] for `tickers` and pass the rows through the raw contract, without
    the missing-ticker rule (a chunked extract applies it over all its groups)."""
    validate_tickers(tickers)
    batch = fetch(tickers, start, end)
    batch.contract = apply_contract(batch.frame, start, end, tickers, batch.source, batch.rejected, run_id)
    return batch


def empty_batch(source: str) -> PriceBatch:
    """A batch with no rows: what the asset definition is built from (dagster-dlt reads
    only the resource's name and hints from it)."""
    batch = PriceBatch(frame=pd.DataFrame(), source=source)
    batch.contract = apply_contract(batch.frame, dt.date.min, dt.date.min, (), source)
    return batch


# One load's tables, as the contract split them: (raw rows, corporate actions, quarantine).
RawTables = tuple[pa.Table, pa.Table, pa.Table]


def eod_prices_resource(batch: PriceBatch, replace_tickers: bool = False, file_format: str | None = None):
    """The dlt resource for raw.eod_prices_raw, over a batch the contract has split (see
    `raw_tables_resource`)."""
    contract = batch.contract
    if contract is None:
        raise ValueError("eod_prices_resource needs a batch from fetch_batch (the contract has not run)")
    tables = (contract.valid, batch.actions_table(), contract.quarantine)
    return raw_tables_resource(
        lambda: iter([tables]),
        tuple(t.num_rows for t in tables),
        replace_tickers=replace_tickers,
        file_format=file_format,
    )


def raw_tables_resource(
    parts: Callable[[], Iterator[RawTables]],
    rows: tuple[int, int, int],
    replace_tickers: bool = False,
    file_format: str | None = None,
):
    """The dlt resource for raw.eod_prices_raw and its two side tables, over `parts()`: the
    tables of one batch, or of each group of a chunked extract (`rows` counts each table's
    rows over all parts).

    Rows merge on (ticker, date). With `replace_tickers`, the merge key is the ticker, so
    dlt first deletes every stored row of each loaded ticker: a restated history leaves
    no stale row behind. Quarantined rows go to raw.eod_prices_quarantine, keyed by a hash
    of the bad input, so re-reading the same bad line never adds it twice.

    `file_format` is dlt's loader file format for a table that has rows (PostgreSQL:
    parquet, loaded through ADBC; see load_file_format)."""
    valid_rows, action_rows, quarantine_rows = rows
    hints = (
        dlt.mark.make_hints(table_name=RAW_TABLE, columns=RAW_COLUMN_HINTS),
        dlt.mark.make_hints(
            table_name=ACTIONS_TABLE,
            write_disposition={"disposition": "merge", "strategy": "delete-insert"},
            primary_key=RAW_KEY_COLUMNS,
            merge_key=(),
            columns=ACTION_COLUMN_HINTS,
            file_format=load_file_format(file_format, action_rows),
        ),
        dlt.mark.make_hints(
            table_name=QUARANTINE_TABLE,
            write_disposition={"disposition": "merge", "strategy": "insert-only"},
            primary_key="quarantine_id",
            merge_key=(),
            columns=QUARANTINE_COLUMN_HINTS,
            file_format=load_file_format(file_format, quarantine_rows),
        ),
    )

    @dlt.resource(
        name=RAW_TABLE,
        table_name=RAW_TABLE,
        primary_key=RAW_KEY_COLUMNS,
        merge_key="ticker" if replace_tickers else (),
        # The contract quarantines every copy of a duplicated (ticker, date), so dlt can
        # skip its own ROW_NUMBER() de-duplication of the staged rows (half the merge time).
        write_disposition={"disposition": "merge", "strategy": "delete-insert", "deduplicated": True},
        file_format=load_file_format(file_format, valid_rows),
    )
    def eod_prices_raw() -> Iterator[pa.Table]:
        # Each table's columns are its own variant's: the resource's would be merged into
        # the other tables.
        empty: list[pa.Table | None] = [None, None, None]
        for tables in parts():
            for i, (table, hint) in enumerate(zip(tables, hints, strict=True)):
                if table.num_rows:
                    yield dlt.mark.with_hints(table, hint, create_table_variant=True)
                else:
                    empty[i] = table
        # A table without rows still goes once, with its schema, so a first run on a
        # holiday creates every table (empty) and the transform and checks find them.
        for table, hint, total in zip(empty, hints, rows, strict=True):
            if table is not None and not total:
                yield dlt.mark.with_hints(table, hint, create_table_variant=True)

    return eod_prices_raw
