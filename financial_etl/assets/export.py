"""Export group: marts.stock_metrics -> the export target, merged on (ticker, trade_date)."""

import datetime as dt

import dlt
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    asset,
)
from dlt.pipeline.pipeline import Pipeline

from financial_etl.assets.transform import window_reach_end
from financial_etl.partitions import run_dates
from financial_etl.resources import EXPORT_PIPELINE, Project
from financial_etl.run_tags import restated_tickers
from financial_etl.warehouse_lock import warehouse_lock

MART_KEY = AssetKey(["marts", "stock_metrics"])
MART_COLUMNS = (
    "ticker", "trade_date", "open_price", "high_price", "low_price", "close_price", "volume",
    "sma_9_day", "sma_20_day", "sma_50_day", "bollinger_upper", "bollinger_lower", "rsi_14_day",
    "macd_line", "atr_14_day", "daily_return_pct", "price_range_pct", "volume_ratio", "volume_sma_20",
)
EXPORT_COLUMN_HINTS = {
    "ticker": {"data_type": "text", "precision": 16, "nullable": False},
    "trade_date": {"data_type": "date", "nullable": False},
    "volume": {"data_type": "bigint"},
    "volume_sma_20": {"data_type": "bigint"},
    **{
        name: {"data_type": "double"}
        for name in MART_COLUMNS
        if name not in ("ticker", "trade_date", "volume", "volume_sma_20")
    },
}


def read_mart(duckdb_path: str, start: dt.date, end: dt.date, tickers=None) -> pa.Table:
    """The mart rows of [start, end] (of `tickers` only, when given) as Arrow, with NaN
    and +/-inf turned into NULL."""
    only = "AND ticker IN (SELECT unnest(?::VARCHAR[]))" if tickers else ""
    params = [start, end, list(tickers)] if tickers else [start, end]
    with duckdb.connect(duckdb_path, read_only=True) as con:
        table = con.execute(
            f"SELECT {', '.join(MART_COLUMNS)} FROM marts.stock_metrics "
            f"WHERE trade_date BETWEEN ? AND ? {only} ORDER BY ticker, trade_date",
            params,
        ).fetch_arrow_table()
    return nan_to_null(table)


def nan_to_null(table: pa.Table) -> pa.Table:
    """dlt writes NaN/inf literally and SQL Server rejects them: make them NULL first."""
    columns, fields = [], []
    for field, column in zip(table.schema, table.columns):
        if pa.types.is_floating(column.type):
            bad = pc.or_(pc.is_nan(column), pc.is_inf(column))
            column = pc.if_else(bad, pa.scalar(None, column.type), column)
        columns.append(column)
        # The merge key is never NULL; saying so keeps dlt's hints and Arrow's in agreement.
        fields.append(field.with_nullable(field.name not in ("ticker", "trade_date")))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def export_pipeline(project: Project) -> Pipeline:
    target = project.export_target
    return dlt.pipeline(
        pipeline_name=EXPORT_PIPELINE,
        destination=target.destination(),
        dataset_name=target.schema,
        pipelines_dir=str(project.settings.pipelines_dir),
    )


def target_row_counts(pipeline: Pipeline, table: str, start: dt.date, end: dt.date) -> tuple[int, int]:
    """(rows in the whole target table, rows in [start, end])."""
    with pipeline.sql_client() as client:
        name = client.make_qualified_table_name(table)
        total, in_range = client.execute_sql(
            f"SELECT count(*), count(CASE WHEN trade_date BETWEEN %s AND %s THEN 1 END) FROM {name}", start, end
        )[0]
    return int(total), int(in_range)


def build_export_asset(project: Project, partitions_def, column_schema=None):
    target = project.export_target

    @asset(
        key=AssetKey([target.schema, target.table]),
        deps=[MART_KEY],
        group_name="export",
        kinds={"dlt", "mssql" if not target.is_standin else "duckdb"},
        owners=[project.settings.owner],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        description=(
            f"marts.stock_metrics exported to {target.schema}.{target.table} through dlt, "
            "merged on (ticker, trade_date) for the run's date range."
        ),
        metadata={"dagster/column_schema": column_schema} if column_schema else None,
    )
    def export_stock_metrics(context: AssetExecutionContext) -> MaterializeResult:
        start, end = run_dates(context)
        # The whole step holds the warehouse lock: it reads the mart, and the dlt pipeline's
        # working state (and a DuckDB stand-in) take one writer at a time as well.
        with warehouse_lock(project.settings.duckdb_path, log=context.log.info):
            return _export(context, start, end)

    def _export(context: AssetExecutionContext, start: dt.date, end: dt.date) -> MaterializeResult:
        # A restatement replaces the restated tickers' rows wholesale (merge key ticker);
        # the other tickers' mart rows are unchanged, so they are not re-sent. Rows after
        # the range whose windows read it were recomputed by the transform: sent too.
        restated = restated_tickers(context.run.tags, project.settings, start)
        end = window_reach_end(str(project.settings.duckdb_path), end)
        rows = read_mart(str(project.settings.duckdb_path), start, end, restated)
        if target.is_standin:
            context.log.warning(f"no SQL Server configured: exporting to the {target.description}")
        context.log.info(f"exporting {rows.num_rows} rows of {start} to {end} to {target.description}")

        @dlt.resource(
            name=target.table,
            table_name=target.table,
            primary_key=("ticker", "trade_date"),
            merge_key="ticker" if restated else (),
            write_disposition={"disposition": "merge", "strategy": "delete-insert"},
            columns=EXPORT_COLUMN_HINTS,
        )
        def stock_metrics():
            if rows.num_rows:
                yield rows

        pipeline = export_pipeline(project)
        # A package left by a killed run is recomputed from the mart anyway: drop it.
        pipeline.abort_packages()
        info = pipeline.run(stock_metrics())
        info.raise_on_failed_jobs()
        total, in_range = target_row_counts(pipeline, target.table, start, end) if rows.num_rows else (None, 0)
        metadata = {
            "dagster/partition_row_count": MetadataValue.int(in_range),
            "rows_exported": MetadataValue.int(rows.num_rows),
            "target": MetadataValue.text(target.description),
            "target_kind": MetadataValue.text(target.kind),
            "range_start": MetadataValue.text(start.isoformat()),
            "range_end": MetadataValue.text(end.isoformat()),
        }
        if total is not None:
            metadata["dagster/row_count"] = MetadataValue.int(total)
        return MaterializeResult(metadata=metadata)

    return export_stock_metrics
