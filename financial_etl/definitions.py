"""Assembles the code location from the settings: nothing else lives here."""

from __future__ import annotations

from dagster import Definitions, define_asset_job, definitions
from dagster_dlt import DagsterDltResource
from dagster_sqlmesh import SQLMeshResource

from financial_etl.assets.export import build_export_asset
from financial_etl.assets.extract import build_extract_assets
from financial_etl.assets.transform import build_transform_assets
from financial_etl.partitions import trading_day_partitions
from financial_etl.resources import Project
from financial_etl.settings import Settings, load_settings

DAILY_JOB = "daily_stock_metrics"


def build_definitions(settings: Settings) -> Definitions:
    project = Project(settings)
    partitions_def = trading_day_partitions(settings.start_date)
    assets = [
        build_extract_assets(project, partitions_def),
        build_transform_assets(project, partitions_def),
        build_export_asset(project, partitions_def),
    ]
    daily_job = define_asset_job(
        DAILY_JOB,
        selection="*",
        partitions_def=partitions_def,
        description="Extract, transform and export one partition range, checks included.",
    )
    return Definitions(
        assets=assets,
        jobs=[daily_job],
        resources={"dlt": DagsterDltResource(), "sqlmesh": SQLMeshResource()},
    )


@definitions
def defs() -> Definitions:
    """Loaded lazily by Dagster's tools, so importing this module builds nothing."""
    return build_definitions(load_settings())
