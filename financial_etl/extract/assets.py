"""Extract stage: the chosen source -> raw.eod_prices_raw in the warehouse, through dagster-dlt.

The batch is fetched and split by the raw contract first (no warehouse lock is held while
a source answers), then dlt merges it into raw under the lock.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass

import dlt
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.pipeline.pipeline import Pipeline

from financial_etl.calendar import add_partition_row_counts, partition_counts_sql
from financial_etl.extract.actions import histories_to_reload
from financial_etl.extract.contract import QUARANTINE_KEEP, RAW_SCHEMA
from financial_etl.extract.resource import PriceBatch, empty_batch, eod_prices_resource, fetch_batch, with_history
from financial_etl.extract.sources import fetch_for
from financial_etl.runs import restated_tickers, run_dates, run_tickers
from financial_etl.settings import DEFAULT_OWNER, Settings
from financial_etl.warehouse import QUARANTINE, RAW, RAW_DATASET, RAW_KEY
from financial_etl.warehouse.engines import MissingTable, Warehouse
from financial_etl.warehouse.lake import publish_raw
from financial_etl.warehouse.lock import pipeline_folder_lock
from financial_etl.warehouse.storage import check_writable, storage_errors

EXTRACT_PIPELINE = "financial_extract"
# Tickers whose whole history this run loaded again (a new split or dividend): JSON {ticker: why}.
RELOADED = "reloaded_tickers"
RAW_DESCRIPTIONS = {
    "ticker": "Ticker symbol",
    "date": "Trading session date",
    "open_price": "Opening price",
    "high_price": "Session high",
    "low_price": "Session low",
    "close_price": "Closing price (adjusted when the source adjusts)",
    "volume": "Shares traded",
}
_ARROW_TO_SQL = {"string": "text", "date32[day]": "date", "double": "double", "int64": "bigint"}


def raw_table_schema() -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(f.name, _ARROW_TO_SQL.get(str(f.type), str(f.type)), RAW_DESCRIPTIONS.get(f.name))
            for f in RAW_SCHEMA
        ]
    )


def raw_destination(warehouse: Warehouse):
    """dlt's destination for raw: PostgreSQL (loaded through ADBC: see raw_file_format), else the
    DuckDB file; for Spark, the file is then published to Parquet (warehouse/lake.py)."""
    if warehouse.engine == "postgres":
        return dlt.destinations.postgres(credentials=warehouse.url)
    return dlt.destinations.duckdb(str(warehouse.duckdb_path))


def raw_file(warehouse: Warehouse):
    """The DuckDB file dlt merges raw into (Spark's raw is merged there too), if any."""
    return None if warehouse.engine == "postgres" else warehouse.duckdb_path


def raw_file_format(warehouse: Warehouse) -> str | None:
    """PostgreSQL loads fastest from Parquet through ADBC (docs/scaling-out.md); DuckDB
    loads Arrow data as Parquet already."""
    return "parquet" if warehouse.engine == "postgres" else None


def extract_pipeline(settings: Settings) -> Pipeline:
    with pipeline_folder_lock(settings.pipelines_dir, EXTRACT_PIPELINE):
        return dlt.pipeline(
            pipeline_name=EXTRACT_PIPELINE,
            destination=raw_destination(settings.warehouse),
            dataset_name=RAW_DATASET,
            pipelines_dir=str(settings.pipelines_dir),
        )


@dataclass
class RawTranslator(DagsterDltTranslator):
    """The raw table's key is exactly the key the SQLMesh model depends on."""

    owner: str = DEFAULT_OWNER
    engine: str = "duckdb"

    def get_asset_spec(self, data: DltResourceTranslatorData) -> AssetSpec:
        spec = super().get_asset_spec(data)
        return spec.replace_attributes(
            key=RAW_KEY,
            deps=[],
            group_name="extract",
            description=(
                "End-of-day OHLCV prices, one row per (ticker, date), merged by dlt so a "
                "repeated load never duplicates a row."
            ),
            kinds={"dlt", self.engine},
            owners=[self.owner],
        ).merge_attributes(metadata={"dagster/column_schema": raw_table_schema()})


def raw_row_counts(warehouse: Warehouse, start, end, partitions_def, keys) -> tuple[dict, list[int]]:
    """(the run's row-count metadata, each partition's row count in `keys` order)."""
    per_key, params = partition_counts_sql("date", partitions_def, keys)
    if warehouse.engine == "duckdb" and not warehouse.duckdb_path.exists():
        return {}, [0] * len(keys)
    with warehouse.connect() as con:
        try:
            total, in_range, *by_key = con.execute(
                f"SELECT count(*), count(CASE WHEN date BETWEEN ? AND ? THEN 1 END), {per_key} FROM {RAW}",
                [start, end, *params],
            ).fetchone()
            quarantine_total = con.execute(f"SELECT count(*) FROM {QUARANTINE}").fetchone()[0]
        except MissingTable:  # nothing loaded yet: an empty first range
            return {}, [0] * len(keys)
    return {
        "dagster/row_count": MetadataValue.int(total),
        "table_rows_in_range": MetadataValue.int(in_range),
        "quarantine_total_rows": MetadataValue.int(quarantine_total),
    }, by_key


def prices_source(batch: PriceBatch, replace_tickers: bool = False, file_format: str | None = None):
    @dlt.source(name="prices")
    def prices():
        return eod_prices_resource(batch, replace_tickers=replace_tickers, file_format=file_format)

    return prices()


def batch_metadata(settings: Settings, batch: PriceBatch, tickers, start, end) -> dict:
    """What the operator should see about this load, beside dagster-dlt's own metadata."""
    contract = batch.contract
    assert contract is not None
    extra = {
        "source": MetadataValue.text(settings.source),
        "range_start": MetadataValue.text(start.isoformat()),
        "range_end": MetadataValue.text(end.isoformat()),
        "rows_in_range": MetadataValue.int(batch.rows),
        "tickers_requested": MetadataValue.text(", ".join(tickers)),
        "missing_tickers": MetadataValue.text(", ".join(batch.missing_tickers)),
        "rows_without_trade_dropped": MetadataValue.int(contract.untraded),
        "rows_quarantined": MetadataValue.int(contract.quarantined),
    }
    if contract.quarantined:
        extra["quarantine_reasons"] = MetadataValue.md(
            "\n".join(f"- {reason}: {n}" for reason, n in contract.reasons().items())
        )
    extra["rows_quarantined_not_kept"] = MetadataValue.int(contract.not_kept_rows)
    if contract.not_kept:
        extra["quarantine_not_kept"] = MetadataValue.md(
            f"Bad rows beyond the first {QUARANTINE_KEEP:,} per ticker and reason, counted but not stored:\n"
            + "\n".join(f"- {ticker}, {reason}: {n:,}" for (ticker, reason), n in sorted(
                contract.not_kept.items(), key=lambda item: -item[1])[:20])
        )
    extra["rows_loaded_with_warnings"] = MetadataValue.int(sum(contract.warned.values()))
    if contract.warned:
        extra["warnings"] = MetadataValue.md("\n".join(f"- {rule}: {n}" for rule, n in contract.warned.items()))
    if batch.synthetic:
        extra["synthetic"] = MetadataValue.bool(True)
        extra["data_notice"] = MetadataValue.text(
            "SYNTHETIC data: generated prices, not market data (FINANCIAL_ETL_SOURCE=synthetic)"
        )
    return extra


def build_extract_assets(settings: Settings, partitions_def: TimeWindowPartitionsDefinition):
    @dlt_assets(
        dlt_source=prices_source(empty_batch(settings.source)),
        dlt_pipeline=extract_pipeline(settings),
        name="extract_prices",
        dagster_dlt_translator=RawTranslator(owner=settings.owner, engine=settings.warehouse.engine),
        partitions_def=partitions_def,
    )
    def extract_prices(context: AssetExecutionContext, dlt: DagsterDltResource) -> Iterator[MaterializeResult]:
        start, end = run_dates(context, settings)
        tickers = run_tickers(context.run.tags, settings)
        restated = restated_tickers(context.run.tags, settings, start)
        context.log.info(
            f"extracting {len(tickers)} tickers from the {settings.source} source, {start} to {end}"
            + (f"; replacing the whole history of {', '.join(restated)}" if restated else "")
        )
        check_writable(settings.data_dir, "FINANCIAL_ETL_DUCKDB_PATH")
        fetch = fetch_for(settings)
        batch = fetch_batch(fetch, tickers, start, end, allow_partial=settings.allow_partial_loads, run_id=context.run_id)
        reloaded = {}
        if restated is None and start > settings.start_date:
            with settings.warehouse.reader_lock(log=context.log.warning):
                reloaded = histories_to_reload(settings.warehouse, batch, start, end, settings.suspicious_move_pct)
        if reloaded:
            for ticker, why in reloaded.items():
                context.log.warning(f"{ticker}: {why}; loading its whole history again, from {settings.start_date}")
            history = fetch_batch(fetch, list(reloaded), settings.start_date, end,
                                  allow_partial=settings.allow_partial_loads, run_id=context.run_id)
            batch = with_history(batch, history, list(reloaded))
        contract = batch.contract
        assert contract is not None
        pipeline = extract_pipeline(settings)
        warehouse = settings.warehouse
        source = prices_source(batch, replace_tickers=bool(restated), file_format=raw_file_format(warehouse))
        with warehouse.stage_lock("extract", log=context.log.warning), storage_errors(
            "the extract", raw_file(warehouse), on_failure=pipeline.drop_pending_packages
        ):
            results = list(dlt.run(context=context, dlt_source=source, dlt_pipeline=pipeline))
            if warehouse.engine == "spark":
                publish_raw(warehouse, settings.pipelines_dir)
            counts, by_partition = raw_row_counts(warehouse, start, end, partitions_def, context.partition_keys)
        # Missing tickers were logged with the source's reasons by fetch_batch.
        if contract.quarantined:
            context.log.warning(
                f"quarantined {contract.quarantined} rows from the {batch.source} source ("
                + ", ".join(f"{n} {reason}" for reason, n in contract.reasons().items())
                + f"); see {QUARANTINE}"
            )
        if contract.not_kept:
            context.log.warning(
                f"{contract.not_kept_rows:,} more bad rows not stored, beyond {QUARANTINE_KEEP:,} per ticker and "
                "reason (see the metadata quarantine_not_kept)"
            )
        for rule, n in contract.warned.items():
            context.log.warning(f"loaded {n} rows with a warning: {rule}")
        context.log.info(f"loaded {batch.rows} rows into {RAW}")
        extra = {**batch_metadata(settings, batch, tickers, start, end), **counts,
                 RELOADED: MetadataValue.text(json.dumps(reloaded, sort_keys=True))}
        add_partition_row_counts(context, RAW_KEY, context.partition_keys, by_partition)
        for result in results:
            # The column schema is on the definition: copied into every partition's event it only costs.
            loaded = {k: v for k, v in (result.metadata or {}).items() if k != "dagster/column_schema"}
            yield MaterializeResult(asset_key=result.asset_key, metadata={**loaded, **extra})

    return extract_prices
