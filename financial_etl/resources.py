"""Everything built from the settings: dlt pipelines, SQLMesh config, the export target.

Environment is chosen once (the settings) and every resource is picked from it, so the
asset modules never read the environment themselves.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
import os

import dlt
from dagster import ConfigurableResource, EnvVar
from dlt.pipeline.pipeline import Pipeline
from sqlmesh import Context

from financial_etl.export_target import MSSQL_FIELDS, MSSQL_PREFIX, ExportTarget, export_target_for, mssql_env_fields
from financial_etl.settings import Settings
from financial_etl.sqlmesh_adapter import GATEWAY, ProjectSQLMeshConfig
from financial_etl.sources.prices import RAW_DATASET

# dlt reports anonymous usage to its vendor unless told not to: the pipeline talks only
# to the price source and the export target. An operator's own setting wins.
os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")
# Every raw and export row carries the dlt load that last wrote it (`_dlt_load_id`, see
# `_dlt_loads`): an analyst can tell when a row changed, and a restatement of one ticker
# provably leaves the other tickers' rows as they were.
os.environ.setdefault("NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID", "true")

EXTRACT_PIPELINE = "financial_extract"
EXPORT_PIPELINE = "financial_export"


class ExportDestination(ConfigurableResource):
    """The SQL Server settings as Dagster resource config: definitions pass EnvVars, so the
    UI and run config show variable names, never a password."""

    host: str | None = None
    port: str | None = None
    database: str | None = None
    username: str | None = None
    password: str | None = None
    driver: str | None = None
    trust_server_certificate: str | None = None
    url: str | None = None
    connect_timeout: str | None = None

    @classmethod
    def from_environment(cls, env=None) -> "ExportDestination":
        names = mssql_env_fields(os.environ if env is None else env)
        return cls(**{name.lower(): EnvVar(MSSQL_PREFIX + name) for name in names})

    def target(self, settings: Settings) -> ExportTarget:
        fields = {name: getattr(self, name.lower()) for name in MSSQL_FIELDS if getattr(self, name.lower())}
        return export_target_for(settings, mssql_fields=fields)


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
