"""Yahoo Finance faults: transient errors retried with backoff, permanent ones named,
missing tickers and empty answers; every case asserted on what the warehouse holds.

`yf.download` is replaced by `FakeYahoo`, which behaves as yfinance 1.x does: a failing
ticker comes back as all-NaN columns and its error is logged on the `yfinance` logger
as `['MSFT']: <error>`; a failure of the whole request raises.
"""

from __future__ import annotations

import logging
import random

import pandas as pd
import pytest

from financial_etl.cli.main import main
from financial_etl.errors import EXIT_CONNECTION, EXIT_DATA_QUALITY, EXIT_SUCCESS, SourceUnavailableError
from financial_etl.extract.sources import yfinance as yf_source
from financial_etl.extract.sources.yfinance import RetryPolicy
from financial_etl_tests.helpers import day, query, yahoo_download_frame

RATE_LIMIT = "YFRateLimitError('Too Many Requests. Rate limited. Try after a while.')"
TIMEOUT = "Timeout('curl: (28) Operation timed out after 10002 milliseconds with 0 bytes received')"
DELISTED = "possibly delisted; no price data found  (1d 2024-03-01 -> 2024-03-09)"
RAW_ROWS = "SELECT ticker, date, close_price, volume FROM raw.eod_prices_raw ORDER BY ticker, date"


class FakeYahoo:
    """`script[i]` decides call i: a dict ticker -> error text (that ticker fails), or an
    exception to raise. Calls beyond the script answer everything."""

    def __init__(self, tickers, start="2024-03-01", end="2024-03-08", script=(), delisted=()):
        self.full = yahoo_download_frame(tickers, start, end)
        self.script = list(script)
        self.delisted = set(delisted)
        self.calls: list[list[str]] = []

    def __call__(self, tickers, **kwargs):
        self.calls.append(list(tickers))
        step = self.script[len(self.calls) - 1] if len(self.calls) <= len(self.script) else {}
        if isinstance(step, BaseException):
            raise step
        failing = {**{t: DELISTED for t in self.delisted}, **step}
        frame = self.full.loc[:, self.full.columns.get_level_values("Ticker").isin(tickers)].copy()
        by_error: dict[str, list[str]] = {}
        for ticker in tickers:
            if ticker in failing:
                frame.loc[:, (slice(None), ticker)] = float("nan")
                by_error.setdefault(failing[ticker], []).append(ticker)
        for error, symbols in by_error.items():
            logging.getLogger("yfinance").error(f"{symbols}: {error}")
        return frame


@pytest.fixture
def yahoo(monkeypatch):
    def install(fake: FakeYahoo) -> FakeYahoo:
        monkeypatch.setattr("yfinance.download", fake)
        return fake

    return install


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


def fetch(tickers, sleeps, policy=RetryPolicy()):
    return yf_source.fetch_yfinance(tickers, day("2024-03-01"), day("2024-03-08"), policy=policy,
                                    sleep=sleeps, rng=random.Random(1))


def test_a_rate_limited_ticker_is_retried_with_growing_jittered_waits_and_logged(yahoo, caplog):
    fake = yahoo(FakeYahoo(["AAPL", "MSFT"], script=[{"MSFT": RATE_LIMIT}, {"MSFT": RATE_LIMIT}]))
    sleeps = Sleeps()
    with caplog.at_level(logging.WARNING, logger="financial_etl"):
        batch = fetch(["AAPL", "MSFT"], sleeps)
    assert fake.calls == [["AAPL", "MSFT"], ["MSFT"], ["MSFT"]]  # only the failed ticker is asked again
    assert set(batch.frame.ticker) == {"AAPL", "MSFT"} and batch.ticker_errors == {}
    assert batch.frame.groupby("ticker").size().to_dict() == {"AAPL": 6, "MSFT": 6}
    policy = RetryPolicy()
    assert policy.base_delay_s / 2 <= sleeps[0] <= policy.base_delay_s
    assert policy.base_delay_s <= sleeps[1] <= 2 * policy.base_delay_s
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2 and "MSFT" in retries[0] and "YFRateLimitError" in retries[0] and "retry 1 of 4" in retries[0]


def test_a_request_that_raises_a_timeout_is_retried(yahoo):
    fake = yahoo(FakeYahoo(["AAPL"], script=[TimeoutError("read timed out")]))
    batch = fetch(["AAPL"], Sleeps())
    assert len(fake.calls) == 2 and len(batch.frame) == 6


def test_retries_stop_at_the_attempt_limit_and_name_the_ticker(yahoo):
    fake = yahoo(FakeYahoo(["AAPL", "MSFT"], script=[{"MSFT": TIMEOUT}] * 10))
    sleeps = Sleeps()
    batch = fetch(["AAPL", "MSFT"], sleeps, RetryPolicy(attempts=4, base_delay_s=1, max_delay_s=2, budget_s=100))
    assert len(fake.calls) == 4 and len(sleeps) == 3
    assert max(sleeps) <= 2
    assert set(batch.ticker_errors) == {"MSFT"} and "still failing after 4 attempts" in batch.ticker_errors["MSFT"]


def test_retries_stop_when_the_wait_budget_is_spent(yahoo):
    fake = yahoo(FakeYahoo(["AAPL"], script=[{"AAPL": RATE_LIMIT}] * 10))
    sleeps = Sleeps()
    batch = fetch(["AAPL"], sleeps, RetryPolicy(attempts=10, base_delay_s=4, max_delay_s=64, budget_s=20))
    assert sum(sleeps) <= 20
    assert len(fake.calls) == len(sleeps) + 1 < 10
    assert "AAPL" in batch.ticker_errors


def test_a_permanent_error_is_not_retried(yahoo):
    fake = yahoo(FakeYahoo(["AAPL"], script=[ValueError("Invalid input - interval=1d is not supported")]))
    sleeps = Sleeps()
    with pytest.raises(SourceUnavailableError, match="AAPL.*ValueError: Invalid input"):
        fetch(["AAPL"], sleeps)
    assert len(fake.calls) == 1 and sleeps == []


def test_a_delisted_ticker_is_reported_at_once_with_yahoos_reason(yahoo):
    fake = yahoo(FakeYahoo(["AAPL", "GONE"], delisted=["GONE"]))
    batch = fetch(["AAPL", "GONE"], Sleeps())
    assert len(fake.calls) == 1
    assert batch.ticker_errors == {"GONE": DELISTED}
    assert set(batch.frame.ticker) == {"AAPL"}


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


def test_an_unknown_ticker_fails_the_run_by_name_and_loads_nothing(yahoo, yahoo_env, capsys):
    yahoo(FakeYahoo(["AAPL", "GONE", "MSFT"], delisted=["GONE"]))
    assert run() == EXIT_DATA_QUALITY
    err = capsys.readouterr().err
    assert "GONE" in err and "possibly delisted" in err and "FINANCIAL_ETL_ALLOW_PARTIAL_LOADS" in err
    if yahoo_env.exists():
        assert query(yahoo_env, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'eod_prices_raw'") == [(0,)]


@pytest.mark.slow
def test_partial_loads_load_the_other_tickers_and_equal_a_run_without_the_bad_one(yahoo, yahoo_env, clean_env, tmp_path):
    yahoo(FakeYahoo(["AAPL", "GONE", "MSFT"], delisted=["GONE"]))
    clean_env.setenv("FINANCIAL_ETL_ALLOW_PARTIAL_LOADS", "true")
    assert run() == EXIT_SUCCESS
    partial = query(yahoo_env, RAW_ROWS)
    assert {r[0] for r in partial} == {"AAPL", "MSFT"} and len(partial) == 12

    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAPL,MSFT")
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "clean" / "w.duckdb"))
    assert run() == EXIT_SUCCESS
    assert query(tmp_path / "clean" / "w.duckdb", RAW_ROWS) == partial


@pytest.mark.slow
def test_a_source_that_keeps_failing_fails_the_run_with_exit_4_and_a_rerun_repairs_it(yahoo, yahoo_env, capsys):
    yahoo(FakeYahoo(["AAPL", "GONE", "MSFT"], script=[{"AAPL": RATE_LIMIT, "GONE": RATE_LIMIT, "MSFT": RATE_LIMIT}] * 3))
    assert run() == EXIT_CONNECTION
    err = capsys.readouterr().err
    assert "no rows for any of the 3 tickers" in err and "still failing after 3 attempts" in err
    fake = yahoo(FakeYahoo(["AAPL", "GONE", "MSFT"]))
    assert run() == EXIT_SUCCESS
    assert len(fake.calls) == 1
    assert query(yahoo_env, "SELECT count(*) FROM raw.eod_prices_raw") == [(18,)]


def test_an_empty_answer_on_a_trading_day_is_an_error(yahoo, yahoo_env, monkeypatch, capsys):
    monkeypatch.setattr("yfinance.download", lambda tickers, **kw: pd.DataFrame())
    assert run("2024-03-05", "2024-03-05") == EXIT_CONNECTION
    assert "returned no rows for any of the 3 tickers for 2024-03-05 to 2024-03-05 (1 NYSE session)" in capsys.readouterr().err


@pytest.mark.slow
def test_an_empty_answer_on_a_holiday_is_normal(yahoo, yahoo_env, monkeypatch):
    monkeypatch.setattr("yfinance.download", lambda tickers, **kw: pd.DataFrame())
    assert run("2024-03-29", "2024-03-29") == EXIT_SUCCESS  # Good Friday: the NYSE is closed
    assert query(yahoo_env, "SELECT count(*) FROM raw.eod_prices_raw") == [(0,)]
