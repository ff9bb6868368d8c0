"""Checks and metadata across the graph: every check of every stage gives the same result
run alone as in a materializing run, and every asset carries the row counts, schema,
lineage, owner and code version an operator reads in the UI."""

import shutil

import pytest
from dagster import AssetKey

from financial_etl.calendar import trading_sessions
from financial_etl.cli.main import execute_range, main
from financial_etl.definitions import build_definitions
from financial_etl.errors import EXIT_SUCCESS
from financial_etl.settings import SQLMESH_PROJECT_DIR, load_settings
from financial_etl_tests.helpers import day

MART = AssetKey(["marts", "stock_metrics"])
RAW = AssetKey(["raw", "eod_prices_raw"])
EXPORT = AssetKey(["dbo", "Dim_Stock_Metrics"])
START, END = day("2024-02-01"), day("2024-03-28")
SESSIONS = len(trading_sessions(START, END))  # XNYS: Presidents' Day is closed


def _evaluations(result):
    return {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}


def _materialized(result):
    return {m.materialization.asset_key for m in result.get_asset_materialization_events()}


def test_checks_alone_match_the_materializing_run_and_pass_on_clean_data(workdir, clean_env, capsys):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    run = execute_range(load_settings(), START, END)
    assert run.success
    job = build_definitions(load_settings()).resolve_job_def("check_stock_metrics")
    alone = job.execute_in_process(
        tags={"financial_etl/check_start": START.isoformat(), "financial_etl/check_end": END.isoformat()}
    )
    assert _materialized(alone) == set()
    in_run, by_itself = _evaluations(run), _evaluations(alone)
    assert set(in_run) == set(by_itself) and len(in_run) == 17  # eleven mart checks among them
    for key, evaluation in in_run.items():
        assert by_itself[key].passed == evaluation.passed, key
        for name in ("violating_rows", "mart_rows", "target_rows", "sessions_in_range"):
            if name in evaluation.metadata:
                assert by_itself[key].metadata[name] == evaluation.metadata[name], (key, name)
    assert in_run[(EXPORT, "reconciles_with_mart")].metadata["target_rows"].value == 2 * SESSIONS
    assert main(["check"]) == EXIT_SUCCESS


@pytest.mark.slow
def test_materializations_carry_row_counts_and_the_definitions_schema_and_lineage(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    result = execute_range(load_settings(), START, END)
    assert result.success
    mats = {m.materialization.asset_key: m.materialization.metadata for m in result.get_asset_materialization_events()}
    for key in (RAW, MART, EXPORT):
        assert mats[key]["dagster/partition_row_count"].value == 2 * SESSIONS, key
        assert mats[key]["dagster/row_count"].value == 2 * SESSIONS, key
    # Schema and lineage are on the definitions (the asset page shows them once), not on each event.
    specs = {s.key: s.metadata for s in build_definitions(load_settings()).resolve_all_asset_specs()}
    deps = specs[MART]["dagster/column_lineage"].deps_by_column
    assert {(d.asset_key, d.column_name) for d in deps["sma_20_day"]} >= {(RAW, "close_price")}
    assert {(d.asset_key, d.column_name) for d in deps["atr_14_day"]} >= {
        (RAW, "high_price"),
        (RAW, "low_price"),
        (RAW, "close_price"),
    }
    # a recursive indicator: raw's close, and the mart's own previous row it continues from
    assert {(d.asset_key, d.column_name) for d in deps["rsi_14_wilder"]} >= {
        (RAW, "close_price"),
        (MART, "wilder_avg_gain_14"),
        (MART, "wilder_avg_loss_14"),
    }
    schema = specs[MART]["dagster/column_schema"]
    assert [c.name for c in schema.columns][:3] == ["ticker", "trade_date", "open_price"]
    assert next(c for c in schema.columns if c.name == "rsi_14_day").description.startswith("Simple-average")
    assert "dagster/column_lineage" not in mats[MART] and "dagster/column_schema" not in mats[MART]


def test_every_asset_has_description_owner_kinds_and_the_mart_a_code_version(workdir, clean_env, tmp_path):
    specs = {s.key: s for s in build_definitions(load_settings()).resolve_all_asset_specs()}
    for key, spec in specs.items():
        assert spec.description and spec.owners == ["team:data-engineering"] and spec.kinds, key
        assert "dagster/column_schema" in spec.metadata, key
    version = specs[MART].code_version
    assert version
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(SQLMESH_PROJECT_DIR, project, ignore=shutil.ignore_patterns("logs", ".cache"))
    model = project / "models" / "marts" / "stock_metrics.sql"
    model.write_text(model.read_text().replace("position >= 9 THEN avg9", "position >= 9 THEN ROUND(avg9, 4)"))
    clean_env.setenv("FINANCIAL_ETL_SQLMESH_PROJECT", str(project))
    changed = {s.key: s for s in build_definitions(load_settings()).resolve_all_asset_specs()}
    assert changed[MART].code_version != version
