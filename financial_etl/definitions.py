"""Assembles the code location from the settings: each stage's definitions, merged."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, definitions, in_process_executor
from dagster_dlt import DagsterDltResource

from financial_etl.automation.alerts import build_failure_sensors
from financial_etl.automation.freshness import due_by_deadline
from financial_etl.automation.schedule import build_daily_schedule
from financial_etl.automation.sensors import build_new_ticker_sensor, build_restated_history_sensor
from financial_etl.calendar import year_partitions
from financial_etl.export.assets import build_export_asset
from financial_etl.export.checks import build_export_check
from financial_etl.export.destination import ExportDestination
from financial_etl.extract.assets import build_extract_assets
from financial_etl.extract.checks import build_raw_checks
from financial_etl.runs import WAREHOUSE_TAG
from financial_etl.settings import Settings, load_settings
from financial_etl.transform.assets import build_transform_assets
from financial_etl.transform.checks import build_mart_checks
from financial_etl.transform.sqlmesh_adapter import ProjectSQLMeshResource, sqlmesh_context
from financial_etl.warehouse import MART_KEY

DAILY_JOB = "daily_stock_metrics"
CHECKS_JOB = "check_stock_metrics"


def extract_definitions(settings: Settings, partitions_def) -> Definitions:
    return Definitions(
        assets=[build_extract_assets(settings, partitions_def)],
        asset_checks=[build_raw_checks(settings, partitions_def)],
        resources={"dlt": DagsterDltResource()},
    )


def transform_definitions(settings: Settings, partitions_def) -> Definitions:
    with sqlmesh_context(settings) as mesh:  # loading the SQLMesh project costs ~0.6 s: once
        return Definitions(
            assets=[build_transform_assets(settings, partitions_def, mesh)],
            asset_checks=[build_mart_checks(settings, partitions_def, mesh)],
            resources={"sqlmesh": ProjectSQLMeshResource()},
        )


def export_definitions(settings: Settings, partitions_def, mart_spec) -> Definitions:
    export = build_export_asset(
        settings,
        partitions_def,
        column_schema=mart_spec.metadata.get("dagster/column_schema"),
        code_version=mart_spec.code_version,
    )
    return Definitions(
        assets=[export],
        asset_checks=[build_export_check(settings, partitions_def, export.key)],
        resources={"export_destination": ExportDestination.from_environment()},
    )


def automation_definitions(settings: Settings, partitions_def, asset_keys) -> Definitions:
    daily_job = define_asset_job(
        DAILY_JOB,
        selection="*",
        partitions_def=partitions_def,
        description="Extract, transform and export one partition range, checks included.",
        tags={WAREHOUSE_TAG: settings.warehouse.engine},
        # A local Spark's catalog admits one process: its steps share the run's process.
        executor_def=in_process_executor if settings.warehouse.engine == "spark" else None,
    )
    checks_job = define_asset_job(
        CHECKS_JOB,
        selection=AssetSelection.all_asset_checks(),
        description="Re-evaluate every check against the current tables, materializing nothing.",
        tags={WAREHOUSE_TAG: settings.warehouse.engine},
    )
    return Definitions(
        jobs=[daily_job, checks_job],
        schedules=[build_daily_schedule(settings, daily_job)],
        sensors=[
            build_new_ticker_sensor(settings, asset_keys),
            build_restated_history_sensor(settings, asset_keys),
            *build_failure_sensors(settings, partitions_def),
        ],
    )


def build_definitions(settings: Settings) -> Definitions:
    partitions_def = year_partitions(settings.start_date)
    extract = extract_definitions(settings, partitions_def)
    transform = transform_definitions(settings, partitions_def)
    mart_spec = transform.resolve_assets_def(MART_KEY).specs_by_key[MART_KEY]
    export = export_definitions(settings, partitions_def, mart_spec)
    # What analysts read is due each evening: late shows in the UI (automation/freshness.py).
    transform, export = (due_by_deadline(stage, settings.freshness_deadline_cron) for stage in (transform, export))
    stages = [extract, transform, export]
    asset_keys = [spec.key for stage in stages for spec in stage.resolve_all_asset_specs()]
    return Definitions.merge(*stages, automation_definitions(settings, partitions_def, asset_keys))


@definitions
def defs() -> Definitions:
    """Loaded lazily by Dagster's tools, so importing this module builds nothing."""
    return build_definitions(load_settings())
