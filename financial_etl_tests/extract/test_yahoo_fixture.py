"""The Yahoo chart fixture (financial_etl_tests/yahoo.py) under yfinance 1.7's own code:
its answers parse as Yahoo's do, and Yahoo's failures leave `history()` as yfinance turns
them into exceptions."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import yfinance as yf
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from curl_cffi.requests.exceptions import HTTPError, Timeout
from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTickerMissingError, YFTzMissingError

from financial_etl.calendar import trading_sessions
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.extract.sources.yfinance import yfinance_raises
from financial_etl_tests.helpers import day
from financial_etl_tests.yahoo import PRICE_COLUMNS, Listing, YahooChartServer, listing_from_frame, random_listing

SPLIT, DIVIDEND = day("2024-07-15"), day("2024-07-10")


def on_quarters(listing: Listing) -> Listing:
    """Prices on a $0.25 grid: exact in float32, so Yahoo's halving of them is exact too."""
    prices = listing.prices.copy()
    prices[PRICE_COLUMNS] = (prices[PRICE_COLUMNS] * 4).round() / 4
    return Listing(prices)


@pytest.fixture
def yahoo(monkeypatch, tmp_path) -> YahooChartServer:
    plain = on_quarters(random_listing(day("2024-06-03"), day("2024-08-30"), seed=1))
    split = plain.prices.copy()
    after = split["date"] >= SPLIT
    split.loc[after, PRICE_COLUMNS] /= 2  # as traded: half the price, twice the shares
    split.loc[after, "volume"] *= 2
    listings = {
        "AAA": plain,
        "SPL": Listing(split, splits={SPLIT: (2, 1)}),
        "DIV": Listing(plain.prices, dividends={DIVIDEND: 0.5}),
    }
    return YahooChartServer(listings, today=day("2024-08-30")).install(monkeypatch, tmp_path)


@pytest.fixture
def raising() -> Iterator[None]:
    """yfinance raises instead of logging (the project's setting)."""
    with yfinance_raises():
        yield


def history(symbol: str, start: str = "2024-07-01", end: str = "2024-07-20") -> pd.DataFrame:
    return yf.Ticker(symbol).history(start=start, end=end, auto_adjust=True, actions=True)


def traded(server: YahooChartServer, symbol: str, frame: pd.DataFrame) -> pd.DataFrame:
    return server.listings[symbol].prices.set_index("date").loc[frame.index.date].set_axis(frame.index)


def on_days(column: pd.Series) -> dict[dt.date, float]:
    return {ts.date(): value for ts, value in column[column != 0].items()}


def test_one_row_per_nyse_session_with_yahoos_types(yahoo):
    bars = history("AAA")
    assert list(bars.index.date) == trading_sessions(day("2024-07-01"), day("2024-07-19"))
    assert day("2024-07-04") not in bars.index.date
    assert str(bars.index.tz) == "America/New_York" and bars["Volume"].dtype == np.int64
    assert bars["Close"].tolist() == traded(yahoo, "AAA", bars)["close"].tolist()
    assert (bars[["Dividends", "Stock Splits"]] == 0).all().all()
    assert yahoo.chart_requests == {"AAA": 2}  # the timezone probe, then the window
    assert history("AAA").equals(bars) and yahoo.chart_requests == {"AAA": 2}  # yfinance's cache_get


def test_download_agrees_with_history_and_leaves_an_unknown_symbol_empty(yahoo):
    wide = yf.download(
        ["AAA", "ZZZZ"], start="2024-07-01", end="2024-07-20", auto_adjust=True, actions=True, progress=False
    )
    assert wide[("Close", "AAA")].tolist() == history("AAA")["Close"].tolist()
    assert wide.xs("ZZZZ", axis=1, level="Ticker").isna().all().all()


def test_a_split_halves_earlier_prices_exactly_and_doubles_their_volume(yahoo):
    bars = history("SPL")
    raw, before = traded(yahoo, "SPL", bars), bars.index.date < SPLIT
    assert on_days(bars["Stock Splits"]) == {SPLIT: 2.0}
    assert (bars["Close"][before] == raw["close"][before] / 2).all()
    assert (bars["Close"][~before] == raw["close"][~before]).all()
    assert (bars["Volume"][before] == raw["volume"][before] * 2).all()


def test_yahoo_learns_of_a_split_on_its_date_and_yfinance_keeps_its_old_answer(yahoo):
    window = {"start": "2024-07-01", "end": "2024-07-12"}
    yahoo.today = day("2024-07-12")
    early = history("SPL", **window)
    raw = traded(yahoo, "SPL", early)["close"]
    assert (early["Close"] == raw).all() and (early["Stock Splits"] == 0).all()
    yahoo.today = day("2024-08-30")
    assert history("SPL", **window).equals(early)  # a past window: served from yfinance's cache_get
    yahoo.new_process()  # the next run
    assert (history("SPL", **window)["Close"] == raw / 2).all()


def test_a_dividend_shows_on_its_day_and_scales_earlier_adjusted_closes(yahoo):
    bars = history("DIV")
    raw = traded(yahoo, "DIV", bars)
    assert on_days(bars["Dividends"]) == {DIVIDEND: 0.5}
    before = bars.index.date < DIVIDEND
    factor = 1 - 0.5 / raw["close"][before].iloc[-1]
    assert np.allclose(bars["Close"][before], raw["close"][before] * factor, rtol=1e-6)
    assert (bars["Close"][~before] == raw["close"][~before]).all()


def test_an_unknown_symbol_fails_on_yahoos_404s(yahoo, raising):
    # A process's first two timezone misses fall back to quoteSummary, whose 404 yfinance
    # raises as is; later misses raise YFTzMissingError.
    for _ in range(2):
        with pytest.raises(HTTPError, match="404"):
            history("ZZZZ")
    with pytest.raises(YFTzMissingError) as caught:
        history("ZZZZ")
    assert isinstance(caught.value, YFTickerMissingError)
    assert yahoo.chart_requests["ZZZZ"] == 2  # probe, retried with the other cookie strategy; then cached


def test_a_holiday_only_window_has_no_prices(yahoo):
    assert history("AAA", start="2024-07-04", end="2024-07-05").empty
    with yfinance_raises(), pytest.raises(YFPricesMissingError) as caught:
        history("AAA", start="2024-07-04", end="2024-07-05")
    assert caught.value.yahoo_reason is None


def test_transport_faults_raise_curl_cffis_errors(yahoo, raising):
    yahoo.faults["AAA"] = ["timeout", "reset"]
    with pytest.raises(Timeout):
        history("AAA")
    with pytest.raises(CurlConnectionError):
        history("AAA")
    assert len(history("AAA")) == 14
    assert yahoo.chart_requests["AAA"] == 4


def test_http_errors_are_retried_once_by_yfinance(yahoo, raising):
    yahoo.faults["AAA"] = [503]  # one error: yfinance asks again with its other cookie strategy
    assert len(history("AAA")) == 14
    yahoo.faults["AAA"] = [429]
    assert len(history("AAA", start="2024-07-02")) == 13
    yahoo.faults["AAA"] = [429, 429]
    with pytest.raises(YFRateLimitError):
        history("AAA", start="2024-07-03")
    yahoo.faults["AAA"] = [503, 503]
    with pytest.raises(json.JSONDecodeError):  # Yahoo's HTML error page, parsed as JSON
        history("AAA", start="2024-07-05")
    assert yahoo.chart_requests["AAA"] == 9
    with pytest.raises(json.JSONDecodeError):  # the same window: yfinance's cache_get kept the 503
        history("AAA", start="2024-07-05")
    assert yahoo.chart_requests["AAA"] == 9


def test_a_listing_from_the_synthetic_source(monkeypatch, tmp_path):
    frame = fetch_synthetic(["AAA", "BBB"], day("2024-07-01"), day("2024-07-31")).frame
    server = YahooChartServer({"BBB": listing_from_frame(frame, "BBB")}, today=day("2024-07-31"))
    server.install(monkeypatch, tmp_path)
    bars = history("BBB", end="2024-08-01")
    expected = frame[frame["ticker"] == "BBB"]
    assert list(bars.index.date) == expected["date"].tolist()
    assert bars["Close"].tolist() == [float(np.float32(x)) for x in expected["close_price"]]
