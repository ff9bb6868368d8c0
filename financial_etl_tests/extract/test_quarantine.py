"""Bad rows through the whole graph: they land in raw.eod_prices_quarantine with their
reason, every valid row still loads, raw, mart and export equal a run over clean data, a
warning check reports what this run quarantined, and re-running adds nothing."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from financial_etl.cli.main import execute_range, main
from financial_etl.errors import EXIT_SUCCESS
from financial_etl.extract import contract as c
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import load_settings
from financial_etl_tests.helpers import day, query, write_yahoo_csv
from financial_etl_tests.yahoo import Listing, YahooChartServer, random_listing

pytestmark = pytest.mark.slow  # every test here runs the graph or a CLI process

START, END = day("2024-02-01"), day("2024-02-29")
RAW = (
    "SELECT ticker, date, open_price, high_price, low_price, close_price, volume "
    "FROM raw.eod_prices_raw ORDER BY ticker, date"
)
MART = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"
EXPORT = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
QUARANTINE = "SELECT ticker, date, reason, location FROM raw.eod_prices_quarantine ORDER BY ticker, date, reason"


def tables(root) -> dict[str, list[tuple]]:
    db, export = root / "data" / "financial_etl.duckdb", root / "data" / "export.duckdb"
    return {"raw": query(db, RAW), "mart": query(db, MART), "export": query(export, EXPORT)}


def checks(result) -> dict[str, object]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[0] == "raw"}


# One bar per quarantine rule Yahoo's answer can break, in the prices as traded.
BAD_BARS = {
    ("AAPL", "2024-02-05"): c.MISSING_PRICE,  # a null close (so no adjusted price at all)
    ("AAPL", "2024-02-06"): c.NON_POSITIVE_PRICE,  # a negative low
    ("MSFT", "2024-02-07"): c.HIGH_BELOW_LOW,
    ("MSFT", "2024-02-08"): c.NEGATIVE_VOLUME,
}


def yahoo_with_bad_bars() -> tuple[dict[str, Listing], dict[str, Listing]]:
    """January and February 2024 as traded by two tickers (January: the lookback before
    the first day), with one bad bar per rule and one warn-only bar in February; returns
    the bad listings and the clean ones (the same, without the bad bars)."""
    clean = {t: random_listing(day("2024-01-02"), END, seed=i) for i, t in enumerate(("AAPL", "MSFT"))}
    warn = clean["AAPL"].prices["date"] == day("2024-02-09")
    clean["AAPL"].prices.loc[warn, "open"] = clean["AAPL"].prices.loc[warn, "high"] + 0.01  # loads, warns
    bad = {t: Listing(listing.prices.copy()) for t, listing in clean.items()}

    def bar(ticker: str, date: str):
        return bad[ticker].prices["date"] == day(date)

    bad["AAPL"].prices.loc[bar("AAPL", "2024-02-05"), "close"] = np.nan
    bad["AAPL"].prices.loc[bar("AAPL", "2024-02-06"), "low"] = -1.0
    msft = bad["MSFT"].prices
    msft.loc[bar("MSFT", "2024-02-07"), "high"] = msft.loc[bar("MSFT", "2024-02-07"), "low"] / 2
    msft.loc[bar("MSFT", "2024-02-08"), "volume"] = -5
    for ticker, date in BAD_BARS:  # absent from the clean answer, not bad
        clean[ticker].prices = clean[ticker].prices[clean[ticker].prices["date"] != day(date)]
    return bad, clean


@pytest.fixture
def yahoo_env(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    return workdir


def test_yahoo_bad_rows_are_quarantined_and_the_rest_equals_a_clean_run(yahoo_env, monkeypatch, tmp_path):
    bad, clean = yahoo_with_bad_bars()
    yahoo = YahooChartServer(bad, today=END).install(monkeypatch, tmp_path)
    first = execute_range(load_settings(), START, END)
    assert first.success
    db = yahoo_env / "data" / "financial_etl.duckdb"
    quarantined = query(db, QUARANTINE)
    planted = len(BAD_BARS)
    assert {(t, d.isoformat()): r for t, d, r, _ in quarantined} == BAD_BARS and len(quarantined) == planted

    raw_checks = checks(first)
    assert not raw_checks["no_new_quarantined_rows"].passed
    assert raw_checks["no_new_quarantined_rows"].metadata["quarantined_this_run"].value == planted
    warned = {e.check_name: e for e in first.get_asset_check_evaluations()}["open_close_within_high_low"]
    assert not warned.passed and warned.severity.value == "WARN"  # the warn-only row loaded, and says so
    assert warned.metadata["violating_rows"].value == 1
    raw_meta = next(
        m.materialization.metadata
        for m in first.get_asset_materialization_events()
        if m.materialization.asset_key.path == ["raw", "eod_prices_raw"]
    )
    assert raw_meta["rows_quarantined"].value == planted
    assert raw_meta["rows_loaded_with_warnings"].value == 1
    got = tables(yahoo_env)

    # The same bad answer again: nothing new in the quarantine, the check passes.
    yahoo.new_process()
    again = execute_range(load_settings(), START, END)
    assert again.success
    assert query(db, QUARANTINE) == quarantined
    assert checks(again)["no_new_quarantined_rows"].passed
    assert tables(yahoo_env) == got

    # A run fed only the clean bars ends with the same raw, mart and export.
    yahoo.listings = clean
    yahoo.new_process()
    monkeypatch.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "clean" / "data" / "financial_etl.duckdb"))
    assert execute_range(load_settings(), START, END).success
    assert tables(tmp_path / "clean") == got
    assert query(
        tmp_path / "clean" / "data" / "financial_etl.duckdb", "SELECT count(*) FROM raw.eod_prices_quarantine"
    ) == [(0,)]


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
    planted = {
        ("AAA", "2024-03-13"): ("1e-320", c.PRICE_TOO_SMALL),
        ("BBB", "2024-03-12"): ("1e308", c.PRICE_TOO_LARGE),
    }
    for (ticker, date), (close, _) in planted.items():
        path = workdir / "csv" / f"{ticker}.csv"
        rows = list(csv.reader(path.read_text().splitlines()))
        (line,) = [row for row in rows if row[0] == date]
        line[rows[0].index("Close")] = close
        path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    a, b = day("2024-03-01"), day("2024-03-28")
    assert main(["run", "--start", a.isoformat(), "--end", b.isoformat()]) == EXIT_SUCCESS

    db = workdir / "data" / "financial_etl.duckdb"
    assert query(
        db, "SELECT ticker, date, reason, location, close_price FROM raw.eod_prices_quarantine ORDER BY ticker"
    ) == [(ticker, day(date), reason, None, float(close)) for (ticker, date), (close, reason) in planted.items()]
    expected = csv_history[(csv_history.date >= a) & (csv_history.date <= b)]
    expected_keys = set(zip(expected.ticker, expected.date, strict=True)) - {(t, day(d)) for t, d in planted}
    raw = query(db, RAW)
    assert [(t, d) for t, d, *_ in raw] == sorted(expected_keys)
    got = tables(workdir)
    assert [(r[0], r[1]) for r in got["mart"]] == [(t, d) for t, d, *_ in raw] and got["export"] == got["mart"]
    columns = [
        name
        for (name,) in query(
            db,
            "SELECT column_name FROM information_schema.columns WHERE table_schema = "
            "'marts' AND table_name = 'stock_metrics' AND data_type = 'DOUBLE'",
        )
    ]
    not_finite = query(
        db,
        "SELECT "
        + ", ".join(f"count(*) FILTER (NOT isfinite({col}))" for col in columns)
        + " FROM marts.stock_metrics",
    )
    assert not_finite == [(0,) * len(columns)] and len(columns) == 24
