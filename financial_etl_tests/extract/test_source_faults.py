"""Yahoo Finance faults: transient errors retried with backoff, permanent ones named,
missing tickers and empty answers; every case asserted on what the warehouse holds.

Yahoo's answers and failures are served under yfinance's own HTTP layer
(financial_etl_tests/yahoo.py): `faults[symbol]` is what Yahoo does to that symbol's
next chart requests, one entry each. yfinance asks again once, with its other cookie
strategy, after any answer >= 400 that reaches it, so a rate limit it reports is two
429s in a row; a 5xx is raised by the project's YahooSession before that, and a timeout
or a reset connection is raised by curl. A ticker's first request in a process is its
timezone probe, so a fault there fails the ticker just the same.
"""

from __future__ import annotations

import logging
import random

import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONNECTION, EXIT_DATA_QUALITY, EXIT_SUCCESS, SourceUnavailableError
from financial_etl.extract.sources import yfinance as yf_source
from financial_etl.extract.sources.yfinance import RetryPolicy
from financial_etl_tests.helpers import day, query
from financial_etl_tests.yahoo import YahooChartServer, random_listing

RAW_ROWS = "SELECT ticker, date, close_price, volume FROM raw.eod_prices_raw ORDER BY ticker, date"
RATE_LIMITED = [429, 429]  # one rate limit yfinance reports (see the module docstring)


def listings(tickers, last=day("2024-03-29")):
    return {t: random_listing(day("2024-01-02"), last, seed=i) for i, t in enumerate(tickers)}


@pytest.fixture
def yahoo(monkeypatch, tmp_path):
    def install(tickers=("AAPL", "MSFT"), **stopped) -> YahooChartServer:
        """Yahoo knows `tickers`; those given as name=last_day stopped trading that day."""
        known = listings([*tickers, *stopped])
        for ticker, last in stopped.items():
            known[ticker].prices = known[ticker].prices[known[ticker].prices["date"] <= day(last)]
        return YahooChartServer(known, today=day("2024-03-29")).install(monkeypatch, tmp_path)

    return install


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def fetch(tickers, sleeps, policy=RetryPolicy()):
    return yf_source.fetch_yfinance(
        tickers, day("2024-03-01"), day("2024-03-08"), policy=policy, sleep=sleeps, rng=random.Random(1)
    )


def test_a_rate_limited_ticker_is_retried_with_growing_jittered_waits_and_logged(yahoo, caplog):
    server = yahoo()
    server.faults["MSFT"] = RATE_LIMITED * 2
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="financial_etl"):
        batch = fetch(["AAPL", "MSFT"], sleeps)
    # AAPL's probe and window; MSFT's two rate limits (two requests each), then its probe
    # and window. (A second ask for AAPL would not show here: yfinance's cache_get keeps
    # answers for past windows. The retry log names whom the retries were for.)
    assert server.chart_requests == {"AAPL": 2, "MSFT": 2 * 2 + 2}
    assert set(batch.frame.ticker) == {"AAPL", "MSFT"} and batch.ticker_errors == {}
    assert batch.frame.groupby("ticker").size().to_dict() == {"AAPL": 6, "MSFT": 6}
    policy = RetryPolicy()
    assert len(sleeps) == 2
    assert policy.base_delay_s / 2 <= sleeps[0] <= policy.base_delay_s
    assert policy.base_delay_s <= sleeps[1] <= 2 * policy.base_delay_s
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and all("transient error for MSFT (" in r and "AAPL" not in r for r in retries)
    assert "YFRateLimitError" in retries[0] and "retry 1 of 4" in retries[0] and "retry 2 of 4" in retries[1]


def test_retries_stop_at_the_attempt_limit_and_name_the_ticker(yahoo):
    server = yahoo()
    server.faults["MSFT"] = ["timeout"] * 10
    sleeps = Sleeps()
    batch = fetch(["AAPL", "MSFT"], sleeps, RetryPolicy(attempts=4, base_delay_s=1, max_delay_s=2, budget_s=100))
    assert server.chart_requests["MSFT"] == 4 and len(sleeps) == 3  # curl raises: one request an attempt
    assert max(sleeps) <= 2
    assert set(batch.ticker_errors) == {"MSFT"} and batch.ticker_causes == {"MSFT": "transient"}
    assert "Timeout" in batch.ticker_errors["MSFT"] and "still failing after 4 attempts" in batch.ticker_errors["MSFT"]
    assert set(batch.frame.ticker) == {"AAPL"}


def test_retries_stop_when_the_wait_budget_is_spent(yahoo):
    server = yahoo(["AAPL"])
    server.faults["AAPL"] = RATE_LIMITED * 10
    sleeps = Sleeps()
    batch = fetch(["AAPL"], sleeps, RetryPolicy(attempts=10, base_delay_s=4, max_delay_s=64, budget_s=20))
    assert sum(sleeps) <= 20
    attempts = len(sleeps) + 1
    assert server.chart_requests["AAPL"] == 2 * attempts and attempts < 10
    assert batch.ticker_causes == {"AAPL": "transient"} and f"after {attempts} attempts" in batch.ticker_errors["AAPL"]


def test_a_permanent_error_is_not_retried(yahoo):
    server = yahoo(["AAPL"])
    server.faults["AAPL"] = [403, 403]  # Yahoo's edge refuses the client: an HTML page, twice
    sleeps = Sleeps()
    with pytest.raises(SourceUnavailableError, match="Yahoo Finance request for AAPL failed: JSONDecodeError"):
        fetch(["AAPL"], sleeps)
    assert server.chart_requests["AAPL"] == 2 and sleeps == []  # yfinance's own second try only


# Retries are proven above; test_yahoo.py proves a timeout and a 5xx burst retried until
# the ticker answers, and an unknown symbol reported at once with Yahoo's reason.


# --- through the whole run --------------------------------------------------------------


@pytest.fixture
def yahoo_env(workdir, clean_env, monkeypatch):
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "yfinance")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,GONE,MSFT")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-03-01")
    monkeypatch.setattr(yf_source, "DEFAULT_POLICY", RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.02))
    return workdir / "data" / "financial_etl.duckdb"


def run(start="2024-03-01", end="2024-03-08") -> int:
    return main(["run", "--start", start, "--end", end])


def test_a_ticker_without_rows_fails_the_run_by_name_and_loads_nothing(yahoo, yahoo_env, capsys):
    yahoo(GONE="2024-02-09")  # Yahoo knows GONE, but it stopped trading before the range
    assert run() == EXIT_DATA_QUALITY
    err = capsys.readouterr().err
    assert "returned no rows for GONE" in err and "no price data found" in err
    assert "FINANCIAL_ETL_ALLOW_PARTIAL_LOADS" in err
    if yahoo_env.exists():
        assert query(
            yahoo_env, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'eod_prices_raw'"
        ) == [(0,)]


@pytest.mark.slow
def test_partial_loads_load_the_other_tickers_and_equal_a_run_without_the_bad_one(
    yahoo, yahoo_env, clean_env, tmp_path
):
    server = yahoo(GONE="2024-02-09")
    clean_env.setenv("FINANCIAL_ETL_ALLOW_PARTIAL_LOADS", "true")
    assert run() == EXIT_SUCCESS
    partial = query(yahoo_env, RAW_ROWS)
    assert {r[0] for r in partial} == {"AAPL", "MSFT"} and len(partial) == 12

    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "clean" / "w.duckdb"))
    server.new_process()
    assert run() == EXIT_SUCCESS
    assert query(tmp_path / "clean" / "w.duckdb", RAW_ROWS) == partial


@pytest.mark.slow
def test_a_source_that_keeps_failing_fails_the_run_with_exit_4_and_a_rerun_repairs_it(yahoo, yahoo_env, capsys):
    server = yahoo(["AAPL", "GONE", "MSFT"])
    for ticker in ("AAPL", "GONE", "MSFT"):
        server.faults[ticker] = RATE_LIMITED * 3  # every one of the 3 attempts
    assert run() == EXIT_CONNECTION
    err = capsys.readouterr().err
    assert "kept failing with transient errors for AAPL, GONE, MSFT" in err
    assert "still failing after 3 attempts" in err and "nothing was loaded" in err
    server.new_process()
    server.chart_requests.clear()
    assert run() == EXIT_SUCCESS
    assert server.chart_requests == {"AAPL": 2, "GONE": 2, "MSFT": 2}  # answered at once: probe and window
    assert query(yahoo_env, "SELECT count(*) FROM raw.eod_prices_raw") == [(18,)]


def test_an_empty_answer_on_a_trading_day_is_an_error(yahoo, yahoo_env, capsys):
    server = yahoo(["AAPL", "GONE", "MSFT"])
    for listing in server.listings.values():  # Yahoo has no bar for the day, for any ticker
        listing.prices = listing.prices[listing.prices["date"] != day("2024-03-05")]
    assert run("2024-03-05", "2024-03-05") == EXIT_CONNECTION
    assert (
        "returned no rows for any of the 3 tickers for 2024-03-05 to 2024-03-05 (1 NYSE session)"
        in capsys.readouterr().err
    )


@pytest.mark.slow
def test_an_empty_answer_on_a_holiday_is_normal(yahoo, yahoo_env):
    yahoo(["AAPL", "GONE", "MSFT"])
    assert run("2024-03-29", "2024-03-29") == EXIT_SUCCESS  # Good Friday: the NYSE is closed
    assert query(yahoo_env, "SELECT count(*) FROM raw.eod_prices_raw") == [(0,)]
