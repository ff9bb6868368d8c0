"""Transform group: the SQLMesh project (marts.stock_metrics) as a partitioned multi-asset."""


from collections.abc import Iterator

from dagster import AssetExecutionContext, MaterializeResult
from dagster_sqlmesh import SQLMeshResource

from financial_etl.partitions import run_dates
from financial_etl.resources import Project
from financial_etl.sqlmesh_adapter import model_names, run_range, sqlmesh_multi_asset

MART_DESCRIPTION = (
    "Daily technical indicators per ticker (SMA 9/20/50, Bollinger bands, RSI 14, MACD, "
    "ATR 14, returns, volume ratios), computed by SQLMesh from raw.eod_prices_raw."
)


def build_transform_assets(project: Project, partitions_def):
    config = project.sqlmesh_config
    models = model_names(config)

    @sqlmesh_multi_asset(
        config=config,
        partitions_def=partitions_def,
        descriptions={"marts/stock_metrics": MART_DESCRIPTION},
    )
    def sqlmesh_models(context: AssetExecutionContext, sqlmesh: SQLMeshResource) -> Iterator[MaterializeResult]:
        start, end = run_dates(context)
        context.log.info(f"SQLMesh prod: recomputing {', '.join(models)} for {start} to {end}")
        yield from run_range(context, sqlmesh, config, start, end, restate=models)

    return sqlmesh_models
