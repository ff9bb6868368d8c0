"""Extract stage: the chosen source -> raw.eod_prices_raw in the warehouse, through dagster-dlt.

The batch is fetched and split by the raw contract first, a group of tickers at a time
into files (chunks.py: memory bounded by the group, not the universe; no warehouse lock
is held while a source answers), then dlt merges it into raw under the lock.
"""

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import dlt
from dagster import (
    AssetExecutionContext,
    AssetSpec,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    TimeWindowPartitionsDefinition,
    multi_asset,
)
from dagster_dlt import DagsterDltResource, DagsterDltTranslator
from dagster_dlt.translator import DltResourceTranslatorData
from dlt.pipeline.pipeline import Pipeline

from financial_etl.calendar import add_partition_row_counts, partition_counts_sql
from financial_etl.extract.actions import Stored, histories_to_reload, stored_before
from financial_etl.extract.chunks import StagedBatch, batch_folder, stage_batch
from financial_etl.extract.contract import QUARANTINE_KEEP, RAW_SCHEMA
from financial_etl.extract.resource import (
    PriceBatch,
    empty_batch,
    eod_prices_resource,
    fetch_batch,
    fetch_checked,
    raw_tables_resource,
    with_history,
)
from financial_etl.extract.sources import fetch_for
from financial_etl.runs import restated_tickers, run_dates, run_tickers
from financial_etl.settings import DEFAULT_OWNER, Settings
from financial_etl.warehouse import QUARANTINE, RAW, RAW_DATASET, RAW_KEY
from financial_etl.warehouse.dlt_settings import pipeline_settings, telemetry_off
from financial_etl.warehouse.engines import MissingTable, Warehouse, duckdb_credentials
from financial_etl.warehouse.lake import Published, publish_raw
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
    return dlt.destinations.duckdb(duckdb_credentials(warehouse.duckdb_path, warehouse.project_dir))


def lake_metadata(published: list[Published]) -> dict:
    """What the publish to Spark moved (warehouse/lake.py): flat in the history's length."""
    if not published:
        return {}
    return {
        "lake_bytes_written": MetadataValue.int(sum(p.bytes for p in published)),
        "lake_months_written": MetadataValue.json({p.table: p.months for p in published}),
    }


def raw_file(warehouse: Warehouse):
    """The DuckDB file dlt merges raw into (Spark's raw is merged there too), if any."""
    return None if warehouse.engine == "postgres" else warehouse.duckdb_path


def raw_file_format(warehouse: Warehouse) -> str | None:
    """PostgreSQL loads fastest from Parquet through ADBC (docs/scaling-out.md); DuckDB
    loads Arrow data as Parquet already."""
    return "parquet" if warehouse.engine == "postgres" else None


@pipeline_settings()
def extract_pipeline(settings: Settings) -> Pipeline:
    with pipeline_folder_lock(settings.pipelines_dir, EXTRACT_PIPELINE):
        pipeline = dlt.pipeline(
            pipeline_name=EXTRACT_PIPELINE,
            destination=raw_destination(settings.warehouse),
            dataset_name=RAW_DATASET,
            pipelines_dir=str(settings.pipelines_dir),
        )
    # With it on, dagster-dlt deletes the whole working folder before every load (to restore
    # it from the warehouse), and a run killed mid-delete leaves a folder dlt cannot open.
    # Raw keeps no incremental state; the step aborts a killed run's packages itself.
    pipeline.config.restore_from_destination = False
    return pipeline


@dataclass
class RawTranslator(DagsterDltTranslator):
    """The raw table's key is exactly the key the SQLMesh model depends on. The specs are
    built without a dlt pipeline (see raw_asset_specs): `storage_kind` names the
    destination a pipeline would give."""

    owner: str = DEFAULT_OWNER
    engine: str = "duckdb"
    storage_kind: str = "duckdb"

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
        ).merge_attributes(
            metadata={"dagster/column_schema": raw_table_schema(), "dagster/storage_kind": self.storage_kind}
        )


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


def prices_source(batch: PriceBatch | StagedBatch, replace_tickers: bool = False, file_format: str | None = None):
    @dlt.source(name="prices")
    def prices():
        if isinstance(batch, StagedBatch):
            return raw_tables_resource(
                batch.parts, batch.counts(), replace_tickers=replace_tickers, file_format=file_format
            )
        return eod_prices_resource(batch, replace_tickers=replace_tickers, file_format=file_format)

    return prices()


def batch_metadata(settings: Settings, batch: StagedBatch, tickers, start, end) -> dict:
    """What the operator should see about this load, beside dagster-dlt's own metadata."""
    extra = {
        "source": MetadataValue.text(settings.source),
        "range_start": MetadataValue.text(start.isoformat()),
        "range_end": MetadataValue.text(end.isoformat()),
        "rows_in_range": MetadataValue.int(batch.rows),
        "tickers_requested": MetadataValue.text(", ".join(tickers)),
        "missing_tickers": MetadataValue.text(", ".join(batch.missing_tickers)),
        "rows_without_trade_dropped": MetadataValue.int(batch.untraded),
        "rows_quarantined": MetadataValue.int(batch.quarantined),
    }
    if batch.quarantined:
        extra["quarantine_reasons"] = MetadataValue.md(
            "\n".join(f"- {reason}: {n}" for reason, n in batch.reasons().items())
        )
    extra["rows_quarantined_not_kept"] = MetadataValue.int(batch.not_kept_rows)
    if batch.not_kept:
        extra["quarantine_not_kept"] = MetadataValue.md(
            f"Bad rows beyond the first {QUARANTINE_KEEP:,} per ticker and reason, counted but not stored:\n"
            + "\n".join(
                f"- {ticker}, {reason}: {n:,}"
                for (ticker, reason), n in sorted(batch.not_kept.items(), key=lambda item: -item[1])[:20]
            )
        )
    extra["rows_loaded_with_warnings"] = MetadataValue.int(sum(batch.warned.values()))
    if batch.warned:
        extra["warnings"] = MetadataValue.md("\n".join(f"- {rule}: {n}" for rule, n in batch.warned.items()))
    if batch.synthetic:
        extra["synthetic"] = MetadataValue.bool(True)
        extra["data_notice"] = MetadataValue.text(
            "SYNTHETIC data: generated prices, not market data (FINANCIAL_ETL_SOURCE=synthetic)"
        )
    return extra


def raw_asset_specs(settings: Settings, translator: RawTranslator) -> list[AssetSpec]:
    """The raw table's specs from dagster-dlt's translator, without a dlt pipeline: `dlt_assets`
    wants one at definition time, and creating it creates and locks the pipeline's folder.
    The step hands dlt its pipeline, source and translator instead."""
    source = prices_source(empty_batch(settings.source))
    return [
        translator.get_asset_spec(DltResourceTranslatorData(resource=resource, pipeline=None))
        for resource in source.selected_resources.values()
    ]


def build_extract_assets(settings: Settings, partitions_def: TimeWindowPartitionsDefinition):
    telemetry_off()  # the first dlt use in a process that loads the definitions
    translator = RawTranslator(
        owner=settings.owner,
        engine=settings.warehouse.engine,
        storage_kind=raw_destination(settings.warehouse).destination_name,
    )

    @multi_asset(
        name="extract_prices",
        specs=raw_asset_specs(settings, translator),
        can_subset=True,
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
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
        stored = None
        if restated is None and start > settings.start_date:
            with settings.warehouse.reader_lock(log=context.log.warning):
                stored = stored_before(settings.warehouse, start, end)
        folder = None
        try:
            with storage_errors("the extract (its batch files)", where=settings.data_dir):
                folder = batch_folder(settings.data_dir)
                batch, reloaded = _stage(context, tickers, start, end, stored, folder)
            yield from _load(context, dlt, batch, tickers, start, end, restated, reloaded)
        finally:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)

    def _stage(context, tickers, start, end, stored: Stored | None, folder) -> tuple[StagedBatch, dict]:
        """Fetch and check the batch group by group into `folder`; a group's tickers whose
        history must be loaded again (a new split or dividend) are fetched whole with it."""
        fetch = fetch_for(settings)
        reloaded: dict[str, str] = {}
        history_missing: set[str] = set()

        def fetch_group(group: list[str]) -> PriceBatch:
            batch = fetch_checked(fetch, group, start, end, run_id=context.run_id)
            found = histories_to_reload(stored, batch, settings.suspicious_move_pct) if stored else {}
            if not found:
                return batch
            for ticker, why in found.items():
                context.log.warning(f"{ticker}: {why}; loading its whole history again, from {settings.start_date}")
            history = fetch_batch(
                fetch,
                list(found),
                settings.start_date,
                end,
                allow_partial=settings.allow_partial_loads,
                run_id=context.run_id,
            )
            reloaded.update(found)
            history_missing.update(history.missing_tickers)
            return with_history(batch, history, list(found))

        batch = stage_batch(fetch_group, tickers, start, end, folder, settings.source, settings.allow_partial_loads)
        if reloaded:  # as with_history reports them
            batch.missing_tickers = sorted({*batch.missing_tickers, *history_missing})
        return batch, reloaded

    def _load(
        context, runner: DagsterDltResource, batch: StagedBatch, tickers, start, end, restated, reloaded
    ) -> Iterator[MaterializeResult]:
        warehouse = settings.warehouse
        source = prices_source(batch, replace_tickers=bool(restated), file_format=raw_file_format(warehouse))
        with warehouse.stage_lock("extract", log=context.log.warning):
            # Created under the lock: creating it beside another run's load can wipe that
            # run's working folder (see pipeline_folder_lock).
            pipeline = extract_pipeline(settings)
            with (
                storage_errors("the extract", raw_file(warehouse), on_failure=pipeline.abort_packages),
                pipeline_settings(),
            ):
                # A package left by a stopped or killed run: dlt would load it instead of this
                # batch and return. Its run failed, and its range is fetched again when re-run.
                pipeline.abort_packages()
                results = list(
                    runner.run(
                        context=context, dlt_source=source, dlt_pipeline=pipeline, dagster_dlt_translator=translator
                    )
                )
                published = publish_raw(warehouse) if warehouse.engine == "spark" else []
                counts, by_partition = raw_row_counts(warehouse, start, end, partitions_def, context.partition_keys)
        # Missing tickers were logged with the source's reasons by missing_answers.
        if batch.quarantined:
            context.log.warning(
                f"quarantined {batch.quarantined} rows from the {batch.source} source ("
                + ", ".join(f"{n} {reason}" for reason, n in batch.reasons().items())
                + f"); see {QUARANTINE}"
            )
        if batch.not_kept:
            context.log.warning(
                f"{batch.not_kept_rows:,} more bad rows not stored, beyond {QUARANTINE_KEEP:,} per ticker and "
                "reason (see the metadata quarantine_not_kept)"
            )
        for rule, n in batch.warned.items():
            context.log.warning(f"loaded {n} rows with a warning: {rule}")
        context.log.info(f"loaded {batch.rows} rows into {RAW}")
        if published:
            context.log.info("published to Spark's lake: " + "; ".join(p.describe() for p in published))
        extra = {
            **batch_metadata(settings, batch, tickers, start, end),
            **counts,
            RELOADED: MetadataValue.text(json.dumps(reloaded, sort_keys=True)),
            **lake_metadata(published),
        }
        add_partition_row_counts(context, RAW_KEY, context.partition_keys, by_partition)
        for result in results:
            # The column schema is on the definition: copied into every partition's event it only costs.
            loaded = {k: v for k, v in (result.metadata or {}).items() if k != "dagster/column_schema"}
            yield MaterializeResult(asset_key=result.asset_key, metadata={**loaded, **extra})

    return extract_prices
