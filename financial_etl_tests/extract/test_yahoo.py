"""The Yahoo Finance source through yfinance's own code: Yahoo's chart answers are served
under yfinance's HTTP session (financial_etl_tests/yahoo.py), so its cookie, parsing,
adjustment and error handling run as against Yahoo."""

import datetime as dt
import logging

import numpy as np
import pytest

from financial_etl.errors import EXIT_CONFIG, EXIT_CONNECTION, SourceUnavailableError, UnknownTickerError
from financial_etl.extract.resource import fetch_batch
from financial_etl.extract.sources import yfinance as yf_source
from financial_etl.extract.sources.yfinance import RetryPolicy
from financial_etl_tests.helpers import day
from financial_etl_tests.yahoo import YahooChartServer, random_listing

START, END = day("2024-06-03"), day("2024-07-12")  # holds Juneteenth and July 4th


@pytest.fixture
def yahoo(monkeypatch, tmp_path):
    listings = {t: random_listing(day("2024-01-02"), END, seed=i) for i, t in enumerate(("AAA", "BBB", "CCC"))}
    return YahooChartServer(listings, today=END).install(monkeypatch, tmp_path)


def split(listing, on: dt.date, ratio: int) -> None:
    """A ratio-for-1 split on `on`, as traded: the price divides by the ratio from that day."""
    after = listing.prices["date"] >= on
    for column in ("open", "high", "low", "close"):
        listing.prices.loc[after, column] = (listing.prices.loc[after, column] / ratio).round(2)
    listing.prices.loc[after, "volume"] *= ratio
    listing.splits[on] = (ratio, 1)


def fetch(tickers, start=START, end=END, attempts=5):
    sleeps: list[float] = []
    batch = yf_source.fetch_yfinance(tickers, start, end, policy=RetryPolicy(attempts=attempts), sleep=sleeps.append)
    return batch, sleeps


def test_prices_equal_yfinance_download_bit_for_bit_on_sessions_only(yahoo):
    import yfinance as yf

    batch, sleeps = fetch(["AAA", "BBB"])
    wide = yf.download(
        ["AAA", "BBB"],
        start=START.isoformat(),
        end=(END + dt.timedelta(days=1)).isoformat(),
        auto_adjust=True,
        progress=False,
        threads=False,
    )
    for ticker in ("AAA", "BBB"):
        mine = batch.frame[batch.frame["ticker"] == ticker]
        theirs = wide.xs(ticker, axis=1, level=1).dropna(how="all")
        assert list(mine["date"]) == [ts.date() for ts in theirs.index]
        assert day("2024-07-04") not in set(mine["date"]) and day("2024-06-19") not in set(mine["date"])
        for mine_col, theirs_col in (
            ("open_price", "Open"),
            ("high_price", "High"),
            ("low_price", "Low"),
            ("close_price", "Close"),
            ("volume", "Volume"),
        ):
            assert np.array_equal(mine[mine_col].to_numpy(), theirs[theirs_col].to_numpy(dtype=float)), mine_col
    assert sleeps == [] and batch.ticker_errors == {}


def test_a_timeout_and_a_5xx_burst_on_one_ticker_are_retried_until_it_answers(yahoo):
    yahoo.faults["BBB"] = ["timeout", 503, 502]
    batch, sleeps = fetch(["AAA", "BBB"])
    assert len(sleeps) == 3
    assert set(batch.frame["ticker"]) == {"AAA", "BBB"} and batch.ticker_errors == {}
    full, _ = fetch(["BBB"])
    assert batch.frame[batch.frame["ticker"] == "BBB"].reset_index(drop=True).equals(full.frame)


@pytest.mark.parametrize("fault", ["timeout", 500, 429])
def test_a_persistent_transient_failure_exits_4_naming_the_ticker_and_transient(yahoo, fault):
    yahoo.faults["BBB"] = [fault] * 10
    with pytest.raises(SourceUnavailableError) as failure:
        fetch_batch(lambda t, s, e: fetch(t, s, e, attempts=3)[0], ["AAA", "BBB"], START, END)
    assert failure.value.exit_code == EXIT_CONNECTION
    message = str(failure.value)
    assert "BBB" in message and "transient" in message and "still failing after 3 attempts" in message
    assert "AAA" not in message.split("for ", 1)[1].split(" for ")[0]


def test_an_unknown_symbol_is_a_config_error_with_yahoos_reason_and_no_retry(yahoo):
    with pytest.raises(UnknownTickerError) as failure:
        fetch_batch(lambda t, s, e: fetch(t, s, e)[0], ["AAA", "NOPE"], START, END)
    assert failure.value.exit_code == EXIT_CONFIG
    assert "does not know NOPE" in str(failure.value) and "not found for symbol: NOPE" in str(failure.value)
    assert yahoo.chart_requests["NOPE"] <= 2  # the timezone probe and at most one more: never retried


def test_a_holiday_only_range_is_empty_and_quiet(yahoo, caplog):
    with caplog.at_level(logging.WARNING):
        batch, sleeps = fetch(["AAA", "BBB"], day("2024-07-04"), day("2024-07-04"))
    assert batch.frame.empty and batch.ticker_errors == {} and sleeps == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_a_split_and_a_dividend_come_with_the_prices_and_their_factors(yahoo):
    listing = yahoo.listings["AAA"]
    split_day, dividend_day = day("2024-06-10"), day("2024-07-01")
    as_traded = listing.prices.set_index("date")["close"]
    split(listing, split_day, 2)
    listing.dividends[dividend_day] = 0.5
    batch, _ = fetch(["AAA"])
    actions = batch.actions.set_index("date")
    assert list(actions.index) == [split_day, dividend_day]
    assert actions.loc[split_day, "split_ratio"] == 2 and actions.loc[split_day, "price_factor"] == 0.5
    before = as_traded.index[as_traded.index.get_loc(dividend_day) - 1]
    # Yahoo's dividend factor: 1 - dividend / the close before (float32 in its answer).
    expected = 1 - 0.5 / float(np.float32(round(as_traded[before] / 2, 2)))
    assert actions.loc[dividend_day, "dividend"] == 0.5
    assert actions.loc[dividend_day, "price_factor"] == pytest.approx(expected, rel=1e-6)
    closes = batch.frame.set_index("date")["close_price"]
    # Adjusted: the day before the split is half its traded price, times the dividend's factor,
    # so the split day's return is the traded one.
    eve = day("2024-06-07")
    assert closes[eve] == pytest.approx(as_traded[eve] / 2 * expected, rel=1e-6)
    assert closes[split_day] / closes[eve] == pytest.approx(
        round(as_traded[split_day] / 2, 2) / (as_traded[eve] / 2), rel=1e-6
    )
