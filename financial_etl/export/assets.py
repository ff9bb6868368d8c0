"""Export stage: marts.stock_metrics -> the export target through dlt.

The export sends what the transform rewrote: the date ranges SQLMesh's plans recomputed
in every transform run since the last export (the mart's materialization metadata), merged
on (ticker, trade_date). The export pipeline remembers which version of the mart's table
the target holds (dlt's local pipeline state, written after each load); when prod serves
another one (a model change rebuilt the history), the whole mart is sent and replaces the target atomically: dlt's
insert-from-staging when the columns are the same, else a rebuilt table swapped in (one
transaction), so the target's columns follow the model. `financial-etl run --full-refresh`
(run tag financial_etl/export=full_refresh) forces the replace. Rows go to dlt as Arrow
record batches, NaN and +/-inf turned into NULL, with explicit column types.
"""

import datetime as dt
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import dlt
import pyarrow as pa
import pyarrow.compute as pc
from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    Backoff,
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
from financial_etl.errors import PermanentDestinationError, StorageError, interruption
from financial_etl.export.destination import ExportDestination, ExportTarget, classify, export_target_for
from financial_etl.metadata import column_changes
from financial_etl.runs import EXPORT_TAG, FULL_REFRESH, restated_tickers, run_dates
from financial_etl.settings import Settings
from financial_etl.transform.assets import (
    MART_VERSION,
    RECOMPUTED,
    RELOADED_TICKERS,
    metadata_since,
    parse_ranges,
    ranges_clause,
    ranges_json,
    window_reach_end,
)
from financial_etl.transform.sqlmesh_adapter import merge_ranges, prod_version
from financial_etl.warehouse import MART, MART_KEY, MART_KEY_COLUMNS, export_key
from financial_etl.warehouse.dlt_settings import pipeline_settings
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
    for field, column in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_floating(column.type):
            bad = pc.or_(pc.is_nan(column), pc.is_inf(column))
            column = pc.if_else(bad, pa.scalar(None, column.type), column)
        columns.append(column)
        # The merge key is never NULL; saying so keeps dlt's hints and Arrow's in agreement.
        fields.append(field.with_nullable(field.name not in MART_KEY_COLUMNS))
    cls = pa.RecordBatch if isinstance(batch, pa.RecordBatch) else pa.Table
    return cls.from_arrays(columns, schema=pa.schema(fields))


def _mart_query(ranges, tickers, reloaded=()) -> tuple[str, list]:
    clause, params = ranges_clause("trade_date", ranges)
    if tickers:
        clause += f" AND ticker IN ({', '.join('?' * len(tickers))})"
        params += list(tickers)
    if reloaded and ranges is not None:
        clause = f"({clause} OR ticker IN ({', '.join('?' * len(reloaded))}))"
        params += list(reloaded)
    return f"SELECT * FROM {MART} WHERE {clause} ORDER BY {', '.join(MART_KEY_COLUMNS)}", params


def iter_mart(
    warehouse: Warehouse, ranges, tickers=None, batch_rows: int = BATCH_ROWS, reloaded: Sequence[str] = ()
) -> Iterator[pa.RecordBatch]:
    """The mart rows in the date `ranges` (all rows when None; `tickers` only, when given;
    every row of the `reloaded` tickers too) as Arrow record batches, NaN and +/-inf as
    NULL, so a full refresh never holds the mart in memory."""
    sql, params = _mart_query(ranges, tickers, reloaded)
    with warehouse.connect() as con:
        sent, schema = False, None
        for batch in con.arrow_batches(sql, params, batch_rows):
            schema = batch.schema
            if batch.num_rows:
                sent = True
                yield nan_to_null(batch)
        if not sent:
            # An empty batch still carries the schema: a first export of a holiday creates
            # the target table, so the metadata and the reconciliation check find it.
            yield nan_to_null(pa.RecordBatch.from_pylist([], schema=schema))


@pipeline_settings()
def export_pipeline(settings: Settings, target: ExportTarget, replace_strategy: str | None = None) -> Pipeline:
    with pipeline_folder_lock(settings.pipelines_dir, EXPORT_PIPELINE):
        return dlt.pipeline(
            pipeline_name=EXPORT_PIPELINE,
            destination=target.destination(replace_strategy),
            dataset_name=target.schema,
            pipelines_dir=str(settings.pipelines_dir),
        )


def target_row_counts(
    pipeline: Pipeline, table: str, start: dt.date, end: dt.date, partitions_def, keys
) -> tuple[int, int, list[int]]:
    """(rows in the whole target table, rows in [start, end], rows of each partition in `keys`)."""
    per_key, params = partition_counts_sql("trade_date", partitions_def, keys, placeholder="%s")
    try:
        with pipeline.sql_client() as client:
            name = client.make_qualified_table_name(table)
            total, in_range, *by_key = client.execute_sql(
                f"SELECT count(*), count(CASE WHEN trade_date BETWEEN %s AND %s THEN 1 END), {per_key} FROM {name}",
                start,
                end,
                *params,
            )[0]
    except DatabaseUndefinedRelation:
        return 0, 0, [0] * len(keys)
    return int(total), int(in_range), [int(n) for n in by_key]


EXPORTED_RANGES = "exported_ranges"  # metadata: JSON [[start, end], ...], or "all" after a replace
VERSION_STATE = "mart_version"  # the pipeline's local state key: the mart version the target holds
REBUILD_SUFFIX = "__rebuild"  # the new table built beside the target when its columns change


@dataclass(frozen=True)
class Sent:
    rows: int
    full: bool  # the whole mart replaced the target
    rebuilt: bool  # ... through a rebuilt table, because the columns changed
    held: str | None  # the mart version the target held before
    columns_added: list[str]
    columns_removed: list[str]
    columns_retyped: list[str]


def synced_version(pipeline: Pipeline) -> str | None:
    """The mart version the target holds: recorded in the export pipeline's local state
    after each successful load (dlt's resource state would be committed at extract, before
    the load succeeds). None on a fresh pipeline folder: the whole mart is sent once."""
    try:
        return pipeline.get_local_state_val(VERSION_STATE)
    except KeyError:
        return None


def _column_types(schema: pa.Schema) -> dict[str, str]:
    from dlt.common.libs.pyarrow import py_arrow_to_table_schema_columns

    return {name: column.get("data_type") for name, column in py_arrow_to_table_schema_columns(schema).items()}


def _column_changes(pipeline: Pipeline, table: str, schema: pa.Schema) -> tuple[list[str], list[str], list[str]]:
    """(added, removed, retyped) columns of the mart against the target's, as dlt knows them."""
    known = pipeline.default_schema.tables.get(table) if pipeline.default_schema_name else None
    if known is None:
        return [], [], []
    old = {n: c.get("data_type") for n, c in known["columns"].items() if not n.startswith("_dlt")}
    return column_changes(old, _column_types(schema))


@pipeline_settings()
def load_export(
    settings: Settings,
    target: ExportTarget,
    *,
    ranges: Sequence[tuple[dt.date, dt.date]] | None,
    tickers: Sequence[str] | None = None,
    full_refresh: bool = False,
    version: str | None = None,
    reloaded: Sequence[str] = (),
) -> Sent:
    """Send the mart rows in `ranges` (None: all), and every row of the `reloaded` tickers,
    to the target through dlt, merged; the
    whole mart, replacing the target atomically, on `full_refresh` or when the target holds
    another `version` of the mart. Raises a classified error (exit code 4 for connections)
    with credentials redacted."""
    sent = 0

    def batches(first: pa.RecordBatch, rest: Iterator[pa.RecordBatch]):
        nonlocal sent
        for batch in itertools.chain([first], rest):
            sent += batch.num_rows
            yield batch

    try:
        pipeline = export_pipeline(settings, target)
        held = synced_version(pipeline)
        full = full_refresh or ranges is None or (version is not None and held != version)
    except Exception as exc:
        raise (storage_error("the export", exc, settings.data_dir) or classify(exc, target)) from None
    # Read before the load: a warehouse error is the warehouse's, not the target's.
    rows = iter_mart(settings.warehouse, None if full else ranges, None if full else tickers, reloaded=reloaded)
    first = next(rows)  # the first batch has rows, or it is the only one
    added, removed, retyped = _column_changes(pipeline, target.table, first.schema) if full else ([], [], [])
    rebuild = bool(added or removed or retyped)
    try:
        # A package left by a killed run is recomputed from the mart anyway: drop it.
        pipeline.abort_packages()
        if rebuild:
            pipeline = _rebuild_and_swap(settings, target, batches(first, rows), first.num_rows)
        else:
            if full:
                pipeline = export_pipeline(settings, target, "insert-from-staging")
                disposition = "replace"
            else:
                # A restatement replaces the restated tickers' rows wholesale (merge key ticker).
                disposition = {"disposition": "merge", "strategy": "delete-insert"}
            resource = dlt.resource(
                batches(first, rows),
                name=target.table,
                table_name=target.table,
                primary_key=MART_KEY_COLUMNS,
                merge_key="ticker" if tickers and not full else (),
                write_disposition=disposition,
                columns=EXPORT_COLUMN_HINTS,
                file_format=load_file_format(target.load_format, first.num_rows),
            )
            pipeline.run(resource).raise_on_failed_jobs()
        if version is not None:  # only once the rows are in, by the pipeline that loaded them
            pipeline.set_local_state_val(VERSION_STATE, version)
    except Exception as exc:
        # Before classify, which would make a full local disk look like a server error.
        raise (storage_error("the export", exc, settings.data_dir) or classify(exc, target)) from None
    return Sent(sent, full, rebuild, held, added, removed, retyped)


def _rebuild_and_swap(settings: Settings, target: ExportTarget, rows: Iterator[pa.RecordBatch], count: int) -> Pipeline:
    """The mart's columns changed: load the whole mart into a new table beside the target,
    then drop the target and rename the new table in one transaction, so readers see the
    old table or the new one, never a half-migrated one. dlt's schema then knows the
    target by the new table's columns."""
    pipeline = export_pipeline(settings, target, "truncate-and-insert")
    rebuilt = target.table + REBUILD_SUFFIX
    with pipeline.sql_client() as client:
        client.drop_tables(rebuilt)  # left by a killed rebuild
    if rebuilt in pipeline.default_schema.tables:
        pipeline.default_schema.drop_tables([rebuilt])
    resource = dlt.resource(
        rows,
        name=rebuilt,
        table_name=rebuilt,
        primary_key=MART_KEY_COLUMNS,
        write_disposition="replace",
        columns=EXPORT_COLUMN_HINTS,
        file_format=load_file_format(target.load_format, count),
    )
    pipeline.run(resource).raise_on_failed_jobs()
    with pipeline.sql_client() as client:
        with client.begin_transaction():
            client.execute_sql(f"DROP TABLE IF EXISTS {client.make_qualified_table_name(target.table)}")
            client.execute_sql(target.rename_sql(client, rebuilt, target.table))
        with client.with_staging_dataset():
            client.drop_tables(target.table)  # merges' staging copy has the old columns
    schema = pipeline.default_schema
    dropped = {t["name"]: t for t in schema.drop_tables([target.table, rebuilt])}
    # The target's resource is the export's own: a later rebuild's replace must not empty it.
    renamed = dict(dropped[rebuilt], name=target.table, resource=target.table)
    schema.update_table(renamed)
    pipeline.schemas.save_schema(schema)
    return pipeline


def export_ranges(context: AssetExecutionContext, settings: Settings, start: dt.date, end: dt.date):
    """What to send: the run's range and every date range SQLMesh recomputed in the mart's
    materializations since the export's last one (this run's, and those of runs whose export
    failed), the mart version prod serves, and the tickers whose whole history was
    recomputed after raw reloaded it. Without any such event (the export run alone, on a
    fresh instance) the run's range through the last date its windows reach, and the
    version from SQLMesh's state."""
    events = metadata_since(context.instance, context.assets_def.key, MART_KEY)
    ranges, version, reloaded = [], None, set()
    for metadata in events:
        if RECOMPUTED in metadata:
            ranges += parse_ranges(str(metadata[RECOMPUTED].value))
        if RELOADED_TICKERS in metadata:
            reloaded |= set(json.loads(str(metadata[RELOADED_TICKERS].value)))
        if MART_VERSION in metadata:
            version = str(metadata[MART_VERSION].value)
    if not events:
        ranges.append((start, window_reach_end(settings, end)))
    else:
        ranges.append((start, end))
    return merge_ranges(ranges), version or prod_version(settings, MART), sorted(reloaded)


def build_export_asset(settings: Settings, partitions_def, column_schema=None, code_version: str | None = None):
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
            f"{MART} exported to {spec_target.schema}.{spec_target.table} through dlt: the dates SQLMesh "
            "recomputed, merged on (ticker, trade_date); after a model change, or on a full refresh, the "
            "whole mart replaces it atomically, its columns rebuilt when they changed."
        ),
        metadata={"dagster/column_schema": column_schema} if column_schema else None,
        # The mart model's version: a model change shows the export as changed code too.
        code_version=code_version,
    )
    def export_stock_metrics(
        context: AssetExecutionContext, export_destination: ExportDestination
    ) -> MaterializeResult:
        start, end = run_dates(context, settings)
        target = export_destination.target(settings)
        # The whole step holds the export's lock: the dlt pipeline's working state (and a
        # DuckDB stand-in) take one writer at a time; on DuckDB it is the warehouse's lock.
        with settings.warehouse.stage_lock("export", log=context.log.warning):
            try:
                return _export(context, target, start, end)
            except BaseException as exc:
                if (stopped := interruption(exc)) is None:
                    raise
                # Dagster retries an interrupted step that has a retry policy: a stop ends the run.
                raise Failure(description=f"stopped ({type(stopped).__name__})", allow_retries=False) from None

    def _export(context: AssetExecutionContext, target: ExportTarget, start: dt.date, end: dt.date):
        restated = restated_tickers(context.run.tags, settings, start)
        full_refresh = context.run.tags.get(EXPORT_TAG) == FULL_REFRESH
        # Rows after the range whose windows read it were recomputed by the transform: sent too.
        ranges, version, reloaded = export_ranges(context, settings, start, end)
        end = max(end, ranges[-1][1])
        if target.is_standin:
            context.log.warning(f"no SQL Server configured: exporting to the {target.description}")
        what = (
            "the whole mart (full refresh, atomic replace)"
            if full_refresh
            else ", ".join(f"{a} to {b}" for a, b in ranges)
            + " (the dates SQLMesh recomputed)"
            + (f", and the whole history of {', '.join(reloaded)} (reloaded)" if reloaded else "")
        )
        context.log.info(f"exporting {what} to {target.description}")
        # The stand-in is a DuckDB file: a full disk must not leave a half-written merge in its log.
        standin = settings.export_duckdb_path if target.is_standin else None
        try:
            with storage_errors("the export", standin):
                sent = load_export(
                    settings,
                    target,
                    ranges=ranges,
                    tickers=restated,
                    full_refresh=full_refresh,
                    version=version,
                    reloaded=reloaded,
                )
        except (PermanentDestinationError, StorageError) as exc:
            context.log.error(str(exc))
            raise Failure(description=str(exc), allow_retries=False) from exc
        how = "merged"
        if sent.full:
            how = "replaced the target with the whole mart" + (
                f" (a table rebuilt for its columns: added {sent.columns_added}, removed "
                f"{sent.columns_removed}, retyped {sent.columns_retyped})"
                if sent.rebuilt
                else ""
            )
        context.log.info(f"exported {sent.rows} rows: {how} (mart version {version}; the target held {sent.held})")
        pipeline = export_pipeline(settings, target)
        keys = context.partition_keys
        total, in_range, by_partition = target_row_counts(pipeline, target.table, start, end, partitions_def, keys)
        add_partition_row_counts(context, context.assets_def.key, keys, by_partition)
        return MaterializeResult(
            metadata={
                "dagster/row_count": MetadataValue.int(total),
                "table_rows_in_range": MetadataValue.int(in_range),
                "rows_exported": MetadataValue.int(sent.rows),
                "full_refresh": MetadataValue.bool(sent.full),
                EXPORTED_RANGES: MetadataValue.text("all" if sent.full else ranges_json(ranges)),
                "columns_added": MetadataValue.text(", ".join(sent.columns_added)),
                "columns_removed": MetadataValue.text(", ".join(sent.columns_removed)),
                "columns_retyped": MetadataValue.text(", ".join(sent.columns_retyped)),
                **({MART_VERSION: MetadataValue.text(version)} if version else {}),
                "target": MetadataValue.text(target.description),
                "target_kind": MetadataValue.text(target.kind),
                "range_start": MetadataValue.text(start.isoformat()),
                "range_end": MetadataValue.text(end.isoformat()),
            }
        )

    return export_stock_metrics
