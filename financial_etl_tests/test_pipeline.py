"""End-to-end: the whole graph materialized in process, in a temporary directory."""

import numpy as np
import pytest

from financial_etl.calendar import trading_sessions
from financial_etl.cli.main import execute_range, main
from financial_etl.errors import EXIT_SUCCESS
from financial_etl.settings import load_settings
from financial_etl_tests.helpers import day, query
from financial_etl_tests.yahoo import YahooChartServer, random_listing

RAW_ROWS = (
    "SELECT ticker, date, open_price, high_price, low_price, close_price, volume "
    "FROM raw.eod_prices_raw ORDER BY ticker, date"
)
MART_ROWS = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"
EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


@pytest.mark.slow
def test_csv_run_loads_exactly_the_rows_from_a_to_b_and_is_idempotent(workdir, csv_history, capsys):
    db = workdir / "data" / "financial_etl.duckdb"
    export_db = workdir / "data" / "export.duckdb"
    a, b = day("2024-03-04"), day("2024-06-28")
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS

    expected = csv_history[(csv_history.date >= a) & (csv_history.date <= b)]
    raw = query(db, RAW_ROWS)
    assert len(raw) == len(expected) > 0
    assert {(t, d) for t, d, *_ in raw} == set(zip(expected.ticker, expected.date, strict=True))
    got_close = {(t, d): c for t, d, _, _, _, c, _ in raw}
    assert all(
        np.isclose(got_close[(t, d)], c, rtol=0, atol=1e-9)
        for t, d, c in zip(expected.ticker, expected.date, expected.close_price, strict=True)
    )

    mart = query(db, MART_ROWS)
    assert [(r[0], r[1]) for r in mart] == [(t, d) for t, d, *_ in raw]
    export = query(export_db, EXPORT_ROWS)
    assert export == mart

    out = capsys.readouterr().out
    stage_rows = {
        line.split()[0]: int(line.split()[2]) for line in out.splitlines() if line.endswith(" s") and " rows " in line
    }
    assert stage_rows == {"extract": len(expected), "transform": len(expected), "export": len(expected)}
    assert "local stand-in" in out

    # The same command again: same rows everywhere, no duplicates.
    working = workdir / "data" / ".dlt_pipelines" / "financial_extract" / "load"
    folder = working.stat().st_ino
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS
    assert query(db, RAW_ROWS) == raw
    assert query(db, MART_ROWS) == mart
    assert query(export_db, EXPORT_ROWS) == export
    # The extract keeps its dlt working folder: deleted and made again on every run, a run
    # killed mid-delete left a folder the next run could not open.
    assert working.stat().st_ino == folder


@pytest.mark.slow
def test_a_later_range_adds_rows_without_touching_earlier_ones(workdir, csv_history):
    db = workdir / "data" / "financial_etl.duckdb"
    assert main(["run", "--start", "2024-01-02", "--end", "2024-03-28"]) == EXIT_SUCCESS
    first = query(db, MART_ROWS)
    assert main(["run", "--start", "2024-04-01", "--end", "2024-04-30"]) == EXIT_SUCCESS
    both = query(db, MART_ROWS)
    assert [r for r in both if r[1] <= day("2024-03-28")] == first
    assert {r[1] for r in both} >= {day("2024-04-01"), day("2024-04-30")}
    assert query(db, "SELECT count(*) FROM marts.stock_metrics WHERE trade_date > '2024-04-30'") == [(0,)]


def test_synthetic_default_run_materializes_the_graph_with_a_synthetic_label(workdir):
    settings = load_settings()
    result = execute_range(settings, day("2024-01-02"), day("2024-01-31"))
    assert result.success
    mats = {
        m.materialization.asset_key.to_user_string(): m.materialization
        for m in result.get_asset_materialization_events()
    }
    assert set(mats) == {"raw/eod_prices_raw", "marts/stock_metrics", "dbo/Dim_Stock_Metrics"}
    raw_meta = mats["raw/eod_prices_raw"].metadata
    assert raw_meta["synthetic"].value is True
    assert "SYNTHETIC" in raw_meta["data_notice"].value
    assert raw_meta["rows_in_range"].value == 7 * 21
    export_meta = mats["dbo/Dim_Stock_Metrics"].metadata
    assert export_meta["target_kind"].value == "duckdb-standin"
    assert export_meta["rows_exported"].value == export_meta["dagster/partition_row_count"].value == 7 * 21


@pytest.mark.slow
def test_yfinance_partial_load_names_the_empty_ticker_and_loads_the_rest(workdir, clean_env, monkeypatch, tmp_path):
    start, end = day("2024-02-01"), day("2024-02-29")
    listings = {t: random_listing(day("2024-01-02"), end, seed=i) for i, t in enumerate(("AAPL", "MSFT"))}
    msft = listings["MSFT"].prices
    gap = msft["date"] == day("2024-02-14")
    msft.loc[gap, ["open", "high", "low", "close"]] = np.nan  # Yahoo's all-null bar: no trade that day
    msft.loc[gap, "volume"] = 0
    YahooChartServer(listings, today=end).install(monkeypatch, tmp_path)  # Yahoo does not know GONE
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,GONE,MSFT")
    clean_env.setenv("FINANCIAL_ETL_ALLOW_PARTIAL_LOADS", "true")
    result = execute_range(load_settings(), start, end)
    assert result.success
    raw_mat = next(
        m.materialization
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key.path == ["raw", "eod_prices_raw"]
    )
    assert raw_mat.metadata["missing_tickers"].value == "GONE"
    sessions = len(trading_sessions(start, end))  # 20: Presidents' Day is closed
    # yfinance drops the all-null bar itself, so the contract sees no untraded row.
    assert raw_mat.metadata["rows_without_trade_dropped"].value == 0
    assert raw_mat.metadata["rows_quarantined"].value == 0
    db = workdir / "data" / "financial_etl.duckdb"
    counts = dict(query(db, "SELECT ticker, count(*) FROM raw.eod_prices_raw GROUP BY ticker"))
    assert counts == {"AAPL": sessions, "MSFT": sessions - 1}
    assert query(db, "SELECT count(*) FROM raw.eod_prices_raw WHERE ticker = 'MSFT' AND date = '2024-02-14'") == [(0,)]
