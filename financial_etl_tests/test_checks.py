"""Data quality as part of the graph: audits as asset checks, raw and export checks, and
the metadata an operator reads in the UI."""

import shutil

import duckdb
import pytest
from dagster import AssetCheckSeverity, AssetKey

from financial_etl.cli import execute_range, main
from financial_etl.definitions import build_definitions
from financial_etl.errors import EXIT_DATA_QUALITY, EXIT_SUCCESS
from financial_etl.settings import SQLMESH_PROJECT_DIR, load_settings
from financial_etl.calendar import trading_sessions
from financial_etl_tests.conftest import day, query

MART = AssetKey(["marts", "stock_metrics"])
RAW = AssetKey(["raw", "eod_prices_raw"])
EXPORT = AssetKey(["dbo", "Dim_Stock_Metrics"])
START, END = day("2024-02-01"), day("2024-03-28")
SESSIONS = len(trading_sessions(START, END))  # XNYS: Presidents' Day is closed


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
            "INSERT INTO raw.eod_prices_raw (ticker, date, open_price, high_price, low_price, close_price, volume, _dlt_load_id) "
            "SELECT 'BAD', date, open_price, high_price, low_price, close_price, volume, 'planted' "
            "FROM raw.eod_prices_raw WHERE ticker = 'AAPL'"
        )
        con.execute("UPDATE raw.eod_prices_raw SET high_price = low_price - 1 WHERE ticker = 'BAD' AND date = '2024-03-05'")
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
    assert all(evals[(MART, name)].passed for name in ("not_null", "unique_combination_of_columns", "valid_rsi_range", "valid_atr"))
    assert EXPORT not in _materialized(result)  # the blocking checks kept the export from running
    assert MART in _materialized(result)
    assert query(workdir / "data" / "export.duckdb", 'SELECT count(*) FROM dbo."Dim_Stock_Metrics"') == export_before
    raw_bad = query(planted, "SELECT count(*) FROM raw.eod_prices_raw WHERE ticker = 'BAD' AND (high_price < low_price OR volume = 0)")
    assert raw_bad == [(2,)]  # the raw rows are still there for inspection


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
    assert set(in_run) == set(by_itself) and len(in_run) == 12
    for key, evaluation in in_run.items():
        assert by_itself[key].passed == evaluation.passed, key
        for name in ("violating_rows", "mart_rows", "target_rows", "sessions_in_range"):
            if name in evaluation.metadata:
                assert by_itself[key].metadata[name] == evaluation.metadata[name], (key, name)
    assert in_run[(EXPORT, "reconciles_with_mart")].metadata["target_rows"].value == 2 * SESSIONS
    assert main(["check"]) == EXIT_SUCCESS


def _check_specs():
    graph = build_definitions(load_settings()).resolve_asset_graph()
    return {key.name: graph.get_check_spec(key) for key in graph.asset_check_keys}


def test_an_audit_added_to_the_sqlmesh_project_becomes_a_check(workdir, clean_env, tmp_path):
    project = tmp_path / "sqlmesh_project"
    shutil.copytree(SQLMESH_PROJECT_DIR, project, ignore=shutil.ignore_patterns("logs", ".cache"))
    (project / "audits" / "close_below_ten_thousand.sql").write_text(
        "AUDIT (name close_below_ten_thousand, dialect duckdb);\n"
        "SELECT * FROM @this_model WHERE close_price >= 10000\n"
    )
    model = project / "models" / "marts" / "stock_metrics.sql"
    model.write_text(model.read_text().replace(
        "    valid_atr\n  )", "    valid_atr,\n    close_below_ten_thousand(blocking := false)\n  )"
    ))
    clean_env.setenv("FINANCIAL_ETL_SQLMESH_PROJECT", str(project))
    specs = _check_specs()
    assert specs["close_below_ten_thousand"].asset_key == MART
    assert specs["close_below_ten_thousand"].blocking is False
    assert specs["valid_ohlc_prices"].blocking is True
    clean_env.delenv("FINANCIAL_ETL_SQLMESH_PROJECT")
    assert "close_below_ten_thousand" not in _check_specs()


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
    assert {(d.asset_key, d.column_name) for d in deps["atr_14_day"]} >= {(RAW, "high_price"), (RAW, "low_price"), (RAW, "close_price")}
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
