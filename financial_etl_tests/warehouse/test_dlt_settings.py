"""dlt's settings reach the pipelines the project creates and runs, and only inside them;
an operator's own setting wins."""

import dlt
import pytest

from financial_etl.warehouse.dlt_settings import pipeline_settings

LOAD_ID = "normalize.parquet_normalizer.add_dlt_load_id"


@pytest.fixture
def no_operator_settings(monkeypatch):
    for name in ("RUNTIME__INTERCEPT_SIGNALS", "NORMALIZE__PARQUET_NORMALIZER__ADD_DLT_LOAD_ID"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def _pipeline(tmp_path, name):
    return dlt.pipeline(
        pipeline_name=name,
        destination=dlt.destinations.duckdb(str(tmp_path / "d.duckdb")),
        pipelines_dir=str(tmp_path / "pipelines"),
    )


def test_pipelines_created_inside_leave_signals_to_dagster_and_rows_carry_their_load_id(tmp_path, no_operator_settings):
    with pipeline_settings():
        pipeline = _pipeline(tmp_path, "inside")
        assert dlt.config[LOAD_ID] is True
    assert pipeline.runtime_config.intercept_signals is False
    assert LOAD_ID not in dlt.config  # nothing outlives the block
    assert _pipeline(tmp_path, "outside").runtime_config.intercept_signals is True  # dlt's default


def test_an_operators_own_setting_wins(tmp_path, no_operator_settings):
    no_operator_settings.setenv("RUNTIME__INTERCEPT_SIGNALS", "true")
    with pipeline_settings():
        assert _pipeline(tmp_path, "operator").runtime_config.intercept_signals is True


def test_a_loaded_table_carries_the_load_id_column(tmp_path, no_operator_settings):
    import pyarrow as pa

    with pipeline_settings():
        pipeline = _pipeline(tmp_path, "rows")
        info = pipeline.run(pa.table({"x": [1, 2]}), table_name="t")
    with pipeline.sql_client() as client:
        rows = client.execute_sql("SELECT _dlt_load_id FROM t")
    assert {r[0] for r in rows} == {info.loads_ids[0]}
