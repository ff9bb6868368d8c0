"""Every DuckDB connection the pipeline opens has the project's memory limit and spills
beside its file (sqlmesh_project/config.py, `duckdb_settings`): the warehouse's readers,
SQLMesh's gateway, dlt's raw destination and the export stand-in."""

import dlt

from financial_etl.export.destination import export_target_for
from financial_etl.extract.assets import raw_destination
from financial_etl.transform.sqlmesh_adapter import sqlmesh_context
from financial_etl.warehouse.project import DEFAULT_PROJECT_DIR, project_config_module
from financial_etl_tests.helpers import settings_for

SETTINGS = "SELECT current_setting('memory_limit'), current_setting('temp_directory')"


def test_every_duckdb_connection_has_the_memory_limit_and_a_spill_folder_beside_its_file(tmp_path):
    settings = settings_for(duckdb_path=str(tmp_path / "w.duckdb"))
    limit = project_config_module(str(DEFAULT_PROJECT_DIR)).DUCKDB_MEMORY_LIMIT
    assert limit == "512MB"
    expected = lambda path: ("488.2 MiB", f"{path}.tmp")  # noqa: E731 - DuckDB shows 512 MB in MiB

    def through_dlt(destination, path):
        pipeline = dlt.pipeline(
            pipeline_name=f"memory_{path.stem}",
            destination=destination,
            dataset_name="d",
            pipelines_dir=str(tmp_path / "dlt"),
        )
        pipeline.run([{"a": 1}], table_name="t")
        with pipeline.sql_client() as client:
            assert tuple(client.execute_sql(SETTINGS)[0]) == expected(path)

    through_dlt(raw_destination(settings.warehouse), settings.duckdb_path)
    through_dlt(export_target_for(settings, env={}).destination(), settings.export_duckdb_path)
    with sqlmesh_context(settings) as context:
        assert tuple(context.engine_adapter.fetchone(SETTINGS)) == expected(settings.duckdb_path)
    with settings.warehouse.connect() as con:
        assert tuple(con.execute(SETTINGS).fetchone()) == expected(settings.duckdb_path)
