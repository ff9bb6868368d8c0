"""Check of the export: the target holds the mart's rows for the range (count and sum)."""

from collections.abc import Iterator

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSpec,
    AssetKey,
    TimeWindowPartitionsDefinition,
    multi_asset_check,
)
from dlt.destinations.exceptions import DatabaseUndefinedRelation

from financial_etl.export.assets import export_pipeline
from financial_etl.export.destination import ExportDestination, export_target_for
from financial_etl.runs import check_range
from financial_etl.settings import Settings
from financial_etl.warehouse import MART


def build_export_check(settings: Settings, partitions_def: TimeWindowPartitionsDefinition, export_key: AssetKey):
    spec_target = export_target_for(settings)

    @multi_asset_check(
        specs=[AssetCheckSpec("reconciles_with_mart", asset=export_key,
                              description=f"{spec_target.description}: holds the mart's row count and sum of close_price for the range.")],
        name="export_reconciliation",
    )
    def export_reconciliation(
        context: AssetCheckExecutionContext, export_destination: ExportDestination
    ) -> Iterator[AssetCheckResult]:
        target = export_destination.target(settings)
        start, end = check_range(context.run.tags, partitions_def, settings)
        warehouse = settings.warehouse
        with warehouse.reader_lock(log=context.log.warning), warehouse.connect() as con:
            mart_rows, mart_sum = con.execute(
                f"SELECT count(*), coalesce(sum(close_price), 0) FROM {MART} WHERE trade_date BETWEEN ? AND ?",
                [start, end],
            ).fetchone()
        try:
            with export_pipeline(settings, target).sql_client() as client:
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
