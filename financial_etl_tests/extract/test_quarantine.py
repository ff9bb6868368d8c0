"""Bad rows through the whole graph: they land in raw.eod_prices_quarantine with their
reason, every valid row still loads, raw, mart and export equal a run over clean data, a
warning check reports what this run quarantined, and re-running adds nothing."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from financial_etl.cli.main import execute_range, main
from financial_etl.errors import EXIT_SUCCESS
from financial_etl.extract import contract as c
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import load_settings
from financial_etl_tests.helpers import day, query, write_yahoo_csv, yahoo_download_frame

pytestmark = pytest.mark.slow  # every test here runs the graph or a CLI process

START, END = day("2024-02-01"), day("2024-02-29")
RAW = "SELECT ticker, date, open_price, high_price, low_price, close_price, volume FROM raw.eod_prices_raw ORDER BY ticker, date"
MART = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"
EXPORT = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
QUARANTINE = "SELECT ticker, date, reason, location FROM raw.eod_prices_quarantine ORDER BY ticker, date, reason"


def tables(root) -> dict[str, list[tuple]]:
    db, export = root / "data" / "financial_etl.duckdb", root / "data" / "export.duckdb"
    return {"raw": query(db, RAW), "mart": query(db, MART), "export": query(export, EXPORT)}


def checks(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[0] == "raw"}


def yahoo_with_bad_rows() -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """February 2024 for two tickers, with one row per quarantine rule Yahoo can send and
    one warn-only row; returns the bad frame, the clean frame, and how many rows it plants."""
    clean = yahoo_download_frame(["AAPL", "MSFT"], "2024-02-01", "2024-02-29")
    clean = clean.drop(index=pd.Timestamp("2024-02-19"))  # Presidents' Day: Yahoo sends no row
    bad = clean.copy()
    bad.loc[pd.Timestamp("2024-02-05"), ("Close", "AAPL")] = np.nan  # missing price
    bad.loc[pd.Timestamp("2024-02-06"), ("Low", "AAPL")] = -1.0  # negative price
    bad.loc[pd.Timestamp("2024-02-07"), ("High", "MSFT")] = bad.loc[pd.Timestamp("2024-02-07"), ("Low", "MSFT")] / 2
    bad.loc[pd.Timestamp("2024-02-08"), ("Volume", "MSFT")] = -5  # negative volume
    early = bad.iloc[[0]].copy()
    early.index = pd.DatetimeIndex([pd.Timestamp("2024-01-31")], name="Date")  # outside the range, both tickers
    repeated = bad.iloc[[-1]]  # Yahoo's known doubled last row: both copies, both tickers
    bad = pd.concat([early, bad, repeated])
    warn_day = pd.Timestamp("2024-02-09")
    bad.loc[warn_day, ("Open", "AAPL")] = bad.loc[warn_day, ("High", "AAPL")] + 0.01  # loads, warns
    clean.loc[warn_day, ("Open", "AAPL")] = bad.loc[warn_day, ("Open", "AAPL")]
    removed = [pd.Timestamp("2024-02-29")]
    expected_clean = clean.drop(index=removed)  # the doubled day has no trusted row
    for day_, ticker in (("2024-02-05", "AAPL"), ("2024-02-06", "AAPL"), ("2024-02-07", "MSFT"), ("2024-02-08", "MSFT")):
        expected_clean.loc[pd.Timestamp(day_), (slice(None), ticker)] = np.nan  # absent, not bad
    planted = 4 + 2 + 4
    return bad, expected_clean, planted


@pytest.fixture
def yahoo_env(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    return workdir


def test_yahoo_bad_rows_are_quarantined_and_the_rest_equals_a_clean_run(yahoo_env, monkeypatch, tmp_path):
    bad, clean, planted = yahoo_with_bad_rows()
    monkeypatch.setattr("yfinance.download", lambda tickers, **kw: bad)
    first = execute_range(load_settings(), START, END)
    assert first.success
    db = yahoo_env / "data" / "financial_etl.duckdb"
    quarantined = query(db, QUARANTINE)
    assert len(quarantined) == planted
    reasons = {(t, d.isoformat()): r for t, d, r, _ in quarantined}
    assert reasons[("AAPL", "2024-02-05")] == c.MISSING_PRICE
    assert reasons[("AAPL", "2024-02-06")] == c.NON_POSITIVE_PRICE
    assert reasons[("MSFT", "2024-02-07")] == c.HIGH_BELOW_LOW
    assert reasons[("MSFT", "2024-02-08")] == c.NEGATIVE_VOLUME
    assert reasons[("AAPL", "2024-01-31")] == c.OUTSIDE_RANGE
    assert [r for t, d, r, _ in quarantined if d == day("2024-02-29")] == [c.DUPLICATE_KEY] * 4

    raw_checks = checks(first)
    assert not raw_checks["no_new_quarantined_rows"].passed
    assert raw_checks["no_new_quarantined_rows"].metadata["quarantined_this_run"].value == planted
    warned = {e.check_name: e for e in first.get_asset_check_evaluations()}["open_close_within_high_low"]
    assert not warned.passed and warned.severity.value == "WARN"  # the warn-only row loaded, and says so
    assert warned.metadata["violating_rows"].value == 1
    raw_meta = next(m.materialization.metadata for m in first.get_asset_materialization_events()
                    if m.materialization.asset_key.path == ["raw", "eod_prices_raw"])
    assert raw_meta["rows_quarantined"].value == planted
    assert raw_meta["rows_loaded_with_warnings"].value == 1
    got = tables(yahoo_env)

    # The same bad answer again: nothing new in the quarantine, the check passes.
    again = execute_range(load_settings(), START, END)
    assert again.success
    assert query(db, QUARANTINE) == quarantined
    assert checks(again)["no_new_quarantined_rows"].passed
    assert tables(yahoo_env) == got

    # A run fed only the clean rows ends with the same raw, mart and export.
    monkeypatch.setattr("yfinance.download", lambda tickers, **kw: clean)
    monkeypatch.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "clean" / "data" / "financial_etl.duckdb"))
    assert execute_range(load_settings(), START, END).success
    assert tables(tmp_path / "clean") == got
    assert query(tmp_path / "clean" / "data" / "financial_etl.duckdb", "SELECT count(*) FROM raw.eod_prices_quarantine") == [(0,)]


def test_csv_bad_lines_are_quarantined_with_file_and_line_and_the_rest_loads(workdir, clean_env):
    csv_dir = workdir / "csv"
    frame = fetch_synthetic(["AAA"], START, END).frame
    path = write_yahoo_csv(csv_dir / "AAA.csv", frame)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace(",", ";", 1)  # one field fewer
    lines[5] = lines[5].split(",")[0] + ",1,2,oops,1,1,100"
    lines.append(lines[7])  # the same date twice
    path.write_text("\n".join(lines) + "\n")
    for key, value in {"SOURCE": "csv", "CSV_DIR": str(csv_dir), "TICKERS": "AAA", "START_DATE": "2024-01-02"}.items():
        clean_env.setenv(f"FINANCIAL_ETL_{key}", value)
    result = execute_range(load_settings(), START, END)
    assert result.success
    db = workdir / "data" / "financial_etl.duckdb"
    quarantined = query(db, QUARANTINE)
    locations = sorted(loc for *_, loc in quarantined if loc)
    assert locations == ["AAA.csv:4", "AAA.csv:6"]
    assert sum(r == c.DUPLICATE_KEY for _, _, r, _ in quarantined) == 2
    loaded = {d for _, d, *_ in query(db, RAW)}
    duplicated = frame.date.iloc[6]
    assert loaded == set(frame.date) - {frame.date.iloc[2], frame.date.iloc[4], duplicated}
    assert checks(result)["no_new_quarantined_rows"].metadata["quarantined_this_run"].value == 4


def test_one_absurd_close_in_a_csv_is_quarantined_and_the_night_completes_with_a_finite_mart(workdir, csv_history):
    """Before the plausibility bounds, one close of 1e308 made SQLMesh's STDDEV_POP overflow
    and the run exit 1, and one of 1e-320 put an infinite return in the mart."""
    planted = {("AAA", "2024-03-13"): ("1e-320", c.PRICE_TOO_SMALL), ("BBB", "2024-03-12"): ("1e308", c.PRICE_TOO_LARGE)}
    for (ticker, date), (close, _) in planted.items():
        path = workdir / "csv" / f"{ticker}.csv"
        rows = list(csv.reader(path.read_text().splitlines()))
        (line,) = [row for row in rows if row[0] == date]
        line[rows[0].index("Close")] = close
        path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    a, b = day("2024-03-01"), day("2024-03-28")
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS

    db = workdir / "data" / "financial_etl.duckdb"
    assert query(db, "SELECT ticker, date, reason, location, close_price FROM raw.eod_prices_quarantine ORDER BY ticker") == [
        (ticker, day(date), reason, None, float(close)) for (ticker, date), (close, reason) in planted.items()]
    expected = csv_history[(csv_history.date >= a) & (csv_history.date <= b)]
    expected_keys = set(zip(expected.ticker, expected.date)) - {(t, day(d)) for t, d in planted}
    raw = query(db, RAW)
    assert [(t, d) for t, d, *_ in raw] == sorted(expected_keys)
    got = tables(workdir)
    assert [(r[0], r[1]) for r in got["mart"]] == [(t, d) for t, d, *_ in raw] and got["export"] == got["mart"]
    columns = [name for (name,) in query(db, "SELECT column_name FROM information_schema.columns WHERE table_schema = "
                                             "'marts' AND table_name = 'stock_metrics' AND data_type = 'DOUBLE'")]
    not_finite = query(db, "SELECT " + ", ".join(f"count(*) FILTER (NOT isfinite({col}))" for col in columns)
                       + " FROM marts.stock_metrics")
    assert not_finite == [(0,) * len(columns)] and len(columns) == 24
