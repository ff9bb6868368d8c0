"""`financial-etl run` on the Yahoo source as Yahoo behaves (served under yfinance's own
HTTP layer): corporate actions on the newest day, a missed split, an unknown symbol, and
the restated-history sensor's request budget."""

import duckdb
import pandas as pd
import pytest
from dagster import build_sensor_context

from financial_etl.automation.sensors import RESTATEMENT_SAMPLE, build_restated_history_sensor
from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONFIG, EXIT_SUCCESS
from financial_etl.extract import chunks
from financial_etl.settings import load_settings
from financial_etl.warehouse import RAW_KEY
from financial_etl_tests.extract.test_yahoo import split
from financial_etl_tests.helpers import day, query
from financial_etl_tests.yahoo import YahooChartServer, random_listing

FIRST, EVE, NEWEST = day("2024-01-02"), day("2024-06-07"), day("2024-06-10")
TABLES = {
    "raw": "SELECT * EXCLUDE (_dlt_load_id) FROM raw.eod_prices_raw ORDER BY ticker, date",
    "actions": "SELECT * EXCLUDE (_dlt_load_id) FROM raw.corporate_actions ORDER BY ticker, date",
    "mart": "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date",
}
EXPORT = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


def use(clean_env, folder, tickers):
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", ",".join(tickers))
    clean_env.setenv("FINANCIAL_ETL_START_DATE", FIRST.isoformat())
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(folder / "financial_etl.duckdb"))


def tables(folder):
    found = {name: query(folder / "financial_etl.duckdb", sql) for name, sql in TABLES.items()}
    return {**found, "export": query(folder / "export.duckdb", EXPORT)}


@pytest.mark.slow
@pytest.mark.parametrize("chunk_rows", [None, 1], ids=["one group", "a group per ticker"])
def test_a_split_and_a_dividend_on_the_newest_day_equal_a_fresh_full_load_in_the_same_run(
    tmp_path, clean_env, monkeypatch, capsys, caplog, chunk_rows
):
    if chunk_rows:  # each ticker fetched, checked and reloaded in its own group
        monkeypatch.setattr(chunks, "CHUNK_ROWS", chunk_rows)
    tickers = ("AAA", "BBB", "CCC", "DDD")
    listings = {t: random_listing(FIRST, NEWEST, seed=i) for i, t in enumerate(tickers)}
    yahoo = YahooChartServer(listings, today=EVE).install(monkeypatch, tmp_path)
    use(clean_env, tmp_path / "daily", tickers)
    assert main(["run", "--start", FIRST.isoformat(), "--end", EVE.isoformat()]) == EXIT_SUCCESS

    # The newest session: AAA splits 2-for-1, BBB goes ex-dividend, DDD halves with no event
    # (Yahoo's missed split), CCC just trades.
    split(listings["AAA"], NEWEST, 2)
    listings["BBB"].dividends[NEWEST] = 1.25
    ddd = listings["DDD"].prices
    ddd.loc[ddd["date"] == NEWEST, ["open", "high", "low", "close"]] /= 2
    yahoo.today = NEWEST
    yahoo.new_process()
    yahoo.faults["BBB"] = ["timeout"]  # retried: the run goes on once Yahoo answers
    yahoo.requests.clear()
    capsys.readouterr()
    assert main(["run", "--start", NEWEST.isoformat(), "--end", NEWEST.isoformat()]) == EXIT_SUCCESS
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "AAA: a 2-for-1 split on 2024-06-10" in out and "BBB: a dividend of 1.25 on 2024-06-10" in out
    assert "DDD: its close moved -5" in out  # reloaded too: Yahoo may have re-adjusted its history
    assert "transient error for BBB (Timeout" in caplog.text
    # One request for the day, one more for the history of a reloaded ticker (timezones are cached).
    history = [r for r in yahoo.requests if "period1=" in r]
    assert [r for r in history if "/chart/CCC" in r] and len([r for r in history if "/chart/CCC" in r]) == 1
    assert len([r for r in history if "/chart/AAA" in r]) == 2
    # The missed split stays visible: the warning check names DDD's row, not AAA's real split.
    warning = next(line for line in out.splitlines() if "with no split or dividend reported" in line)
    assert "DDD 2024-06-10 -5" in warning and "AAA" not in warning

    daily = tables(tmp_path / "daily")
    assert {r[0] for r in daily["actions"]} == {"AAA", "BBB"}
    use(clean_env, tmp_path / "fresh", tickers)
    yahoo.new_process()
    assert main(["run", "--start", FIRST.isoformat(), "--end", NEWEST.isoformat()]) == EXIT_SUCCESS
    fresh = tables(tmp_path / "fresh")
    for name in ("raw", "actions", "mart", "export"):
        assert daily[name] == fresh[name], name
    returns = {r[0]: r[15] for r in daily["mart"] if r[1] == NEWEST}  # daily_return_pct
    assert abs(returns["AAA"]) < 20 and returns["DDD"] < -45


@pytest.mark.slow
def test_an_unknown_symbol_exits_2_with_one_readable_line(tmp_path, clean_env, monkeypatch, capsys):
    YahooChartServer({"AAA": random_listing(FIRST, EVE)}, today=EVE).install(monkeypatch, tmp_path)
    use(clean_env, tmp_path, ("AAA", "NOPE"))
    assert main(["run", "--start", "2024-06-03", "--end", EVE.isoformat()]) == EXIT_CONFIG
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "Traceback" not in text and "possibly delisted" not in text
    lines = [line for line in text.splitlines() if "NOPE" in line]
    assert len(lines) == 1 and "does not know NOPE" in lines[0], text


def test_the_restatement_sensor_asks_the_source_for_a_bounded_sample_each_hour(tmp_path, clean_env, monkeypatch):
    tickers = [f"T{i:03d}" for i in range(60)]
    listings = {t: random_listing(day("2024-05-01"), EVE, seed=i) for i, t in enumerate(tickers)}
    yahoo = YahooChartServer(listings, today=EVE).install(monkeypatch, tmp_path)
    use(clean_env, tmp_path, tickers)
    clean_env.setenv("FINANCIAL_ETL_END_DATE", EVE.isoformat())
    settings = load_settings()
    frame = pd.concat([listings[t].prices.assign(ticker=t) for t in tickers])  # noqa: F841  # DuckDB reads it by name
    with duckdb.connect(str(settings.duckdb_path)) as con:  # raw as a load would leave it
        con.execute("CREATE SCHEMA raw")
        con.execute(
            "CREATE TABLE raw.eod_prices_raw AS SELECT ticker, date, open AS open_price, high AS high_price, "
            "low AS low_price, close AS close_price, volume FROM frame"
        )
    sensor = build_restated_history_sensor(settings, [RAW_KEY])
    cursor, seen = None, []
    for _hour in range(3):
        yahoo.chart_requests.clear()
        context = build_sensor_context(cursor=cursor)
        sensor(context)
        cursor = context.cursor
        asked = [t for t, n in yahoo.chart_requests.items() if n]
        # One history request per sampled ticker, plus a timezone probe the first time.
        assert len(asked) == RESTATEMENT_SAMPLE and sum(yahoo.chart_requests.values()) <= 2 * RESTATEMENT_SAMPLE
        seen += asked
    assert len(set(seen)) == len(tickers)  # in turn: 60 tickers compared within 3 hours
