"""SQLMesh project configuration.

The warehouse path and start date come from the same FINANCIAL_ETL_* settings the
Dagster code location uses, so `sqlmesh` run by hand in this folder sees the same
database as the pipeline. SQLMesh keeps its state in the warehouse file itself, so a
deleted warehouse can never leave stale interval state behind.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlmesh.core.config import (
    Config,
    DuckDBConnectionConfig,
    GatewayConfig,
    ModelDefaultsConfig,
)

_REPO_ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_DUCKDB = _REPO_ROOT / "data" / "financial_etl.duckdb"

duckdb_path = os.environ.get("FINANCIAL_ETL_DUCKDB_PATH") or str(_DEFAULT_DUCKDB)
start_date = os.environ.get("FINANCIAL_ETL_START_DATE") or "2020-01-01"

config = Config(
    gateways={
        "duckdb_local": GatewayConfig(
            connection=DuckDBConnectionConfig(database=duckdb_path),
        )
    },
    default_gateway="duckdb_local",
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start=start_date),
    # No network in CI or on many servers; never phone home.
    disable_anonymized_analytics=True,
)
