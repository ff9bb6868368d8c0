"""SQLMesh project configuration, for running `sqlmesh` by hand in this folder.

The pipeline builds the same config in Python (financial_etl.sqlmesh_adapter.mesh_config)
from the FINANCIAL_ETL_* settings, so both see the same warehouse and start date.
"""

from financial_etl.settings import load_settings
from financial_etl.sqlmesh_adapter import mesh_config

_settings = load_settings()
config = mesh_config(str(_settings.duckdb_path), _settings.start_date.isoformat())
