"""Assembles the code location from the settings: nothing else lives here."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job, definitions
from dagster_dlt import DagsterDltResource
from dagster_sqlmesh import SQLMeshResource

from financial_etl.assets.export import build_export_asset
from financial_etl.assets.extract import build_extract_assets
from financial_etl.assets.transform import build_transform_assets
from financial_etl.automation import (
    build_daily_schedule,
    build_failure_sensor,
    build_new_ticker_sensor,
    build_restated_history_sensor,
)
from financial_etl.checks import MART_KEY, build_export_check, build_mart_checks, build_raw_checks
from financial_etl.partitions import year_partitions
from financial_etl.resources import ExportDestination, Project
from financial_etl.settings import Settings, load_settings

DAILY_JOB = "daily_stock_metrics"
CHECKS_JOB = "check_stock_metrics"


def build_definitions(settings: Settings) -> Definitions:
    project = Project(settings)
    partitions_def = year_partitions(settings.start_date)
    with project.sqlmesh_context() as mesh:  # loading the SQLMesh project costs ~0.6 s: once
        transform = build_transform_assets(project, partitions_def, mesh)
        mart_checks = build_mart_checks(project, partitions_def, mesh)
    mart_schema = transform.specs_by_key[MART_KEY].metadata.get("dagster/column_schema")
    export = build_export_asset(project, partitions_def, column_schema=mart_schema)
    assets = [build_extract_assets(project, partitions_def), transform, export]
    checks = [
        build_raw_checks(project, partitions_def),
        mart_checks,
        build_export_check(project, partitions_def, export.key),
    ]
    daily_job = define_asset_job(
        DAILY_JOB,
        selection="*",
        partitions_def=partitions_def,
        description="Extract, transform and export one partition range, checks included.",
    )
    checks_job = define_asset_job(
        CHECKS_JOB,
        selection=AssetSelection.all_asset_checks(),
        description="Re-evaluate every check against the current tables, materializing nothing.",
    )
    asset_keys = [spec.key for a in assets for spec in a.specs]
    return Definitions(
        assets=assets,
        asset_checks=checks,
        jobs=[daily_job, checks_job],
        schedules=[build_daily_schedule(project, daily_job, partitions_def)],
        sensors=[
            build_new_ticker_sensor(project, partitions_def, asset_keys),
            build_restated_history_sensor(project, partitions_def, asset_keys),
            build_failure_sensor(project, partitions_def, settings.alert_log, settings.alert_webhook_url),
        ],
        resources={
            "dlt": DagsterDltResource(),
            "sqlmesh": SQLMeshResource(),
            "export_destination": ExportDestination.from_environment(),
        },
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily by Dagster's tools, so importing this module builds nothing."""
    return build_definitions(load_settings())
