"""Yahoo Finance end-of-day prices: one `yf.download` call for all tickers, as in the seed,
retried for the tickers that hit a transient error.

yfinance (1.x) does not raise per-ticker failures: it logs `['MSFT']: <error>` on its
`yfinance` logger and returns all-NaN columns for the ticker. `YahooErrors` reads those
log records, so a rate limit or a timeout is retried (tenacity, for the failed tickers
only) with exponential backoff and jitter, within a bounded total wait, while "possibly
delisted" is reported at once.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from financial_etl.errors import SourceUnavailableError
from financial_etl.extract.resource import PriceBatch, to_raw_frame
from financial_etl.settings import TICKER_CHARS

log = logging.getLogger(__name__)

FIELDS = {"Open": "open_price", "High": "high_price", "Low": "low_price", "Close": "close_price", "Volume": "volume"}

# Failures worth another try: rate limits, timeouts, dropped connections, 5xx answers.
TRANSIENT = re.compile(
    r"RateLimit|Too Many Requests|\b429\b|timed? ?out|Timeout|ConnectionError|Connection (?:reset|refused|aborted)"
    r"|RemoteDisconnected|Temporary failure|Could not resolve|HTTP Error 5\d\d|\b5\d\d (?:Server Error|Bad Gateway"
    r"|Service Unavailable|Gateway Time)|curl: \((?:6|7|28|35|52|55|56)\)",
    re.IGNORECASE,
)


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


def is_transient(error: BaseException | str) -> bool:
    if isinstance(error, BaseException):
        names = " ".join(cls.__name__ for cls in type(error).__mro__)
        if isinstance(error, (TimeoutError, ConnectionError)) or TRANSIENT.search(names):
            return True
        error = f"{type(error).__name__}: {error}"
    return bool(TRANSIENT.search(error))


class YahooErrors(logging.Handler):
    """Collects the per-ticker errors yfinance logs instead of raising."""

    SUMMARY = re.compile(r"^\[([^\]]*)\]: (.*)$", re.DOTALL)  # "['MSFT', 'X']: <error>"
    SINGLE = re.compile(rf"^\$({TICKER_CHARS}): (.*)$", re.DOTALL)  # "$MSFT: <error>"

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.by_ticker: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage().strip()
        if match := self.SUMMARY.match(message):
            for ticker in re.findall(r"'([^']+)'", match.group(1)):
                self.by_ticker[ticker] = match.group(2).strip()
        elif match := self.SINGLE.match(message):
            self.by_ticker.setdefault(match.group(1), match.group(2).strip())


@contextmanager
def yahoo_errors() -> Iterator[YahooErrors]:
    handler = YahooErrors()
    logger = logging.getLogger("yfinance")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def download(tickers: Sequence[str], start: dt.date, end: dt.date) -> pd.DataFrame:
    import yfinance as yf

    # yfinance's `end` is exclusive; the project's ranges include their end date.
    return yf.download(
        list(tickers),
        start=start.isoformat(),
        end=(end + dt.timedelta(days=1)).isoformat(),
        progress=False,
        auto_adjust=True,
        group_by="column",
        multi_level_index=True,
        threads=True,
    )


def wide_to_long(data: pd.DataFrame, tickers: Sequence[str]) -> pd.DataFrame:
    """(field, ticker) columns x date rows -> one row per (ticker, date)."""
    if data is None or data.empty:
        return pd.DataFrame(columns=["ticker", "date", *FIELDS.values()])
    if not isinstance(data.columns, pd.MultiIndex):
        # Old single-ticker answers have flat field columns.
        data = pd.concat({tickers[0]: data}, axis=1).swaplevel(0, 1, axis=1)
    level = 0 if set(FIELDS) & set(data.columns.get_level_values(0)) else 1
    fields = data.columns.get_level_values(level)
    missing = sorted(set(FIELDS) - set(fields))
    if missing:
        raise SourceUnavailableError(f"the Yahoo Finance answer lacks the columns {missing}")
    data = data.loc[:, fields.isin(list(FIELDS))]
    if level == 1:
        data = data.swaplevel(0, 1, axis=1)
    long = data.stack(level=1, future_stack=True)
    long.index = long.index.set_names(["date", "ticker"])
    long = long.rename(columns=FIELDS).reset_index()
    long["date"] = pd.to_datetime(long["date"]).dt.tz_localize(None)
    return long


def _with_prices(long: pd.DataFrame) -> set[str]:
    priced = long[list(FIELDS.values())].notna().any(axis=1)
    return set(long.loc[priced, "ticker"])


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
            ", ".join(failed), next(iter(failed.values())), state.attempt_number, policy.attempts - 1,
            state.upcoming_sleep,
        )

    return Retrying(
        retry=retry_if_exception_type(_StillFailing),
        wait=lambda state: policy.delay(state.attempt_number, rng),
        stop=stop_after_attempt(policy.attempts) | (lambda state: state.idle_for + state.upcoming_sleep > policy.budget_s),
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
    pending, parts, errors = list(tickers), [], {}

    def attempt() -> None:
        nonlocal pending
        failed: dict[str, str] = {}
        try:
            with yahoo_errors() as logged:
                long = wide_to_long(download(pending, start, end), pending)
        except SourceUnavailableError:
            raise
        except Exception as exc:  # the request itself failed, for every pending ticker
            if not is_transient(exc):
                raise SourceUnavailableError(
                    f"Yahoo Finance request for {', '.join(pending)} failed: {type(exc).__name__}: {exc}"
                ) from exc
            failed = {t: f"{type(exc).__name__}: {exc}" for t in pending}
        else:
            answered = _with_prices(long)
            parts.append(long[long["ticker"].isin(answered)])
            for ticker in pending:
                if ticker in answered:
                    continue
                reason = logged.by_ticker.get(ticker, "no data from Yahoo Finance")
                (failed if is_transient(reason) else errors)[ticker] = reason
        if failed:
            pending = list(failed)
            raise _StillFailing(failed)

    retrying = _retrying(policy, sleep, rng or random.Random())
    try:
        retrying(attempt)
    except _StillFailing as exc:
        tries, waited = retrying.statistics.get("attempt_number", 1), retrying.statistics.get("idle_for", 0.0)
        for ticker, reason in exc.failed.items():
            errors[ticker] = f"{reason} (still failing after {tries} attempts, {waited:.0f} s of waiting)"
        log.error("Yahoo Finance: giving up on %s after %d attempts", ", ".join(exc.failed), tries)

    frames = [p for p in parts if len(p)]
    frame = to_raw_frame(pd.concat(frames, ignore_index=True)) if frames else to_raw_frame(wide_to_long(None, []))
    return PriceBatch(frame=frame, source="yfinance", ticker_errors=errors)
