"""sqlmesh_project/config.py, loaded by path: the one home of the gateways, shared by the
transform (SQLMesh's context) and the warehouse's own connections (Spark's settings,
DuckDB's memory limit)."""

from __future__ import annotations

import functools
import importlib.util
import types
from pathlib import Path

DEFAULT_PROJECT_DIR = Path(__file__).resolve().parents[2] / "sqlmesh_project"


@functools.cache
def project_config_module(project_dir: str) -> types.ModuleType:
    """sqlmesh_project/config.py, loaded by path: the SQLMesh project stays a plain folder
    that `sqlmesh -p` reads on its own, and this package reads the same gateway, dialect
    and variables from it."""
    path = Path(project_dir) / "config.py"
    spec = importlib.util.spec_from_file_location(f"sqlmesh_project_config_{abs(hash(project_dir))}", path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"no SQLMesh config at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def duckdb_settings(database: Path, project_dir: Path | None = None) -> dict[str, str]:
    """The settings every DuckDB connection to `database` opens with (config.py's
    `duckdb_settings`: a memory limit, and the folder beside it that DuckDB spills to)."""
    return project_config_module(str(project_dir or DEFAULT_PROJECT_DIR)).duckdb_settings(str(database))
