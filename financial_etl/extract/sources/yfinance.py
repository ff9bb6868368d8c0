"""Yahoo Finance end-of-day prices and corporate actions, through yfinance's own code.

One `Ticker.history` call per ticker (what `yf.download` does in its threads), with
yfinance's `config.debug.hide_exceptions` off, so a failure arrives as yfinance's own
exception instead of a log line and an empty frame. Errors are then read by cause:
- transient (a timeout, a dropped connection, a 5xx, a 429): retried with backoff for the
  failed tickers only, within a bounded total wait; still failing, the run exits 4;
- unknown symbol (Yahoo's "No data found, symbol may be delisted", no timezone): a
  configuration error, exit 2;
- no rows for a known symbol: a data-quality error, exit 3 (see resource.require_answers).

A 5xx answer would reach yfinance's JSON parsing and look like "no data": `YahooSession`,
the session handed to yfinance, turns it into `YahooServerError` first.

Prices are Yahoo's split- and dividend-adjusted OHLC (yfinance's auto-adjust: every price
times Adj Close / Close); the day's dividend and split come from the same chart answer
(docs/data-contract.md, "Corporate actions").
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from threading import Lock

import numpy as np
import pandas as pd
from curl_cffi import requests as curl_requests
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from financial_etl.errors import SourceUnavailableError
from financial_etl.extract.resource import ACTION_COLUMNS, PriceBatch, TickerCause, to_raw_frame

log = logging.getLogger(__name__)
# yfinance's own log lines (its cookie fallbacks, "possibly delisted") would reach the
# console through Python's last-resort handler; its errors arrive as exceptions instead.
logging.getLogger("yfinance").addHandler(logging.NullHandler())

TIMEOUT_S = 20.0  # one chart request
THREADS = 8  # parallel chart requests, as yf.download's threads
# Sessions fetched before the range: the first day's dividend factor needs the close before it.
LOOKBACK_DAYS = 10


class YahooServerError(Exception):
    """Yahoo answered a 5xx: a transient failure."""


class YahooSession(curl_requests.Session):
    """The HTTP session yfinance uses, raising on a 5xx answer (yfinance would parse the
    error page as "no price data found")."""

    def request(self, method, url, *args, **kwargs):
        response = super().request(method, url, *args, **kwargs)
        if response.status_code >= 500:
            raise YahooServerError(f"HTTP {response.status_code} from {url.split('?')[0]}")
        return response


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter, bounded both in attempts and in total waiting."""

    attempts: int = 5
    base_delay_s: float = 2.0
    max_delay_s: float = 30.0
    budget_s: float = 120.0

    def delay(self, retry: int, rng: random.Random) -> float:
        """Wait before retry number `retry` (1-based): half fixed, half random ("equal jitter"),
        so many clients hitting one rate limit spread out without retrying at once."""
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1))
        return ceiling / 2 + rng.uniform(0, ceiling / 2)


DEFAULT_POLICY = RetryPolicy()


def cause_of(error: BaseException) -> TickerCause:
    """What a yfinance or HTTP exception means for the run."""
    import peewee
    from yfinance.exceptions import YFPricesMissingError, YFRateLimitError, YFTickerMissingError, YFTzMissingError

    transient = (
        YFRateLimitError,
        YahooServerError,
        curl_requests.exceptions.Timeout,
        curl_requests.exceptions.ConnectionError,
        curl_requests.exceptions.ChunkedEncodingError,
        TimeoutError,
        ConnectionError,
        sqlite3.OperationalError,
        peewee.OperationalError,  # yfinance's cache file busy
    )
    if isinstance(error, transient):
        return "transient"
    if _status(error) == 404:
        return "unknown"  # yfinance's look-up of a symbol whose timezone probe found nothing
    if isinstance(error, YFTzMissingError) or (
        isinstance(error, YFPricesMissingError) and error.yahoo_reason is not None
    ):
        return "unknown"  # no timezone, or Yahoo's own "No data found, symbol may be delisted"
    if isinstance(error, YFTickerMissingError):
        return "no_data"
    return "error"


def _status(error: BaseException) -> int | None:
    response = getattr(error, "response", None) if isinstance(error, curl_requests.exceptions.HTTPError) else None
    return getattr(response, "status_code", None)


def describe(error: BaseException) -> str:
    from yfinance.exceptions import YFTickerMissingError

    if isinstance(error, YFTickerMissingError):
        return error.rationale  # without yfinance's "$TICKER: " prefix
    if _status(error) is not None:
        try:  # Yahoo's JSON error: {"<api>": {"result": null, "error": {"description": ...}}}
            body = error.response.json()  # type: ignore[attr-defined]
            return next(v["error"]["description"] for v in body.values() if (v or {}).get("error"))
        except Exception:
            return str(error)
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


_raising = Lock()


@contextmanager
def yfinance_raises() -> Iterator[None]:
    """yfinance raises its errors instead of logging them (its documented switch)."""
    import yfinance as yf

    with _raising:
        before = yf.config.debug.hide_exceptions
        yf.config.debug.hide_exceptions = False
        try:
            yield
        finally:
            yf.config.debug.hide_exceptions = before


def history(ticker: str, start: dt.date, end: dt.date, session: YahooSession) -> pd.DataFrame:
    """Yahoo's daily bars and actions of one ticker, `end` included, before adjustment."""
    import yfinance as yf

    return yf.Ticker(ticker, session=session).history(
        start=(start - dt.timedelta(days=LOOKBACK_DAYS)).isoformat(),
        end=(end + dt.timedelta(days=1)).isoformat(),  # yfinance's end is exclusive
        interval="1d",
        auto_adjust=False,
        actions=True,
        timeout=TIMEOUT_S,
    )


def adjusted(ticker: str, bars: pd.DataFrame, start: dt.date) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(adjusted prices, actions) from `[start, …]` of one ticker's unadjusted bars.

    Prices: yfinance's auto-adjust (every price times Adj Close / Close). Actions: each
    day's dividend and split ratio, and `price_factor`, what Yahoo multiplied every
    earlier price by for them (Close is already split-adjusted, so a dividend shows as the
    change of Adj Close / Close from the session before)."""
    if bars is None or bars.empty:
        return _empty_prices(), pd.DataFrame(columns=list(ACTION_COLUMNS))
    dates = pd.DatetimeIndex(bars.index).tz_localize(None).date
    ratio = (bars["Adj Close"] / bars["Close"]).to_numpy()
    prices = pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "open_price": bars["Open"].to_numpy() * ratio,
            "high_price": bars["High"].to_numpy() * ratio,
            "low_price": bars["Low"].to_numpy() * ratio,
            "close_price": bars["Adj Close"].to_numpy(),
            "volume": bars["Volume"].to_numpy(),
        }
    )
    dividends = bars.get("Dividends", pd.Series(0.0, index=bars.index)).fillna(0).to_numpy(dtype=float)
    splits = bars.get("Stock Splits", pd.Series(0.0, index=bars.index)).fillna(0).to_numpy(dtype=float)
    before = np.concatenate([[np.nan], ratio[:-1]])
    factor = np.where(dividends != 0, before / ratio, 1.0) / np.where(splits != 0, splits, 1.0)
    actions = pd.DataFrame(
        {
            "ticker": ticker,
            "date": dates,
            "dividend": dividends,
            "split_ratio": np.where(splits != 0, splits, 1.0),
            "price_factor": factor,
        }
    )[(dividends != 0) | (splits != 0)]
    keep = dates >= start
    return prices[keep], actions[actions["date"] >= start].reset_index(drop=True)


def _empty_prices() -> pd.DataFrame:
    return pd.DataFrame(columns=["ticker", "date", "open_price", "high_price", "low_price", "close_price", "volume"])


class _StillFailing(Exception):
    """Some tickers hit a transient error in this attempt: tenacity tries them again."""

    def __init__(self, failed: dict[str, str]) -> None:
        super().__init__(", ".join(failed))
        self.failed = failed


def _retrying(policy: RetryPolicy, sleep: Callable[[float], None], rng: random.Random) -> Retrying:
    """tenacity's loop with the policy's equal-jitter waits, stopping at the attempt limit
    or before the total wait would pass the budget (counted in waits, not wall time)."""

    def log_retry(state: RetryCallState) -> None:
        failed = state.outcome.exception().failed  # type: ignore[union-attr]
        log.warning(
            "Yahoo Finance: transient error for %s (%s); retry %d of %d in %.1f s",
            ", ".join(failed),
            next(iter(failed.values())),
            state.attempt_number,
            policy.attempts - 1,
            state.upcoming_sleep,
        )

    return Retrying(
        retry=retry_if_exception_type(_StillFailing),
        wait=lambda state: policy.delay(state.attempt_number, rng),
        stop=stop_after_attempt(policy.attempts)
        | (lambda state: state.idle_for + state.upcoming_sleep > policy.budget_s),
        sleep=sleep,
        before_sleep=log_retry,
        reraise=True,
    )


def fetch_yfinance(
    tickers: Sequence[str],
    start: dt.date,
    end: dt.date,
    *,
    policy: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
) -> PriceBatch:
    policy = policy or DEFAULT_POLICY
    session = YahooSession(impersonate="chrome")
    pending, prices, actions = list(tickers), [], []
    errors: dict[str, str] = {}
    causes: dict[str, TickerCause] = {}

    def one(ticker: str) -> pd.DataFrame | BaseException:
        try:
            return history(ticker, start, end, session)
        except Exception as exc:  # read by cause below
            return exc

    def attempt() -> None:
        nonlocal pending
        failed: dict[str, str] = {}
        if not pending:
            return
        with yfinance_raises():
            # The first request alone: yfinance creates its on-disk caches on first use, and
            # threads racing to create them lock each other out ("database is locked").
            answers = {pending[0]: one(pending[0])}
            with ThreadPoolExecutor(max_workers=min(THREADS, len(pending))) as pool:
                answers.update(zip(pending[1:], pool.map(one, pending[1:]), strict=True))
        for ticker, answer in answers.items():
            if isinstance(answer, BaseException):
                cause = cause_of(answer)
                if cause == "transient":
                    failed[ticker] = describe(answer)
                    continue
                if cause == "error":
                    raise SourceUnavailableError(
                        f"Yahoo Finance request for {ticker} failed: {describe(answer)}"
                    ) from answer
                errors[ticker], causes[ticker] = describe(answer), cause
                continue
            rows, events = adjusted(ticker, answer, start)
            prices.append(rows)
            actions.append(events)
        if failed:
            pending = list(failed)
            raise _StillFailing(failed)

    retrying = _retrying(policy, sleep, rng or random.Random())
    try:
        with session:
            retrying(attempt)
    except _StillFailing as exc:
        tries, waited = retrying.statistics.get("attempt_number", 1), retrying.statistics.get("idle_for", 0.0)
        for ticker, reason in exc.failed.items():
            errors[ticker] = f"transient: {reason} (still failing after {tries} attempts, {waited:.0f} s of waiting)"
            causes[ticker] = "transient"
        log.error("Yahoo Finance: giving up on %s after %d attempts", ", ".join(exc.failed), tries)

    frames = [p for p in prices if len(p)]
    frame = to_raw_frame(pd.concat(frames, ignore_index=True) if frames else _empty_prices())
    found = [a for a in actions if len(a)]
    events = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=list(ACTION_COLUMNS))
    return PriceBatch(frame=frame, source="yfinance", ticker_errors=errors, ticker_causes=causes, actions=events)
