"""The mart's SQLMesh audits as asset checks: a failing blocking audit stops the export,
`financial-etl run` and `check` agree on it, and an audit added to the project becomes a check."""

import shutil

import duckdb
import pytest
from dagster import AssetCheckSeverity, AssetKey, DagsterEventType, DagsterInstance

from financial_etl.cli.main import execute_range, main
from financial_etl.definitions import build_definitions
from financial_etl.errors import EXIT_DATA_QUALITY, BlockingAuditError
from financial_etl.settings import SQLMESH_PROJECT_DIR, load_settings
from financial_etl_tests.helpers import day, query

MART = AssetKey(["marts", "stock_metrics"])
EXPORT = AssetKey(["dbo", "Dim_Stock_Metrics"])
START, END = day("2024-02-01"), day("2024-03-28")


def _evaluations(result):
    return {(e.asset_key, e.check_name): e for e in result.get_asset_check_evaluations()}


def _materialized(result):
    return {m.materialization.asset_key for m in result.get_asset_materialization_events()}


@pytest.fixture
def planted(workdir, clean_env):
    """A clean run, then bad rows planted in raw for a ticker the mart will pick up:
    one high below its low, one zero volume."""
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    assert execute_range(load_settings(), START, END).success
    db = workdir / "data" / "financial_etl.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute(
            "INSERT INTO raw.eod_prices_raw "
            "(ticker, date, open_price, high_price, low_price, close_price, volume, _dlt_load_id) "
            "SELECT 'BAD', date, open_price, high_price, low_price, close_price, volume, 'planted' "
            "FROM raw.eod_prices_raw WHERE ticker = 'AAPL'"
        )
        con.execute(
            "UPDATE raw.eod_prices_raw SET high_price = low_price - 1 WHERE ticker = 'BAD' AND date = '2024-03-05'"
        )
        con.execute("UPDATE raw.eod_prices_raw SET volume = 0 WHERE ticker = 'BAD' AND date = '2024-03-12'")
    return db


def test_failing_audits_fail_their_checks_and_stop_the_export(planted, workdir):
    export_before = query(workdir / "data" / "export.duckdb", 'SELECT count(*) FROM dbo."Dim_Stock_Metrics"')
    result = execute_range(load_settings(), START, END)
    assert not result.success
    evals = _evaluations(result)
    ohlc, volume = evals[(MART, "valid_ohlc_prices")], evals[(MART, "positive_volume")]
    assert not ohlc.passed and ohlc.metadata["violating_rows"].value == 1
    assert not volume.passed and volume.metadata["violating_rows"].value == 1
    assert ohlc.severity == AssetCheckSeverity.ERROR and volume.severity == AssetCheckSeverity.WARN
    assert "BAD" in ohlc.metadata["sample"].value and "2024-03-05" in ohlc.metadata["sample"].value
    assert ohlc.metadata["failing_partitions"].value == "2024-03-05"
    assert "financial-etl run --start 2024-03-05 --end 2024-03-05" in ohlc.metadata["next_step"].value
    assert "SELECT" in ohlc.metadata["query"].value
    passing = ("not_null", "unique_combination_of_columns", "valid_rsi_range", "valid_atr")
    assert all(evals[(MART, name)].passed for name in passing)
    assert EXPORT not in _materialized(result)  # the blocking audit kept the export from running
    assert MART not in _materialized(result)  # a run SQLMesh stopped is a failed step, not a materialization
    bad = query(
        workdir / "data" / "financial_etl.duckdb",
        "SELECT count(*) FROM marts.stock_metrics WHERE ticker = 'BAD' AND trade_date = '2024-03-05'",
    )
    assert bad == [(1,)]  # the rows SQLMesh wrote stay in the mart for inspection
    assert query(workdir / "data" / "export.duckdb", 'SELECT count(*) FROM dbo."Dim_Stock_Metrics"') == export_before
    raw_bad = query(
        planted,
        "SELECT count(*) FROM raw.eod_prices_raw WHERE ticker = 'BAD' AND (high_price < low_price OR volume = 0)",
    )
    assert raw_bad == [(2,)]  # the raw rows are still there for inspection


def test_a_run_stopped_at_a_blocking_audit_is_a_failed_step_whose_checks_name_the_audit(planted, workdir):
    (workdir / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(tempdir=str(workdir / "dagster_home"))
    result = execute_range(load_settings(), START, END, instance=instance)
    assert not result.success
    run_mats = [r for r in instance.fetch_materializations(MART, limit=100).records if r.run_id == result.run_id]
    assert run_mats == []
    (failure,) = [e for e in instance.all_logs(result.run_id, of_type=DagsterEventType.STEP_FAILURE)]
    assert failure.step_key == "sqlmesh_models"
    error, causes = failure.dagster_event.step_failure_data.error, []
    while error is not None:
        causes.append(error)
        error = error.cause
    assert any(e.cls_name == BlockingAuditError.__name__ and "valid_ohlc_prices" in e.message for e in causes)
    checks = {
        e.dagster_event.asset_check_evaluation_data.check_name: e.dagster_event.asset_check_evaluation_data
        for e in instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    }
    assert not checks["valid_ohlc_prices"].passed and checks["valid_ohlc_prices"].blocking
    assert checks["valid_ohlc_prices"].metadata["violating_rows"].value == 1
    assert checks["not_null"].passed
    assert not checks["positive_volume"].passed and not checks["positive_volume"].blocking
    assert DagsterEventType.STEP_SUCCESS not in {
        e.dagster_event.event_type
        for e in instance.all_logs(result.run_id)
        if e.dagster_event and e.step_key == "stock_metrics_audits"
    }


@pytest.mark.slow
def test_run_exits_3_and_check_alone_gives_the_same_results(planted, capsys):
    assert main(["run", "--start", START.isoformat(), "--end", END.isoformat()]) == EXIT_DATA_QUALITY
    err = capsys.readouterr().err
    assert "marts/stock_metrics:valid_ohlc_prices" in err
    assert "marts/stock_metrics:positive_volume" not in err  # zero volume warns, it does not block
    assert main(["check", "--start", START.isoformat(), "--end", END.isoformat()]) == EXIT_DATA_QUALITY
    table = capsys.readouterr().out
    lines = {tuple(line.split()[:3]): line.split()[3:] for line in table.splitlines()[1:]}
    assert lines[("FAIL", "marts/stock_metrics", "valid_ohlc_prices")] == ["1"]
    assert lines[("WARN", "marts/stock_metrics", "positive_volume")] == ["1"]
    assert lines[("PASS", "marts/stock_metrics", "valid_atr")] == ["0"]
    assert ("PASS", "raw/eod_prices_raw", "no_duplicate_ticker_date") in lines


def _check_specs():
    graph = build_definitions(load_settings()).resolve_asset_graph()
    return {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}


def test_an_audit_added_to_the_sqlmesh_project_becomes_a_check(workdir, clean_env, tmp_path):
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(SQLMESH_PROJECT_DIR, project, ignore=shutil.ignore_patterns("logs", ".cache"))
    (project / "audits" / "close_below_ten_thousand.sql").write_text(
        "AUDIT (name close_below_ten_thousand, dialect duckdb);\nSELECT * FROM @this_model WHERE close_price >= 10000\n"
    )
    model = project / "models" / "marts" / "stock_metrics.sql"
    text = model.read_text()
    assert text.count("\n  audits (\n") == 1
    model.write_text(text.replace("\n  audits (\n", "\n  audits (\n    close_below_ten_thousand(blocking := false),\n"))
    clean_env.setenv("FINANCIAL_ETL_SQLMESH_PROJECT", str(project))
    specs = _check_specs()
    assert specs["close_below_ten_thousand"].asset_key == MART
    assert specs["close_below_ten_thousand"].blocking is False
    assert specs["valid_ohlc_prices"].blocking is True
    clean_env.delenv("FINANCIAL_ETL_SQLMESH_PROJECT")
    assert "close_below_ten_thousand" not in _check_specs()
