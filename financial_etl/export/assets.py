"""Export stage: marts.stock_metrics -> the export target through dlt.

Daily and backfill runs merge the run's range on (ticker, trade_date). A full refresh
(`financial-etl run --full-refresh`, run tag financial_etl/export=full_refresh) replaces
the target with the whole mart atomically (dlt's insert-from-staging). Rows go to dlt as
Arrow record batches, NaN and +/-inf turned into NULL, with explicit column types.
"""

import datetime as dt
import itertools
from collections.abc import Iterator, Sequence

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    Backoff,
    BackfillPolicy,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    asset,
)
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dlt.pipeline.pipeline import Pipeline

from financial_etl.calendar import add_partition_row_counts, partition_counts_sql
from financial_etl.errors import PermanentDestinationError, StorageError
from financial_etl.export.destination import ExportDestination, ExportTarget, classify, export_target_for
from financial_etl.runs import EXPORT_TAG, FULL_REFRESH, restated_tickers, run_dates
from financial_etl.settings import Settings
from financial_etl.transform.assets import RECOMPUTED_THROUGH, window_reach_end
from financial_etl.warehouse import MART, MART_KEY, MART_KEY_COLUMNS, export_key
from financial_etl.warehouse.engines import Warehouse, load_file_format
from financial_etl.warehouse.lock import pipeline_folder_lock
from financial_etl.warehouse.storage import storage_error, storage_errors

EXPORT_PIPELINE = "financial_export"
BATCH_ROWS = 100_000
# What Arrow does not say: SQL Server gets an nvarchar(16) ticker and a non-NULL key;
# the other columns take the mart's types (double, bigint) from the Arrow batches.
EXPORT_COLUMN_HINTS = {
    "ticker": {"data_type": "text", "precision": 16, "nullable": False},
    "trade_date": {"data_type": "date", "nullable": False},
}


def nan_to_null(batch: pa.RecordBatch | pa.Table):
    """dlt writes NaN/inf literally and SQL Server rejects them: make them NULL first."""
    columns, fields = [], []
    for field, column in zip(batch.schema, batch.columns):
        if pa.types.is_floating(column.type):
            bad = pc.or_(pc.is_nan(column), pc.is_inf(column))
            column = pc.if_else(bad, pa.scalar(None, column.type), column)
        columns.append(column)
        # The merge key is never NULL; saying so keeps dlt's hints and Arrow's in agreement.
        fields.append(field.with_nullable(field.name not in MART_KEY_COLUMNS))
    cls = pa.RecordBatch if isinstance(batch, pa.RecordBatch) else pa.Table
    return cls.from_arrays(columns, schema=pa.schema(fields))


def _mart_query(start, end, tickers) -> tuple[str, list]:
    where, params = [], []
    if start is not None:
        where.append("trade_date BETWEEN ? AND ?")
        params += [start, end]
    if tickers:
        where.append(f"ticker IN ({', '.join('?' * len(tickers))})")
        params += list(tickers)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT * FROM {MART} {clause} ORDER BY {', '.join(MART_KEY_COLUMNS)}", params


def iter_mart(warehouse: Warehouse, start, end, tickers=None, batch_rows: int = BATCH_ROWS) -> Iterator[pa.RecordBatch]:
    """The mart rows of [start, end] (all rows when start is None; `tickers` only, when
    given) as Arrow record batches, NaN and +/-inf as NULL, so a full refresh never holds
    the mart in memory."""
    sql, params = _mart_query(start, end, tickers)
    with warehouse.connect() as con:
        sent, schema = False, None
        keys = list(MART_KEY_COLUMNS)
        for batch in con.arrow_batches(sql, params, batch_rows):
            # The model's column order (Spark keeps its partition column, trade_date, last).
            batch = batch.select(keys + [name for name in batch.schema.names if name not in keys])
            schema = batch.schema
            if batch.num_rows:
                sent = True
                yield nan_to_null(batch)
        if not sent:
            # An empty batch still carries the schema: a first export of a holiday creates
            # the target table, so the metadata and the reconciliation check find it.
            yield nan_to_null(pa.RecordBatch.from_pylist([], schema=schema))


def export_pipeline(settings: Settings, target: ExportTarget, replace_strategy: str | None = None) -> Pipeline:
    with pipeline_folder_lock(settings.pipelines_dir, EXPORT_PIPELINE):
        return dlt.pipeline(
            pipeline_name=EXPORT_PIPELINE,
            destination=target.destination(replace_strategy),
            dataset_name=target.schema,
            pipelines_dir=str(settings.pipelines_dir),
        )


def target_row_counts(pipeline: Pipeline, table: str, start: dt.date, end: dt.date, partitions_def, keys) -> tuple[int, int, list[int]]:
    """(rows in the whole target table, rows in [start, end], rows of each partition in `keys`)."""
    per_key, params = partition_counts_sql("trade_date", partitions_def, keys, placeholder="%s")
    try:
        with pipeline.sql_client() as client:
            name = client.make_qualified_table_name(table)
            total, in_range, *by_key = client.execute_sql(
                f"SELECT count(*), count(CASE WHEN trade_date BETWEEN %s AND %s THEN 1 END), {per_key} FROM {name}",
                start, end, *params,
            )[0]
    except DatabaseUndefinedRelation:
        return 0, 0, [0] * len(keys)
    return int(total), int(in_range), [int(n) for n in by_key]


def load_export(
    settings: Settings,
    target: ExportTarget,
    *,
    start: dt.date | None,
    end: dt.date | None,
    tickers: Sequence[str] | None = None,
    full_refresh: bool = False,
) -> int:
    """Send the mart rows to the target through dlt; returns the row count sent. Raises a
    classified error (exit code 4 for connections) with credentials redacted."""
    sent = 0

    def batches(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]):
        nonlocal sent
        for batch in itertools.chain([first], rest):
            sent += batch.num_rows
            yield batch

    if full_refresh:
        disposition = "replace"
    else:
        # A restatement replaces the restated tickers' rows wholesale (merge key ticker).
        disposition = {"disposition": "merge", "strategy": "delete-insert"}
    # Read before the load: a warehouse error is the warehouse's, not the target's.
    rows = iter_mart(settings.warehouse, None if full_refresh else start, end, tickers)
    first = next(rows)  # the first batch has rows, or it is the only one
    pipeline = export_pipeline(settings, target, "insert-from-staging" if full_refresh else None)
    try:
        # A package left by a killed run is recomputed from the mart anyway: drop it.
        pipeline.abort_packages()
        resource = dlt.resource(
            batches(first, rows),
            name=target.table,
            table_name=target.table,
            primary_key=MART_KEY_COLUMNS,
            merge_key="ticker" if tickers and not full_refresh else (),
            write_disposition=disposition,
            columns=EXPORT_COLUMN_HINTS,
            file_format=load_file_format(target.load_format, first.num_rows),
        )
        pipeline.run(resource).raise_on_failed_jobs()
    except Exception as exc:
        # Before classify, which would make a full local disk look like a server error.
        raise (storage_error("the export", exc, settings.data_dir) or classify(exc, target)) from None
    return sent


def recomputed_through(context: AssetExecutionContext, settings: Settings, end: dt.date) -> dt.date:
    """The last date the mart rewrote: what the transform recorded in this run, else (the
    export re-run alone) the same reach computed from raw."""
    event = context.instance.get_latest_materialization_event(MART_KEY)
    if event is not None and event.run_id == context.run_id and event.asset_materialization is not None:
        recorded = event.asset_materialization.metadata.get(RECOMPUTED_THROUGH)
        if recorded is not None:
            return max(end, dt.date.fromisoformat(str(recorded.value)))
    return window_reach_end(settings, end)


def build_export_asset(settings: Settings, partitions_def, column_schema=None):
    spec_target = export_target_for(settings)

    @asset(
        key=export_key(spec_target.schema, spec_target.table),
        deps=[MART_KEY],
        group_name="export",
        kinds={"dlt", spec_target.dagster_kind},
        owners=[settings.owner],
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        # Transient failures (a server restart, a dropped connection) are retried with
        # backoff; permanent ones (login, missing database, no driver) are not.
        retry_policy=RetryPolicy(max_retries=2, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS),
        description=(
            f"{MART} exported to {spec_target.schema}.{spec_target.table} through dlt, "
            "merged on (ticker, trade_date) for the run's date range; a full refresh replaces it atomically."
        ),
        metadata={"dagster/column_schema": column_schema} if column_schema else None,
    )
    def export_stock_metrics(context: AssetExecutionContext, export_destination: ExportDestination) -> MaterializeResult:
        start, end = run_dates(context, settings)
        target = export_destination.target(settings)
        # The whole step holds the export's lock: the dlt pipeline's working state (and a
        # DuckDB stand-in) take one writer at a time; on DuckDB it is the warehouse's lock.
        with settings.warehouse.stage_lock("export", log=context.log.warning):
            return _export(context, target, start, end)

    def _export(context: AssetExecutionContext, target: ExportTarget, start: dt.date, end: dt.date):
        restated = restated_tickers(context.run.tags, settings, start)
        full_refresh = context.run.tags.get(EXPORT_TAG) == FULL_REFRESH
        # Rows after the range whose windows read it were recomputed by the transform: sent too.
        end = recomputed_through(context, settings, end)
        if target.is_standin:
            context.log.warning(f"no SQL Server configured: exporting to the {target.description}")
        what = "the whole mart (full refresh, atomic replace)" if full_refresh else f"{start} to {end}"
        context.log.info(f"exporting {what} to {target.description}")
        # The stand-in is a DuckDB file: a full disk must not leave a half-written merge in its log.
        standin = settings.export_duckdb_path if target.is_standin else None
        try:
            with storage_errors("the export", standin):
                sent = load_export(settings, target, start=start, end=end, tickers=restated, full_refresh=full_refresh)
        except (PermanentDestinationError, StorageError) as exc:
            context.log.error(str(exc))
            raise Failure(description=str(exc), allow_retries=False) from exc
        context.log.info(f"exported {sent} rows")
        pipeline = export_pipeline(settings, target)
        keys = context.partition_keys
        total, in_range, by_partition = target_row_counts(pipeline, target.table, start, end, partitions_def, keys)
        add_partition_row_counts(context, context.assets_def.key, keys, by_partition)
        return MaterializeResult(
            metadata={
                "dagster/row_count": MetadataValue.int(total),
                "table_rows_in_range": MetadataValue.int(in_range),
                "rows_exported": MetadataValue.int(sent),
                "full_refresh": MetadataValue.bool(full_refresh),
                "target": MetadataValue.text(target.description),
                "target_kind": MetadataValue.text(target.kind),
                "range_start": MetadataValue.text(start.isoformat()),
                "range_end": MetadataValue.text(end.isoformat()),
            }
        )

    return export_stock_metrics
