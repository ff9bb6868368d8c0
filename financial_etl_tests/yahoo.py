"""Yahoo Finance's v8 chart API, served inside yfinance's real HTTP layer (no network).

`YahooChartServer.install` replaces `curl_cffi.requests.Session._request_once`, where every
yfinance request becomes a response, so yfinance's cookie/crumb handshake, its retry with
the other cookie strategy, JSON parsing, adjustment and error handling all run as they do
against Yahoo. Answers follow Yahoo's (shapes checked against yfinance 1.7.0's
`utils.parse_quotes`, `parse_actions`, `format_history_metadata` and `history()`):

- daily bars stamped at the session's 09:30 America/New_York, NYSE sessions only;
- OHLC split-adjusted and volume scaled up by every split known on `today`; `adjclose`
  also dividend-adjusted (multiplicative); prices carry float32 precision, as Yahoo's JSON;
- dividend amounts in `events` are split-adjusted, as Yahoo reports them;
- an unknown symbol is a 404 with Yahoo's JSON error, on the chart and quoteSummary APIs.
"""

from __future__ import annotations

import collections
import datetime as dt
import http.cookiejar
import json
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from curl_cffi.const import CurlECode
from curl_cffi.requests import Headers, Response, Session
from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError
from curl_cffi.requests.exceptions import Timeout

from financial_etl.calendar import trading_sessions

NEW_YORK = ZoneInfo("America/New_York")
CRUMB = "Fx8bD0Jp3Xa"
VALID_RANGES = ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
Fault = Literal["timeout", "reset"] | int

CHART_NOT_FOUND = {
    "chart": {"result": None, "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"}}
}
# Yahoo's edge error page for a 5xx: HTML, so yfinance's `.json()` is what fails.
EDGE_ERROR_PAGE = """<!doctype html public "-//W3C//DTD HTML 4.01//EN" "http://www.w3.org/TR/html4/strict.dtd">
<html>
<head>
    <title>Yahoo! - Error report</title>
</head>
<body>
<div id="doc">
    <div id="bd">
        <h1>HTTP Status {status} - {reason}</h1>
    </div>
</div>
</body>
</html>
"""


@dataclass
class Listing:
    """One symbol's history as traded: what happened, before Yahoo adjusts it."""

    prices: pd.DataFrame  # date, open, high, low, close, volume; one row per NYSE session
    splits: dict[dt.date, tuple[int, int]] = field(default_factory=dict)  # 2-for-1: (2, 1)
    dividends: dict[dt.date, float] = field(default_factory=dict)  # cash per share, as traded

    def __post_init__(self) -> None:
        prices = self.prices.copy()
        prices["date"] = pd.to_datetime(prices["date"]).dt.date
        self.prices = prices.sort_values("date").reset_index(drop=True)


def listing_from_frame(frame: pd.DataFrame, ticker: str | None = None) -> Listing:
    """A Listing from the project's raw long frame (ticker, date, open_price, …, volume)."""
    if ticker is not None:
        frame = frame[frame["ticker"] == ticker]
    elif frame["ticker"].nunique() > 1:
        raise ValueError("the frame holds several tickers: name one")
    return Listing(
        pd.DataFrame(
            {
                "date": frame["date"].to_numpy(),
                **{col: frame[f"{col}_price"].to_numpy(dtype=float) for col in PRICE_COLUMNS},
                "volume": frame["volume"].to_numpy().astype(np.int64),
            }
        )
    )


def random_listing(start: dt.date, end: dt.date, seed: int = 0) -> Listing:
    """Seeded as-traded OHLCV on the NYSE sessions from start to end: prices in cents,
    the open gapping from the previous close, high/low around both."""
    rng = np.random.default_rng(seed)
    sessions = trading_sessions(start, end)
    n = len(sessions)
    vol = rng.uniform(0.01, 0.025)
    close = rng.uniform(20, 200) * np.exp(np.cumsum(rng.normal(0.0003, vol, n)))
    open_ = np.concatenate([[close[0]], close[:-1]]) * np.exp(rng.normal(0, vol / 3, n))
    high = np.maximum(open_, close) * (1 + np.abs(rng.normal(0, vol / 2, n)))
    low = np.minimum(open_, close) * (1 - np.abs(rng.normal(0, vol / 2, n)))
    open_, high, low, close = (np.round(x, 2) for x in (open_, high, low, close))
    return Listing(
        pd.DataFrame(
            {
                "date": sessions,
                "open": open_,
                "close": close,
                "high": np.maximum.reduce([high, open_, close]),
                "low": np.minimum.reduce([low, open_, close]),
                "volume": np.round(rng.lognormal(np.log(3e6), 0.35, n)).astype(np.int64),
            }
        )
    )


def _ts(day: dt.date, hour: int = 9, minute: int = 30) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), NEW_YORK).timestamp())


def _f32(values: Any) -> list[float | None]:
    """Yahoo's JSON numbers are float32 values printed as doubles; missing is null."""
    return [None if math.isnan(x) else x for x in np.asarray(values, dtype=np.float32).astype(float).tolist()]


def _response(url: str, status: int, body: str, content_type: str) -> Response:
    response = Response()
    response.url, response.status_code = url, status
    response.reason, response.ok = HTTPStatus(status).phrase, 200 <= status < 400
    response.headers = Headers({"content-type": content_type})
    response.content = body.encode()
    return response


def _json(url: str, status: int, payload: Any) -> Response:
    return _response(url, status, json.dumps(payload, separators=(",", ":")), "application/json;charset=utf-8")


class YahooChartServer:
    """Answers yfinance's requests from `listings`, as Yahoo would on `today`."""

    def __init__(self, listings: dict[str, Listing], today: dt.date | None = None):
        self.listings = listings
        self.today = today or dt.date.today()
        self.faults: dict[str, list[Fault]] = {}
        self.chart_requests: collections.Counter[str] = collections.Counter()
        self.requests: list[str] = []  # every "METHOD url" answered, for debugging a test
        self._lock = threading.Lock()  # yf.download asks from several threads

    def install(self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> YahooChartServer:
        import yfinance as yf
        from yfinance import base, cache, data

        server = self

        def _request_once(session: Session, method: str, url: str, params: Any = None, **kwargs: Any) -> Response:
            return server._answer(session, method, url, params, kwargs.get("timeout"))

        monkeypatch.setattr(Session, "_request_once", _request_once)
        # Snapshot yfinance's cache singletons so teardown puts the user's caches back.
        for db_manager, manager, attr, proxy in (
            (cache._TzDBManager, cache._TzCacheManager, "_tz_cache", cache.tz_db_proxy),
            (cache._CookieDBManager, cache._CookieCacheManager, "_Cookie_cache", cache.Cookie_db_proxy),
            (cache._ISINDBManager, cache._ISINCacheManager, "_isin_cache", cache.isin_db_proxy),
        ):
            for obj, name in ((db_manager, "_db"), (db_manager, "_cache_dir"), (proxy, "obj")):
                monkeypatch.setattr(obj, name, getattr(obj, name))
            # The cache objects keep the database they first opened: without dropping them,
            # set_tz_cache_location would not move an already used cache.
            monkeypatch.setattr(manager, attr, None)
        yf.set_tz_cache_location(str(tmp_path / "py-yfinance"))
        monkeypatch.setattr(base, "_tz_info_fetch_ctr", base._tz_info_fetch_ctr)
        monkeypatch.setattr(data.SingletonMeta, "_instances", dict(data.SingletonMeta._instances))
        self.new_process()
        return self

    def new_process(self) -> None:
        """yfinance's in-process state as a fresh process has it (the on-disk caches stay):
        a new YfData (no cookie, no crumb, 'basic' strategy), an empty `cache_get` (it
        keeps every answer for a window that ended over 30 minutes ago, and every
        timezone probe), and the two info look-ups yfinance allows a process when a
        timezone probe fails. Call it after moving `today` to model the next run."""
        from yfinance import base, data

        data.SingletonMeta._instances.pop(data.YfData, None)
        data.YfData.cache_get.cache_clear()
        base._tz_info_fetch_ctr = 0

    # --- requests -------------------------------------------------------------------------

    def _answer(self, session: Session, method: str, url: str, params: Any, timeout: Any) -> Response:
        parts = urlsplit(url)
        params = dict(params.items() if isinstance(params, Mapping) else params or [])
        query = {**dict(parse_qsl(parts.query)), **params}
        separator = "&" if parts.query else "" if url.endswith("?") else "?"
        full = f"{url}{separator}{urlencode(params)}" if params else url
        host, path = parts.hostname or "", parts.path
        with self._lock:
            self.requests.append(f"{method} {full}")
        if host == "fc.yahoo.com":
            # Yahoo's A3 cookie: yfinance keeps it in its cookie cache and stops asking.
            expires = int(time.time()) + 365 * 86400
            session.cookies.jar.set_cookie(
                http.cookiejar.Cookie(
                    0,
                    "A3",
                    f"d=AQABBA{CRUMB}&S=AQAAAg",
                    None,
                    False,
                    ".yahoo.com",
                    True,
                    True,
                    "/",
                    True,
                    True,
                    expires,
                    False,
                    None,
                    None,
                    {},
                )
            )
            return _response(full, 200, "", "text/html;charset=utf-8")
        if path.endswith("/v1/test/getcrumb"):
            return _response(full, 200, CRUMB, "text/plain;charset=utf-8")
        if host.endswith("consent.yahoo.com") or host == "guce.yahoo.com":
            # No consent form: yfinance's 'csrf' strategy gives up and returns to 'basic'.
            return _response(full, 200, "<html><body></body></html>", "text/html;charset=utf-8")
        if path.startswith("/v8/finance/chart/"):
            return self._chart_request(full, unquote(path.rsplit("/", 1)[1]), query, timeout)
        if path.startswith("/v10/finance/quoteSummary/"):
            return self._quote_summary(full, unquote(path.rsplit("/", 1)[1]))
        if path.startswith("/v7/finance/quote"):
            symbols = [s for s in query.get("symbols", "").split(",") if s in self.listings]
            return _json(full, 200, {"quoteResponse": {"result": [self._quote(s) for s in symbols], "error": None}})
        if "/fundamentals-timeseries/" in path:  # meta only, as for a symbol without fundamentals
            meta = {"symbol": [query.get("symbol", "")], "type": [query.get("type", "")]}
            return _json(full, 200, {"timeseries": {"result": [{"meta": meta}], "error": None}})
        error = {"code": "Not Found", "description": "HTTP 404 Not Found"}
        return _json(full, 404, {"finance": {"result": None, "error": error}})

    def _chart_request(self, url: str, symbol: str, query: dict[str, str], timeout: Any) -> Response:
        with self._lock:
            self.chart_requests[symbol] += 1
            pending = self.faults.get(symbol)
            fault = pending.pop(0) if pending else None
        if fault == "timeout":
            ms = int(float(timeout or 30) * 1000)
            raise Timeout(
                f"Failed to perform, curl: (28) Operation timed out after {ms} milliseconds with 0 bytes "
                "received. See https://curl.se/libcurl/c/libcurl-errors.html first for more details.",
                CurlECode.OPERATION_TIMEDOUT,
            )
        if fault == "reset":
            raise CurlConnectionError(
                "Failed to perform, curl: (56) Recv failure: Connection reset by peer. See "
                "https://curl.se/libcurl/c/libcurl-errors.html first for more details.",
                CurlECode.RECV_ERROR,
            )
        if fault == 429:
            return _response(url, 429, "Too Many Requests", "text/plain;charset=utf-8")
        if fault == 404 or symbol not in self.listings:
            return _json(url, 404, CHART_NOT_FOUND)
        if isinstance(fault, int) and fault >= 400:
            page = EDGE_ERROR_PAGE.format(status=fault, reason=HTTPStatus(fault).phrase)
            return _response(url, fault, page, "text/html;charset=utf-8")
        if query.get("interval", "1d") != "1d":
            error = {"code": "Bad Request", "description": f"this fixture serves interval=1d, not {query['interval']}"}
            return _json(url, 400, {"chart": {"result": None, "error": error}})
        return _json(url, 200, {"chart": {"result": [self._chart(symbol, query)], "error": None}})

    def _quote_summary(self, url: str, symbol: str) -> Response:
        if symbol not in self.listings:
            error = {"code": "Not Found", "description": f"Quote not found for symbol: {symbol}"}
            return _json(url, 404, {"quoteSummary": {"result": None, "error": error}})
        return _json(url, 200, {"quoteSummary": {"result": [{"quoteType": self._quote(symbol)}], "error": None}})

    def _quote(self, symbol: str) -> dict[str, Any]:
        return {
            "symbol": symbol,
            "quoteType": "EQUITY",
            "exchange": "NYQ",
            "shortName": symbol,
            "longName": symbol,
            "exchangeTimezoneName": "America/New_York",
            "exchangeTimezoneShortName": self._tz_name()[0],
        }

    # --- chart answers ----------------------------------------------------------------------

    def _tz_name(self) -> tuple[str, int]:
        offset = int(dt.datetime.combine(self.today, dt.time(12), NEW_YORK).utcoffset().total_seconds())
        return ("EDT" if offset == -4 * 3600 else "EST"), offset

    def _bars(self, listing: Listing) -> pd.DataFrame:
        """The listing as Yahoo shows it on `today`: split-adjusted OHLCV and adjclose."""
        prices = listing.prices[listing.prices["date"] <= self.today].set_index("date")
        prices = prices[prices.index.isin(self._sessions(prices.index))]
        factor = np.array([self._later_splits(listing, day) for day in prices.index], dtype=float)
        bars = prices[PRICE_COLUMNS].astype(float).div(factor, axis=0)
        bars["volume"] = np.round(prices["volume"].to_numpy(dtype=float) * factor).astype(np.int64)
        adjust = np.ones(len(bars))
        closes = bars["close"].to_numpy()
        for day, amount in listing.dividends.items():
            before = np.asarray(bars.index < day)
            if day <= self.today and before.any():  # multiplicative: 1 - dividend / the close before
                adjust[before] *= 1 - amount / self._later_splits(listing, day) / closes[before][-1]
        bars["adjclose"] = closes * adjust
        bars["ts"] = [_ts(day) for day in bars.index]
        return bars

    def _later_splits(self, listing: Listing, day: dt.date) -> float:
        """What Yahoo divides a price of `day` by: the ratios of the later splits it knows of."""
        splits = listing.splits.items()
        return math.prod(num / den for split_day, (num, den) in splits if day < split_day <= self.today)

    @staticmethod
    def _sessions(dates: pd.Index) -> list[dt.date]:
        return trading_sessions(min(dates), max(dates)) if len(dates) else []

    def _window(self, query: dict[str, str], bars: pd.DataFrame) -> tuple[int, int]:
        if "period1" in query:
            return int(query["period1"]), int(query.get("period2") or _ts(self.today, 23, 59))
        rng, end = query.get("range", "1mo"), _ts(self.today, 23, 59)
        if rng.endswith("d") and rng[:-1].isdigit():  # the last N sessions
            tail = bars["ts"].to_numpy()[-int(rng[:-1]) :]
            return (int(tail[0]) if len(tail) else end), end
        if rng == "max":
            return 0, end
        if rng == "ytd":
            return _ts(dt.date(self.today.year, 1, 1), 0, 0), end
        count, unit = (int(rng[:-2]), "mo") if rng.endswith("mo") else (int(rng[:-1]), "y")
        offset = pd.DateOffset(months=count) if unit == "mo" else pd.DateOffset(years=count)
        return _ts((pd.Timestamp(self.today) - offset).date(), 0, 0), end

    def _chart(self, symbol: str, query: dict[str, str]) -> dict[str, Any]:
        listing = self.listings[symbol]
        bars = self._bars(listing)
        start, end = self._window(query, bars)
        window = bars[(bars["ts"] >= start) & (bars["ts"] < end)]
        result: dict[str, Any] = {"meta": self._meta(symbol, bars, window, query.get("range", ""))}
        if window.empty:  # Yahoo's answer for a window without a session
            result["indicators"] = {"quote": [{}], "adjclose": [{}]}
            return result
        result["timestamp"] = window["ts"].tolist()
        events: dict[str, dict[str, Any]] = {}

        def inside(day: dt.date) -> bool:
            return day <= self.today and start <= _ts(day) < end

        dividends = {day: amount for day, amount in listing.dividends.items() if inside(day)}
        if dividends:  # amounts split-adjusted, as Yahoo reports them
            events["dividends"] = {
                str(_ts(day)): {"amount": amount / self._later_splits(listing, day), "date": _ts(day)}
                for day, amount in sorted(dividends.items())
            }
        splits = {day: ratio for day, ratio in listing.splits.items() if inside(day)}
        if splits:
            events["splits"] = {
                str(_ts(day)): {"date": _ts(day), "numerator": num, "denominator": den, "splitRatio": f"{num}:{den}"}
                for day, (num, den) in sorted(splits.items())
            }
        if events:
            result["events"] = events
        result["indicators"] = {
            "quote": [{**{col: _f32(window[col]) for col in PRICE_COLUMNS}, "volume": window["volume"].tolist()}],
            "adjclose": [{"adjclose": _f32(window["adjclose"])}],
        }
        return result

    def _meta(self, symbol: str, bars: pd.DataFrame, window: pd.DataFrame, rng: str) -> dict[str, Any]:
        tz_name, offset = self._tz_name()
        last = bars.index[-1] if len(bars) else self.today

        def period(start: tuple[int, int], end: tuple[int, int]) -> dict[str, Any]:
            return {"timezone": tz_name, "start": _ts(last, *start), "end": _ts(last, *end), "gmtoffset": offset}

        meta: dict[str, Any] = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "NYQ",
            "fullExchangeName": "NYSE",
            "instrumentType": "EQUITY",
            "firstTradeDate": int(bars["ts"].iloc[0]) if len(bars) else None,
            "regularMarketTime": _ts(last, 16, 0),
            "hasPrePostMarketData": True,
            "gmtoffset": offset,
            "timezone": tz_name,
            "exchangeTimezoneName": "America/New_York",
            "longName": symbol,
            "shortName": symbol,
            "priceHint": 2,
            "currentTradingPeriod": {
                "pre": period((4, 0), (9, 30)),
                "regular": period((9, 30), (16, 0)),
                "post": period((16, 0), (20, 0)),
            },
            "dataGranularity": "1d",
            "range": rng,
            "validRanges": VALID_RANGES,
        }
        if len(bars):
            latest = bars.iloc[-1]
            meta.update(
                regularMarketPrice=_f32([latest["close"]])[0],
                regularMarketDayHigh=_f32([latest["high"]])[0],
                regularMarketDayLow=_f32([latest["low"]])[0],
                regularMarketVolume=int(latest["volume"]),
            )
        if len(window):
            previous = bars[bars["ts"] < window["ts"].iloc[0]]
            if len(previous):
                meta["chartPreviousClose"] = _f32([previous["close"].iloc[-1]])[0]
        return meta
