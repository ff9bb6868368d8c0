"""Checks of marts.stock_metrics: one per SQLMesh audit of the model, as SQLMesh defines it.

Blocking audits are blocking checks (a failure keeps the export from running); each
result carries the violating-row count, a sample, the query and how to repair the dates.
"""

import datetime as dt
from collections.abc import Iterator

from dagster import (
    AssetCheckEvaluation,
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    MetadataValue,
    TimeWindowPartitionsDefinition,
    multi_asset_check,
)
from sqlmesh import Context

from financial_etl.metadata import markdown_table
from financial_etl.runs import check_range
from financial_etl.settings import Settings
from financial_etl.transform.audits import AuditOutcome, audit_names, evaluate_audits
from financial_etl.transform.sqlmesh_adapter import sqlmesh_context
from financial_etl.warehouse import MART, MART_KEY


def _backfill_hint(dates: tuple[dt.date, ...]) -> str:
    if not dates:
        return "Inspect the sample rows, fix the source, and re-materialize the affected partitions."
    first, last = dates[0].isoformat(), dates[-1].isoformat()
    years = first[:4] if first[:4] == last[:4] else f"{first[:4]} to {last[:4]}"
    return (
        f"Fix the source rows shown in the sample, then re-load {first} to {last}: "
        f"`financial-etl run --start {first} --end {last}`, or re-materialize partition {years} from the UI."
    )


def _audit_metadata(outcome: AuditOutcome, start: dt.date, end: dt.date) -> dict:
    metadata = {
        "violating_rows": MetadataValue.int(outcome.violations),
        "range": MetadataValue.text(f"{start} to {end}"),
        "query": MetadataValue.md(f"```sql\n{outcome.query}\n```"),
    }
    if not outcome.passed:
        metadata["sample"] = MetadataValue.md(markdown_table(outcome.sample))
        metadata["failing_partitions"] = MetadataValue.text(", ".join(d.isoformat() for d in outcome.dates[:50]))
        metadata["next_step"] = MetadataValue.text(_backfill_hint(outcome.dates))
    return metadata


def _audit_fields(outcome: AuditOutcome, start: dt.date, end: dt.date) -> dict:
    return {
        "asset_key": MART_KEY,
        "check_name": outcome.name,
        "passed": outcome.passed,
        "severity": AssetCheckSeverity.ERROR if outcome.blocking else AssetCheckSeverity.WARN,
        "metadata": _audit_metadata(outcome, start, end),
    }


def audit_result(outcome: AuditOutcome, start: dt.date, end: dt.date) -> AssetCheckResult:
    """The check's result, from the check step."""
    return AssetCheckResult(**_audit_fields(outcome, start, end))


def audit_evaluation(outcome: AuditOutcome, start: dt.date, end: dt.date) -> AssetCheckEvaluation:
    """The same result reported by the mart's own step when SQLMesh stopped at a blocking
    audit: that step fails, so the check step never runs in that run."""
    return AssetCheckEvaluation(**_audit_fields(outcome, start, end), blocking=outcome.blocking)


def build_mart_checks(settings: Settings, partitions_def: TimeWindowPartitionsDefinition, context: Context):
    """One check per audit of the model, as SQLMesh defines it (blocking audits block)."""
    audits = audit_names(context, MART)
    specs = [
        AssetCheckSpec(
            name,
            asset=MART_KEY,
            blocking=blocking,
            description=f"SQLMesh audit `{name}` of {MART} ({'blocking' if blocking else 'warns only'})",
        )
        for name, blocking in audits
    ]

    @multi_asset_check(specs=specs, can_subset=True, name="stock_metrics_audits")
    def stock_metrics_audits(context: AssetCheckExecutionContext) -> Iterator[AssetCheckResult]:
        start, end = check_range(context.run.tags, partitions_def, settings)
        selected = {key.name for key in context.selected_asset_check_keys}
        with settings.warehouse.reader_lock(log=context.log.warning), sqlmesh_context(settings) as mesh:
            outcomes = evaluate_audits(mesh, MART, start, end)
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
