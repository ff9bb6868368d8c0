"""Asset checks: SQLMesh audits of the mart (discovered from the model), the raw table's
grain and completeness, and the export's reconciliation with the mart.

Checks live in their own steps, so in a materializing run they run right after their
asset (same run), and from the UI's "Execute checks" or `financial-etl check` they
re-evaluate the current tables without materializing anything. A run's partition range
limits what they look at; run alone, they look at the whole configured range.
"""

import datetime as dt
from collections.abc import Iterator

import duckdb
from dlt.destinations.exceptions import DatabaseUndefinedRelation
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    multi_asset_check,
)

from financial_etl.audits import AuditOutcome, audit_names, evaluate_audits
from financial_etl.metadata import markdown_table
from financial_etl.partitions import run_window
from financial_etl.resources import Project
from financial_etl.run_tags import run_tickers
from financial_etl.sources.contract import count_rules
from financial_etl.sources.prices import QUARANTINE_TABLE, RAW_DATASET, RAW_TABLE
from financial_etl.warehouse_lock import warehouse_lock
from financial_etl.calendar import trading_sessions

MART_MODEL = "marts.stock_metrics"
MART_KEY = AssetKey(["marts", "stock_metrics"])
RAW_KEY = AssetKey([RAW_DATASET, RAW_TABLE])
QUARANTINE = f"{RAW_DATASET}.{QUARANTINE_TABLE}"
CHECK_START_TAG = "financial_etl/check_start"
CHECK_END_TAG = "financial_etl/check_end"


def check_range(
    context: AssetCheckExecutionContext, project: Project, partitions_def: TimeWindowPartitionsDefinition
) -> tuple[dt.date, dt.date]:
    """The dates the run covers, else the whole configured range."""
    tags = context.run.tags
    if CHECK_START_TAG in tags and CHECK_END_TAG in tags:  # `financial-etl check --start/--end`
        return dt.date.fromisoformat(tags[CHECK_START_TAG]), dt.date.fromisoformat(tags[CHECK_END_TAG])
    return run_window(tags, partitions_def, project.settings) or (
        project.settings.start_date, project.settings.resolved_end()
    )


def _backfill_hint(dates: tuple[dt.date, ...]) -> str:
    if not dates:
        return "Inspect the sample rows, fix the source, and re-materialize the affected partitions."
    first, last = dates[0].isoformat(), dates[-1].isoformat()
    years = first[:4] if first[:4] == last[:4] else f"{first[:4]} to {last[:4]}"
    return (
        f"Fix the source rows shown in the sample, then re-load {first} to {last}: "
        f"`financial-etl run --start {first} --end {last}`, or re-materialize partition {years} from the UI."
    )


def audit_result(outcome: AuditOutcome, start: dt.date, end: dt.date) -> AssetCheckResult:
    metadata = {
        "violating_rows": MetadataValue.int(outcome.violations),
        "range": MetadataValue.text(f"{start} to {end}"),
        "query": MetadataValue.md(f"```sql\n{outcome.query}\n```"),
    }
    if not outcome.passed:
        metadata["sample"] = MetadataValue.md(markdown_table(outcome.sample))
        metadata["failing_partitions"] = MetadataValue.text(", ".join(d.isoformat() for d in outcome.dates[:50]))
        metadata["next_step"] = MetadataValue.text(_backfill_hint(outcome.dates))
    return AssetCheckResult(
        asset_key=MART_KEY,
        check_name=outcome.name,
        passed=outcome.passed,
        severity=AssetCheckSeverity.ERROR if outcome.blocking else AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def build_mart_checks(project: Project, partitions_def: TimeWindowPartitionsDefinition, context):
    """One check per audit of the model, as SQLMesh defines it (blocking audits block)."""
    audits = audit_names(context, MART_MODEL)
    specs = [
        AssetCheckSpec(
            name,
            asset=MART_KEY,
            blocking=blocking,
            description=f"SQLMesh audit `{name}` of {MART_MODEL} ({'blocking' if blocking else 'warns only'})",
        )
        for name, blocking in audits
    ]

    @multi_asset_check(specs=specs, can_subset=True, name="stock_metrics_audits")
    def stock_metrics_audits(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        start, end = check_range(context, project, partitions_def)
        selected = {key.name for key in context.selected_asset_check_keys}
        with warehouse_lock(project.settings.duckdb_path, log=context.log.info), project.sqlmesh_context() as mesh:
            outcomes = evaluate_audits(mesh, MART_MODEL, start, end)
        for outcome in outcomes:
            if outcome.name not in selected:
                continue
            if not outcome.passed:
                log = context.log.error if outcome.blocking else context.log.warning
                log(
                    f"audit {outcome.name} failed on {outcome.violations} rows of {start} to {end}. "
                    + _backfill_hint(outcome.dates)
                )
            yield audit_result(outcome, start, end)

    return stock_metrics_audits


def build_raw_checks(project: Project, partitions_def: TimeWindowPartitionsDefinition):
    settings = project.settings

    @multi_asset_check(
        specs=[
            AssetCheckSpec("no_duplicate_ticker_date", asset=RAW_KEY, blocking=True,
                           description="The (ticker, date) grain holds: no row appears twice."),
            AssetCheckSpec("no_rows_outside_requested_range", asset=RAW_KEY,
                           description="No row is dated outside FINANCIAL_ETL_START_DATE to the end date."),
            AssetCheckSpec("complete_sessions", asset=RAW_KEY,
                           description="Every requested ticker has a row on every XNYS session of the range (warns)."),
            AssetCheckSpec("no_new_quarantined_rows", asset=RAW_KEY,
                           description=f"This run added no row to {QUARANTINE}, the rows that broke the raw "
                                       "contract (warns, with the count and the reasons)."),
        ],
        can_subset=True,
        name="raw_prices_checks",
    )
    def raw_prices_checks(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        start, end = check_range(context, project, partitions_def)
        selected = {key.name for key in context.selected_asset_check_keys}
        with warehouse_lock(settings.duckdb_path, log=context.log.info), duckdb.connect(
            str(settings.duckdb_path), read_only=True
        ) as con:
            if "no_duplicate_ticker_date" in selected:
                dupes = con.execute(
                    "SELECT ticker, date, count(*) AS copies FROM raw.eod_prices_raw "
                    "GROUP BY ticker, date HAVING count(*) > 1 ORDER BY ticker, date"
                ).df()
                yield AssetCheckResult(
                    check_name="no_duplicate_ticker_date",
                    passed=dupes.empty,
                    metadata={"duplicate_keys": len(dupes), "sample": MetadataValue.md(markdown_table(dupes))},
                )
            if "no_rows_outside_requested_range" in selected:
                lo, hi = settings.start_date, settings.resolved_end()
                outside = con.execute(
                    "SELECT ticker, date FROM raw.eod_prices_raw WHERE date < ? OR date > ? ORDER BY date",
                    [lo, hi],
                ).df()
                yield AssetCheckResult(
                    check_name="no_rows_outside_requested_range",
                    passed=outside.empty,
                    metadata={
                        "requested_range": f"{lo} to {hi}",
                        "rows_outside": len(outside),
                        "sample": MetadataValue.md(markdown_table(outside)),
                    },
                )
            if "no_new_quarantined_rows" in selected:
                yield quarantine_result(con, context.run.run_id, context)
            if "complete_sessions" in selected:
                present = con.execute(
                    "SELECT ticker, date FROM raw.eod_prices_raw WHERE date BETWEEN ? AND ?", [start, end]
                ).fetchall()
        if "complete_sessions" in selected:
            yield completeness_result(run_tickers(context.run.tags, settings), present, start, end, context)

    return raw_prices_checks


def quarantine_result(con, run_id: str, context) -> AssetCheckResult:
    """Warns when this run quarantined rows; a check-only run adds none, so it passes."""
    try:
        new = con.execute(
            f"SELECT ticker, date, reason, location, source FROM {QUARANTINE} WHERE run_id = ? ORDER BY ticker, date",
            [run_id],
        ).df()
        total = con.execute(f"SELECT count(*) FROM {QUARANTINE}").fetchone()[0]
    except duckdb.CatalogException:  # a warehouse from before the quarantine existed
        new, total = None, 0
    added = 0 if new is None else len(new)
    metadata = {"quarantined_this_run": added, "quarantine_total": int(total)}
    if added:
        rules = count_rules(new["reason"])
        metadata["by_reason"] = MetadataValue.md("\n".join(f"- {rule}: {n}" for rule, n in rules.items()))
        metadata["sample"] = MetadataValue.md(markdown_table(new.head(20)))
        metadata["next_step"] = MetadataValue.text(
            f"Inspect `SELECT * FROM {QUARANTINE} WHERE run_id = '{run_id}'`, fix the source, "
            "and re-run the affected dates; quarantined rows never reach the mart."
        )
        context.log.warning(f"{added} rows quarantined by this run ({', '.join(rules)}); see {QUARANTINE}")
    return AssetCheckResult(
        check_name="no_new_quarantined_rows",
        passed=added == 0,
        severity=AssetCheckSeverity.WARN,
        metadata=metadata,
    )


def completeness_result(tickers, present, start, end, context) -> AssetCheckResult:
    sessions = trading_sessions(start, end)
    have: dict[str, set[dt.date]] = {t: set() for t in tickers}
    for ticker, day in present:
        have.setdefault(ticker, set()).add(day)
    missing = {t: [d for d in sessions if d not in have[t]] for t in tickers}
    missing = {t: days for t, days in missing.items() if days}
    lines = [
        f"{t}: {len(days)} sessions missing, " + ", ".join(d.isoformat() for d in days[:10]) + (" ..." if len(days) > 10 else "")
        for t, days in missing.items()
    ]
    if missing:
        context.log.warning("raw.eod_prices_raw is missing sessions:\n" + "\n".join(lines))
    return AssetCheckResult(
        check_name="complete_sessions",
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "range": f"{start} to {end}",
            "sessions_in_range": len(sessions),
            "missing_sessions": sum(len(d) for d in missing.values()),
            "missing": MetadataValue.md("\n".join(f"- {line}" for line in lines) or "_none_"),
        },
    )


def build_export_check(project: Project, partitions_def: TimeWindowPartitionsDefinition, export_key: AssetKey):
    from financial_etl.assets.export import export_pipeline
    from financial_etl.resources import ExportDestination

    spec_target = project.export_target

    @multi_asset_check(
        specs=[AssetCheckSpec("reconciles_with_mart", asset=export_key,
                              description=f"{spec_target.description}: holds the mart's row count and sum of close_price for the range.")],
        name="export_reconciliation",
    )
    def export_reconciliation(
        context: AssetCheckExecutionContext, export_destination: ExportDestination
    ) -> Iterator[AssetCheckResult]:
        target = export_destination.target(project.settings)
        start, end = check_range(context, project, partitions_def)
        with warehouse_lock(project.settings.duckdb_path, log=context.log.info), duckdb.connect(
            str(project.settings.duckdb_path), read_only=True
        ) as con:
            mart_rows, mart_sum = con.execute(
                "SELECT count(*), coalesce(sum(close_price), 0) FROM marts.stock_metrics WHERE trade_date BETWEEN ? AND ?",
                [start, end],
            ).fetchone()
        try:
            with export_pipeline(project, target).sql_client() as client:
                table = client.make_qualified_table_name(target.table)
                target_rows, target_sum = client.execute_sql(
                    f"SELECT count(*), coalesce(sum(close_price), 0) FROM {table} WHERE trade_date BETWEEN %s AND %s",
                    start, end,
                )[0]
        except DatabaseUndefinedRelation:
            target_rows, target_sum = 0, 0.0  # nothing exported yet
        target_sum = float(target_sum)
        same_sum = abs(target_sum - mart_sum) <= 1e-9 * max(abs(mart_sum), 1.0)
        yield AssetCheckResult(
            check_name="reconciles_with_mart",
            passed=bool(target_rows == mart_rows and same_sum),
            metadata={
                "range": f"{start} to {end}",
                "mart_rows": int(mart_rows),
                "target_rows": int(target_rows),
                "mart_sum_close_price": float(mart_sum),
                "target_sum_close_price": target_sum,
                "target": target.description,
            },
        )

    return export_reconciliation
