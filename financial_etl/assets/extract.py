"""Extract group: the chosen source -> raw.eod_prices_raw in DuckDB, through dagster-dlt."""


from collections.abc import Iterator
from dataclasses import dataclass

import dlt
import duckdb
from dagster import AssetExecutionContext, AssetKey, AssetSpec, MaterializeResult, MetadataValue
from dagster_dlt import DagsterDltResource, DagsterDltTranslator, dlt_assets
from dagster_dlt.translator import DltResourceTranslatorData

from financial_etl.metadata import raw_table_schema
from financial_etl.partitions import run_dates
from financial_etl.resources import Project
from financial_etl.run_tags import restated_tickers, run_tickers
from financial_etl.warehouse_lock import warehouse_lock
from financial_etl.sources import PriceBatch, eod_prices_resource, fetch_for
from financial_etl.sources.prices import RAW_DATASET, RAW_TABLE

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


def raw_row_counts(duckdb_path: str, start, end) -> dict:
    with duckdb.connect(duckdb_path, read_only=True) as con:
        try:
            total, in_range = con.execute(
                "SELECT count(*), count(CASE WHEN date BETWEEN ? AND ? THEN 1 END) FROM raw.eod_prices_raw",
                [start, end],
            ).fetchone()
        except duckdb.CatalogException:  # nothing loaded yet: an empty first range
            return {}
    return {"dagster/row_count": MetadataValue.int(total), "dagster/partition_row_count": MetadataValue.int(in_range)}


def prices_source(project: Project, start, end, report=None, tickers=None, replace_tickers=False):
    settings = project.settings

    @dlt.source(name="prices")
    def prices():
        return eod_prices_resource(
            fetch_for(settings), tickers or settings.tickers, start, end, report, replace_tickers=replace_tickers
        )

    return prices()


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
        start, end = run_dates(context)
        tickers = run_tickers(context.run.tags, settings)
        restated = restated_tickers(context.run.tags, settings, start)
        report: list[PriceBatch] = []
        context.log.info(
            f"extracting {len(tickers)} tickers from the {settings.source} source, {start} to {end}"
            + (f"; replacing the whole history of {', '.join(restated)}" if restated else "")
        )
        with warehouse_lock(settings.duckdb_path, log=context.log.info):
            results = list(
                dlt.run(
                    context=context,
                    dlt_source=prices_source(project, start, end, report, tickers, replace_tickers=bool(restated)),
                    dlt_pipeline=project.extract_pipeline(),
                )
            )
            counts = raw_row_counts(str(settings.duckdb_path), start, end) if settings.duckdb_path.exists() else {}
        for result in results:
            batch = report[0] if report else None
            rows = len(batch.frame) if batch else 0
            extra = {
                "source": MetadataValue.text(settings.source),
                "range_start": MetadataValue.text(start.isoformat()),
                "range_end": MetadataValue.text(end.isoformat()),
                "rows_in_range": MetadataValue.int(rows),
                "tickers_requested": MetadataValue.text(", ".join(tickers)),
                "empty_tickers": MetadataValue.text(", ".join(batch.empty_tickers) if batch else ""),
                "rows_without_trade_dropped": MetadataValue.int(batch.dropped_rows if batch else 0),
            }
            if batch and batch.synthetic:
                extra["synthetic"] = MetadataValue.bool(True)
                extra["data_notice"] = MetadataValue.text(
                    "SYNTHETIC data: generated prices, not market data (FINANCIAL_ETL_SOURCE=synthetic)"
                )
            if batch and batch.empty_tickers:
                context.log.warning(f"no rows in range for: {', '.join(batch.empty_tickers)}")
            context.log.info(f"loaded {rows} rows into raw.eod_prices_raw")
            extra.update(counts)
            yield MaterializeResult(
                asset_key=result.asset_key,
                metadata={**(result.metadata or {}), **extra},
            )

    return extract_prices
