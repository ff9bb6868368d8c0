"""End-to-end: the whole graph materialized in process, in a temporary directory."""

import numpy as np
import pandas as pd
import pytest

from financial_etl.cli import execute_range, main
from financial_etl.errors import EXIT_CONFIG, EXIT_SUCCESS
from financial_etl.settings import load_settings
from financial_etl.sources.synthetic import fetch_synthetic
from financial_etl_tests.conftest import day, query, write_yahoo_csv, yahoo_download_frame

RAW_ROWS = "SELECT ticker, date, open_price, high_price, low_price, close_price, volume FROM raw.eod_prices_raw ORDER BY ticker, date"
MART_ROWS = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"
EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


@pytest.fixture
def csv_history(workdir, clean_env):
    """Two tickers of CSV history, 2023-2024, and the environment that points at it."""
    csv_dir = workdir / "csv"
    frames = {}
    for ticker in ("AAA", "BBB"):
        frame = fetch_synthetic([ticker], day("2023-01-01"), day("2024-12-31")).frame
        write_yahoo_csv(csv_dir / f"{ticker}.csv", frame)
        frames[ticker] = frame
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "csv")
    clean_env.setenv("FINANCIAL_ETL_CSV_DIR", str(csv_dir))
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2023-01-01")
    return pd.concat(frames.values(), ignore_index=True)


def test_csv_run_loads_exactly_the_rows_from_a_to_b_and_is_idempotent(workdir, csv_history, capsys):
    db = workdir / "data" / "financial_etl.duckdb"
    export_db = workdir / "data" / "export.duckdb"
    a, b = day("2024-03-04"), day("2024-06-28")
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS

    expected = csv_history[(csv_history.date >= a) & (csv_history.date <= b)]
    raw = query(db, RAW_ROWS)
    assert len(raw) == len(expected) > 0
    assert {(t, d) for t, d, *_ in raw} == set(zip(expected.ticker, expected.date))
    got_close = {(t, d): c for t, d, _, _, _, c, _ in raw}
    assert all(np.isclose(got_close[(t, d)], c, rtol=0, atol=1e-9) for t, d, c in zip(expected.ticker, expected.date, expected.close_price))

    mart = query(db, MART_ROWS)
    assert [(r[0], r[1]) for r in mart] == [(t, d) for t, d, *_ in raw]
    export = query(export_db, EXPORT_ROWS)
    assert export == mart

    out = capsys.readouterr().out
    assert f"{len(expected)} rows in range" in out
    assert "local stand-in" in out

    # The same command again: same rows everywhere, no duplicates.
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS
    assert query(db, RAW_ROWS) == raw
    assert query(db, MART_ROWS) == mart
    assert query(export_db, EXPORT_ROWS) == export


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
    mats = {m.materialization.asset_key.to_user_string(): m.materialization for m in result.get_asset_materialization_events()}
    assert set(mats) == {"raw/eod_prices_raw", "marts/stock_metrics", "dbo/Dim_Stock_Metrics"}
    raw_meta = mats["raw/eod_prices_raw"].metadata
    assert raw_meta["synthetic"].value is True
    assert "SYNTHETIC" in raw_meta["data_notice"].value
    assert raw_meta["rows_in_range"].value == 7 * 21
    export_meta = mats["dbo/Dim_Stock_Metrics"].metadata
    assert export_meta["target_kind"].value == "duckdb-standin"
    assert export_meta["rows_exported"].value == export_meta["dagster/partition_row_count"].value == 7 * 21


def test_yfinance_partial_load_names_the_empty_ticker_and_loads_the_rest(workdir, clean_env, monkeypatch):
    frame = yahoo_download_frame(
        ["AAPL", "GONE", "MSFT"], "2024-02-01", "2024-02-29", empty=["GONE"], nan_rows=[("MSFT", "2024-02-14")]
    )
    monkeypatch.setattr("yfinance.download", lambda tickers, **kw: frame)
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,GONE,MSFT")
    clean_env.setenv("FINANCIAL_ETL_ALLOW_PARTIAL_LOADS", "true")
    result = execute_range(load_settings(), day("2024-02-01"), day("2024-02-29"))
    assert result.success
    raw_mat = next(
        m.materialization for m in result.get_asset_materialization_events()
        if m.materialization.asset_key.path == ["raw", "eod_prices_raw"]
    )
    assert raw_mat.metadata["missing_tickers"].value == "GONE"
    sessions = len(frame.index)  # weekdays in February 2024
    assert raw_mat.metadata["rows_without_trade_dropped"].value == 1  # MSFT's gap
    db = workdir / "data" / "financial_etl.duckdb"
    counts = dict(query(db, "SELECT ticker, count(*) FROM raw.eod_prices_raw GROUP BY ticker"))
    assert counts == {"AAPL": sessions, "MSFT": sessions - 1}


def test_a_csv_file_with_a_foreign_header_fails_with_exit_2_and_writes_nothing(workdir, csv_history, capsys):
    (workdir / "csv" / "BBB.csv").write_text("Date;Open;High;Low;Close;Volume\n2024-01-02;1;2;0.5;1;10\n")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    err = capsys.readouterr().err
    assert "BBB.csv:1" in err and "not Yahoo's CSV format" in err
    db = workdir / "data" / "financial_etl.duckdb"
    rows = query(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'eod_prices_raw'") if db.exists() else [(0,)]
    assert rows == [(0,)]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["run", "--start", "2024-02-01", "--end", "2024-01-01"], {}, "is after the end date"),
        (["run", "--start", "2019-06-03"], {}, "before FINANCIAL_ETL_START_DATE"),
        (["run", "--start", "yesterday"], {}, "--start='yesterday'"),
        (["run"], {"FINANCIAL_ETL_SOURCE": "nope"}, "FINANCIAL_ETL_SOURCE='nope'"),
        (["run", "--start", "2024-01-02", "--end", "2999-01-04"], {}, "--end 2999-01-04 is in a year that has not begun"),
    ],
)
def test_configuration_errors_exit_2_before_anything_is_written(workdir, clean_env, capsys, args, env, message):
    for key, value in env.items():
        clean_env.setenv(key, value)
    assert main(args) == EXIT_CONFIG
    assert message in capsys.readouterr().err
    assert not (workdir / "data" / "financial_etl.duckdb").exists()


def test_missing_csv_file_is_a_configuration_error(workdir, csv_history, clean_env, capsys):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,ZZZ")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-31"]) == EXIT_CONFIG
    assert "ZZZ.csv" in capsys.readouterr().err
