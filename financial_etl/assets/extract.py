"""Extract group: the chosen source -> raw.eod_prices_raw in DuckDB, through dagster-dlt."""


from collections.abc import Iterator
from dataclasses import dataclass

import dlt
import duckdb
from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from financial_etl.metadata import raw_table_schema
from financial_etl.partitions import add_partition_row_counts, partition_counts_sql, run_dates
from financial_etl.resources import Project
from financial_etl.run_tags import restated_tickers, run_tickers
from financial_etl.storage import check_writable, storage_errors
from financial_etl.warehouse_lock import warehouse_lock
from financial_etl.sources import PriceBatch, eod_prices_resource, fetch_for
from financial_etl.sources.prices import QUARANTINE_TABLE, RAW_DATASET, RAW_TABLE

RAW_KEY = AssetKey([RAW_DATASET, RAW_TABLE])


@dataclass
class RawTranslator(DagsterDltTranslator):
    """The raw table's key is exactly the key the SQLMesh model depends on."""

    owner: str = "team:data-engineering"

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
            kinds={"dlt", "duckdb"},
            owners=[self.owner],
        ).merge_attributes(metadata={"dagster/column_schema": raw_table_schema()})


def raw_row_counts(duckdb_path: str, start, end, partitions_def, keys) -> tuple[dict, list[int]]:
    """(the run's row-count metadata, each partition's row count in `keys` order)."""
    per_key, params = partition_counts_sql("date", partitions_def, keys)
    with duckdb.connect(duckdb_path, read_only=True) as con:
        try:
            total, in_range, *by_key = con.execute(
                f"SELECT count(*), count(CASE WHEN date BETWEEN ? AND ? THEN 1 END), {per_key} FROM raw.eod_prices_raw",
                [start, end, *params],
            ).fetchone()
            quarantine_total = con.execute(f"SELECT count(*) FROM {RAW_DATASET}.{QUARANTINE_TABLE}").fetchone()[0]
        except duckdb.CatalogException:  # nothing loaded yet: an empty first range
            return {}, [0] * len(keys)
    return {
        "dagster/row_count": MetadataValue.int(total),
        "table_rows_in_range": MetadataValue.int(in_range),
        "quarantine_total_rows": MetadataValue.int(quarantine_total),
    }, by_key


def prices_source(project: Project, start, end, report=None, tickers=None, replace_tickers=False, run_id=None):
    settings = project.settings

    @dlt.source(name="prices")
    def prices():
        return eod_prices_resource(
            fetch_for(settings), tickers or settings.tickers, start, end, report, replace_tickers=replace_tickers,
            allow_partial=settings.allow_partial_loads, run_id=run_id,
        )

    return prices()


def batch_metadata(settings, batch: PriceBatch | None, tickers, start, end) -> dict:
    """What the operator should see about this load, beside dagster-dlt's own metadata."""
    contract = batch.contract if batch else None
    extra = {
        "source": MetadataValue.text(settings.source),
        "range_start": MetadataValue.text(start.isoformat()),
        "range_end": MetadataValue.text(end.isoformat()),
        "rows_in_range": MetadataValue.int(batch.rows if batch else 0),
        "tickers_requested": MetadataValue.text(", ".join(tickers)),
        "missing_tickers": MetadataValue.text(", ".join(batch.missing_tickers) if batch else ""),
        "rows_without_trade_dropped": MetadataValue.int(contract.untraded if contract else 0),
        "rows_quarantined": MetadataValue.int(contract.quarantined if contract else 0),
    }
    if contract and contract.quarantined:
        extra["quarantine_reasons"] = MetadataValue.md(
            "\n".join(f"- {reason}: {n}" for reason, n in contract.reasons().items())
        )
    warned = contract.warned if contract else {}
    extra["rows_loaded_with_warnings"] = MetadataValue.int(sum(warned.values()))
    if warned:
        extra["warnings"] = MetadataValue.md("\n".join(f"- {rule}: {n}" for rule, n in warned.items()))
    if batch and batch.synthetic:
        extra["synthetic"] = MetadataValue.bool(True)
        extra["data_notice"] = MetadataValue.text(
            "SYNTHETIC data: generated prices, not market data (FINANCIAL_ETL_SOURCE=synthetic)"
        )
    return extra


def build_extract_assets(project: Project, partitions_def):
    settings = project.settings

    @dlt_assets(
        dlt_source=prices_source(project, settings.start_date, settings.resolved_end()),
        dlt_pipeline=project.extract_pipeline(),
        name="extract_prices",
        dagster_dlt_translator=RawTranslator(owner=settings.owner),
        partitions_def=partitions_def,
    )
    def extract_prices(context: AssetExecutionContext, dlt: DagsterDltResource) -> Iterator[MaterializeResult]:
        start, end = run_dates(context, settings)
        tickers = run_tickers(context.run.tags, settings)
        restated = restated_tickers(context.run.tags, settings, start)
        report: list[PriceBatch] = []
        context.log.info(
            f"extracting {len(tickers)} tickers from the {settings.source} source, {start} to {end}"
            + (f"; replacing the whole history of {', '.join(restated)}" if restated else "")
        )
        source = prices_source(project, start, end, report, tickers, replace_tickers=bool(restated), run_id=context.run_id)
        check_writable(settings.data_dir, "FINANCIAL_ETL_DUCKDB_PATH")
        pipeline = project.extract_pipeline()
        with warehouse_lock(settings.duckdb_path, log=context.log.info), storage_errors(
            "the extract", settings.duckdb_path, on_failure=pipeline.drop_pending_packages
        ):
            results = list(dlt.run(context=context, dlt_source=source, dlt_pipeline=pipeline))
            counts, by_partition = raw_row_counts(
                str(settings.duckdb_path), start, end, partitions_def, context.partition_keys
            ) if settings.duckdb_path.exists() else ({}, [0] * len(context.partition_keys))
        batch = report[0] if report else None
        # Missing tickers were logged with the source's reasons by the resource.
        if batch and batch.contract and batch.contract.quarantined:
            context.log.warning(
                f"quarantined {batch.contract.quarantined} rows from the {batch.source} source ("
                + ", ".join(f"{n} {reason}" for reason, n in batch.contract.reasons().items())
                + f"); see {RAW_DATASET}.{QUARANTINE_TABLE}"
            )
        for rule, n in (batch.contract.warned if batch and batch.contract else {}).items():
            context.log.warning(f"loaded {n} rows with a warning: {rule}")
        context.log.info(f"loaded {batch.rows if batch else 0} rows into raw.eod_prices_raw")
        extra = {**batch_metadata(settings, batch, tickers, start, end), **counts}
        add_partition_row_counts(context, RAW_KEY, context.partition_keys, by_partition)
        for result in results:
            # The column schema is on the definition: copied into every partition's event it only costs.
            loaded = {k: v for k, v in (result.metadata or {}).items() if k != "dagster/column_schema"}
            yield MaterializeResult(asset_key=result.asset_key, metadata={**loaded, **extra})

    return extract_prices
