"""Transform stage: the SQLMesh project (marts.stock_metrics) as a partitioned multi-asset."""

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence

from dagster import AssetExecutionContext, AssetRecordsFilter, AssetSpec, MaterializeResult, MetadataValue
from dagster_sqlmesh import SQLMeshResource
from dagster_sqlmesh.resource import PlanOrRunFailedError
from sqlmesh import Context

from financial_etl.calendar import add_partition_row_counts, partition_counts_sql
from financial_etl.errors import BlockingAuditError
from financial_etl.runs import run_dates
from financial_etl.settings import Settings
from financial_etl.transform.audits import evaluate_audits
from financial_etl.transform.chart import CHART_COLUMNS, png_markdown, price_chart_png
from financial_etl.transform.checks import audit_evaluation
from financial_etl.transform.metadata import model_column_lineage, model_table_schema
from financial_etl.transform.sqlmesh_adapter import (
    code_version,
    model_names,
    project_sqlmesh_config,
    recording_plans,
    run_range,
    sqlmesh_context,
    sqlmesh_multi_asset,
)
from financial_etl.warehouse import MART, MART_KEY, MART_TABLE, RAW, RAW_KEY, RAW_TABLE
from financial_etl.warehouse.engines import MissingTable
from financial_etl.warehouse.storage import storage_errors, warehouse_file

# The mart's metadata that the export reads: the date ranges SQLMesh's plans recomputed in
# the run (JSON [[start, end], ...]), and the version of the table prod serves (a new one
# after a model change, when SQLMesh rebuilt the whole history).
RECOMPUTED = "recomputed_ranges"
MART_VERSION = "mart_version"
MODEL_CHANGE = "model_change"
ROWS_RECOMPUTED = "rows_recomputed"
# Tickers whose whole history the run recomputed because the extract reloaded it (JSON list).
RELOADED_TICKERS = "reloaded_tickers"


def ranges_json(ranges: Sequence[tuple[dt.date, dt.date]]) -> str:
    return json.dumps([[a.isoformat(), b.isoformat()] for a, b in ranges])


def parse_ranges(text: str) -> list[tuple[dt.date, dt.date]]:
    return [(dt.date.fromisoformat(a), dt.date.fromisoformat(b)) for a, b in json.loads(text)]


def ranges_clause(column: str, ranges: Sequence[tuple[dt.date, dt.date]] | None) -> tuple[str, list]:
    """A WHERE condition for `column` in any of `ranges` (None: every row; []: no row)."""
    if ranges is None:
        return "TRUE", []
    if not ranges:
        return "FALSE", []
    return "(" + " OR ".join(f"{column} BETWEEN ? AND ?" for _ in ranges) + ")", [d for r in ranges for d in r]


MART_DESCRIPTION = (
    "Daily technical indicators per ticker (SMA 9/20/50, Bollinger bands, RSI 14, MACD, "
    f"ATR 14, returns, volume ratios), computed by SQLMesh from {RAW}. Each "
    "indicator is NULL until its window of trading rows is full. TA-Lib's recursive forms "
    "(EMA 12/26, MACD 12/26/9 with signal and histogram, Wilder RSI 14 and ATR 14) carry "
    "each ticker's state from its previous row, so any batching gives the same values."
)


def mart_static_metadata(context: Context) -> dict:
    return {
        "models": model_names(context),
        "code_version": code_version(context, MART),
        "column_schema": model_table_schema(context, MART),
        # the recursive columns also come from the mart's own previous row (their state)
        "column_lineage": model_column_lineage(context, MART, {RAW_TABLE: RAW_KEY, MART_TABLE: MART_KEY}),
    }


def window_reach_end(settings: Settings, end: dt.date) -> dt.date:
    """The last date whose indicators read a raw row dated on or before `end`: the last
    raw date. The recursive indicators (EMA, MACD, Wilder RSI and ATR) carry every row's
    value into the ticker's next one, so re-loading [start, end] changes the mart through
    the end of the history (the windowed ones only up to lookback_rows - 1 rows later), and
    the transform and the export recompute that far. A daily run at the newest date: just
    `end`."""
    with settings.warehouse.connect() as con:
        try:
            (reach,) = con.execute(f"SELECT max(date) FROM {RAW} WHERE date > ?", [end]).fetchone()
        except MissingTable:
            return end
    return max(end, reach) if reach else end


def _row_counts(settings: Settings, start, end, partitions_def, keys, recomputed) -> tuple[dict, list[int]]:
    per_key, params = partition_counts_sql("trade_date", partitions_def, keys)
    clause, clause_params = ranges_clause("trade_date", recomputed)
    with settings.warehouse.connect() as con:
        total, in_range, rewritten, *by_key = con.execute(
            f"SELECT count(*), count(CASE WHEN trade_date BETWEEN ? AND ? THEN 1 END), "
            f"count(CASE WHEN {clause} THEN 1 END), {per_key} FROM {MART}",
            [start, end, *clause_params, *params],
        ).fetchone()
    return {
        "dagster/row_count": MetadataValue.int(total),
        "table_rows_in_range": MetadataValue.int(in_range),
        ROWS_RECOMPUTED: MetadataValue.int(rewritten),
        "range": MetadataValue.text(f"{start} to {end}"),
    }, by_key


# About a year of sessions on the chart.
CHART_ROWS = 252


def _chart(settings: Settings, end: dt.date, warn: Callable[[str], None]) -> dict:
    """The `chart` metadata: the first ticker of the universe (alphabetically) that has
    rows, its last CHART_ROWS rows up to `end`. Empty when there is nothing to draw. A
    chart that fails to draw is logged, never fails the run: the rows are already written."""
    universe = sorted(settings.current_tickers())
    with settings.warehouse.connect() as con:
        (ticker,) = con.execute(
            f"SELECT min(ticker) FROM {MART} WHERE ticker IN ({', '.join('?' * len(universe))}) AND trade_date <= ?",
            [*universe, end],
        ).fetchone()
        if ticker is None:
            return {}
        frame = con.execute(
            f"SELECT {', '.join(CHART_COLUMNS)} FROM {MART} WHERE ticker = ? AND trade_date <= ? "
            "ORDER BY trade_date DESC LIMIT ?",
            [ticker, end, CHART_ROWS],
        ).df()
    span = f"{ticker}, {frame['trade_date'].min():%Y-%m-%d} to {frame['trade_date'].max():%Y-%m-%d}"
    try:
        png = price_chart_png(frame, title=f"{span}: close, SMA 20, SMA 50, Bollinger bands")
    except Exception as exc:  # noqa: BLE001 - a picture must not fail the data
        warn(f"no chart for {ticker}: {type(exc).__name__}: {exc}")
        return {}
    caption = f"{span} ({len(frame)} session{'s' * (len(frame) != 1)})"
    return {"chart": MetadataValue.md(png_markdown(png, caption=caption))}


def build_transform_assets(settings: Settings, partitions_def, context: Context):
    """`context`: the SQLMesh project, loaded once for all definitions."""
    config = project_sqlmesh_config(settings)
    static = mart_static_metadata(context)
    spec_metadata = {
        "dagster/column_schema": static["column_schema"],
        "dagster/column_lineage": static["column_lineage"],
    }

    @sqlmesh_multi_asset(config=config, partitions_def=partitions_def)
    def sqlmesh_models(context: AssetExecutionContext, sqlmesh: SQLMeshResource) -> Iterator[MaterializeResult]:
        start, end = run_dates(context, settings)
        warehouse = settings.warehouse
        with (
            warehouse.stage_lock("sqlmesh", log=context.log.warning),
            storage_errors("the SQLMesh run", warehouse_file(warehouse)),
        ):
            yield from _transform(context, sqlmesh, start, end)

    def _transform(context, sqlmesh, start, end) -> Iterator[MaterializeResult]:
        reach = window_reach_end(settings, end)
        reloaded = reloaded_since(context) if start > settings.start_date else []
        first = settings.start_date if reloaded else start
        context.log.info(
            f"SQLMesh prod: recomputing {', '.join(static['models'])} for {start} to {end}"
            + (f", and on to {reach}: later rows' indicators read this range" if reach > end else "")
            + (f"; from {first}, as raw reloaded the whole history of {', '.join(reloaded)}" if reloaded else "")
        )
        try:
            with recording_plans() as recorded:
                results = list(run_range(context, sqlmesh, config, first, reach, restate=static["models"]))
        except PlanOrRunFailedError as exc:
            with sqlmesh_context(settings) as mesh:
                outcomes = evaluate_audits(mesh, MART, start, end)
            failing = [o.name for o in outcomes if o.blocking and not o.passed]
            if not failing:
                raise
            # SQLMesh wrote the rows, then stopped at a blocking audit: the step fails (so the
            # export does not run) and the rows stay for inspection. The check step never
            # runs after a failed step, so this step reports every audit's result itself.
            for outcome in outcomes:
                yield audit_evaluation(outcome, start, end)
            raise BlockingAuditError(
                f"SQLMesh stopped at failing blocking audits of {MART} ({', '.join(failing)}) for {start} to "
                f"{end}; the rows stay in {MART} for inspection and the export did not run"
            ) from exc
        recomputed = recorded.intervals.get(MART, [])
        change = recorded.changes.get(MART, "none")
        if reloaded and change == "none":
            # Other tickers' older rows came out the same: only the reloaded ones changed there.
            recomputed = [(max(a, start), b) for a, b in recomputed if b >= start]
        if change != "none":
            context.log.info(f"SQLMesh: {MART} changed ({change}), recomputed {_describe(recomputed)}")
        keys = context.partition_keys
        counts, by_partition = _row_counts(settings, start, end, partitions_def, keys, recomputed)
        add_partition_row_counts(context, MART_KEY, keys, by_partition)
        # The chart once per run, on its newest partition; schema and lineage are on the
        # definition. Copied into every partition's event they made a 25-year history cost GBs.
        if chart := _chart(settings, end, context.log.warning):
            context.add_asset_metadata(chart, asset_key=MART_KEY, partition_key=keys[-1])
        for result in results:
            yield MaterializeResult(
                asset_key=result.asset_key,
                metadata={
                    **(result.metadata or {}),
                    **counts,
                    RECOMPUTED: MetadataValue.text(ranges_json(recomputed)),
                    MODEL_CHANGE: MetadataValue.text(change),
                    RELOADED_TICKERS: MetadataValue.text(json.dumps(reloaded)),
                    **(
                        {MART_VERSION: MetadataValue.text(recorded.versions[MART])} if MART in recorded.versions else {}
                    ),
                },
            )

    def mart_attributes(spec: AssetSpec) -> AssetSpec:
        if spec.key != MART_KEY:
            return spec
        return spec.replace_attributes(
            description=MART_DESCRIPTION,
            code_version=static["code_version"],
            owners=[settings.owner],
            metadata=spec_metadata,
        )

    return sqlmesh_models.map_asset_specs(mart_attributes)


def metadata_since(instance, own_key, upstream_key) -> list[dict]:
    """The metadata of `upstream_key`'s materializations since `own_key`'s last one, oldest
    first: this run's, and those of runs whose step for `own_key` failed."""
    last = instance.fetch_materializations(own_key, limit=1).records
    after = last[0].storage_id if last else None
    events = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=upstream_key, after_storage_id=after), limit=10_000
    ).records
    return [
        r.asset_materialization.metadata if r.asset_materialization else {}
        for r in sorted(events, key=lambda r: r.storage_id)
    ]


def reloaded_since(context: AssetExecutionContext) -> list[str]:
    """The tickers whose whole history the extract loaded again since the mart's last
    materialization (this run's extract, or a run whose transform failed)."""
    from financial_etl.extract.assets import RELOADED

    tickers: set[str] = set()
    for metadata in metadata_since(context.instance, MART_KEY, RAW_KEY):
        if RELOADED in metadata:
            tickers |= set(json.loads(str(metadata[RELOADED].value)))
    return sorted(tickers)


def _describe(ranges) -> str:
    return ", ".join(f"{a} to {b}" for a, b in ranges) or "nothing"
