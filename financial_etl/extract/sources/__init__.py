"""The price sources: plain Python, no Dagster. `fetch_for(settings)` picks one."""

from __future__ import annotations

from functools import partial

from financial_etl.extract.resource import Fetch
from financial_etl.extract.sources.csv import make_csv_fetch
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.extract.sources.yfinance import RetryPolicy, fetch_yfinance
from financial_etl.settings import Settings


def fetch_for(settings: Settings, patient: bool = True) -> Fetch:
    """The configured source's fetch; not `patient`: no retries (a sensor's evaluation is
    bounded, and its next one is the retry)."""
    if settings.source == "csv":
        assert settings.csv_dir is not None
        return make_csv_fetch(settings.csv_dir)
    if settings.source == "yfinance":
        return fetch_yfinance if patient else partial(fetch_yfinance, policy=RetryPolicy(attempts=1))
    return fetch_synthetic
