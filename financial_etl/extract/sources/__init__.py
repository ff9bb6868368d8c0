"""The price sources: plain Python, no Dagster. `fetch_for(settings)` picks one."""

from __future__ import annotations

from financial_etl.extract.resource import Fetch
from financial_etl.extract.sources.csv import make_csv_fetch
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.extract.sources.yfinance import fetch_yfinance
from financial_etl.settings import Settings


def fetch_for(settings: Settings) -> Fetch:
    if settings.source == "csv":
        assert settings.csv_dir is not None
        return make_csv_fetch(settings.csv_dir)
    if settings.source == "yfinance":
        return fetch_yfinance
    return fetch_synthetic
