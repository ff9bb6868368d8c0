"""Everything built from the settings: dlt pipelines, SQLMesh config, the export target.

Environment is chosen once (the settings) and every resource is picked from it, so the
asset modules never read the environment themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property

import dlt
from sqlmesh import Context
from dlt.pipeline.pipeline import Pipeline

from financial_etl.export_target import ExportTarget, export_target_for
from financial_etl.settings import Settings
from financial_etl.sqlmesh_adapter import GATEWAY, ProjectSQLMeshConfig
from financial_etl.sources.prices import RAW_DATASET

EXTRACT_PIPELINE = "financial_extract"
EXPORT_PIPELINE = "financial_export"


@dataclass(frozen=True)
class Project:
    settings: Settings

    def extract_pipeline(self) -> Pipeline:
        return dlt.pipeline(
            pipeline_name=EXTRACT_PIPELINE,
            destination=dlt.destinations.duckdb(str(self.settings.duckdb_path)),
            dataset_name=RAW_DATASET,
            pipelines_dir=str(self.settings.pipelines_dir),
        )

    @cached_property
    def sqlmesh_config(self) -> ProjectSQLMeshConfig:
        return ProjectSQLMeshConfig(
            path=str(self.settings.sqlmesh_project_dir),
            gateway=GATEWAY,
            duckdb_path=str(self.settings.duckdb_path),
            start_date=self.settings.start_date.isoformat(),
        )

    @contextmanager
    def sqlmesh_context(self) -> Iterator[Context]:
        """A SQLMesh context on the warehouse, closed with all its connections after use:
        `Context.close()` leaves the engine adapter's DuckDB connection open when no plan
        ran, and DuckDB then refuses a read-only connection from the same process."""
        config = self.sqlmesh_config
        context = Context(paths=config.path, gateway=config.gateway, config=config.sqlmesh_config)
        try:
            yield context
        finally:
            context.close()
            for adapter in context.engine_adapters.values():
                adapter.close()

    @cached_property
    def export_target(self) -> ExportTarget:
        return export_target_for(self.settings)
