"""The SQLMesh project's configuration: the one home of its gateway, dialect and variables.

It stands on its own: `sqlmesh -p sqlmesh_project plan` reads the warehouse and the start
date from FINANCIAL_ETL_DUCKDB_PATH and FINANCIAL_ETL_START_DATE (the orchestrator's
defaults otherwise). The orchestrator loads this file and calls `build_config` with its
validated settings, so both see the same warehouse, start date and look-back.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlmesh.core.config import Config, DuckDBConnectionConfig, GatewayConfig, ModelDefaultsConfig

GATEWAY = "duckdb_local"
# Every indicator reads at most the last 50 trading rows up to its own (sma_50_day): a
# batch reads that many rows before its first day, and a re-loaded day changes the mart
# up to that many rows later. The model reads it as @lookback_rows.
VARIABLES = {"lookback_rows": 50}
DEFAULT_DUCKDB_PATH = Path(__file__).resolve().parent.parent / "data" / "financial_etl.duckdb"
DEFAULT_START = "2020-01-01"


def build_config(duckdb_path: str, start_date: str, unit_tests: bool = True) -> Config:
    """SQLMesh keeps its state in the warehouse file itself, so a deleted warehouse never
    leaves stale interval state behind. `unit_tests=False` leaves tests/ unread (a
    pipeline run skips them; parsing their YAML was a quarter of a definitions load)."""
    return Config(
        gateways={GATEWAY: GatewayConfig(connection=DuckDBConnectionConfig(database=duckdb_path))},
        default_gateway=GATEWAY,
        model_defaults=ModelDefaultsConfig(dialect="duckdb", start=start_date),
        variables=VARIABLES,
        # No network in CI or on many servers; never phone home.
        disable_anonymized_analytics=True,
        ignore_patterns=[*Config.model_fields["ignore_patterns"].default, *([] if unit_tests else ["tests/*"])],
    )


config = build_config(
    os.environ.get("FINANCIAL_ETL_DUCKDB_PATH") or str(DEFAULT_DUCKDB_PATH),
    os.environ.get("FINANCIAL_ETL_START_DATE") or DEFAULT_START,
)
