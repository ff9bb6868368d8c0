"""Run tags that narrow a run: which tickers, and whether it restates their history.

Sensors set them on the backfills they launch; the UI shows them as the run's reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

from financial_etl.errors import ConfigError
from financial_etl.settings import Settings, parse_tickers

TICKERS_TAG = "financial_etl/tickers"  # comma-separated: load only these tickers
MODE_TAG = "financial_etl/mode"  # "restate": replace these tickers' whole history
REASON_TAG = "financial_etl/reason"  # why the run was requested, for the operator
RESTATE = "restate"


def run_tickers(tags: Mapping[str, str], settings: Settings) -> tuple[str, ...]:
    if TICKERS_TAG in tags:
        return parse_tickers(f"run tag {TICKERS_TAG}", tags[TICKERS_TAG])
    return settings.current_tickers()


def restated_tickers(tags: Mapping[str, str], settings: Settings, start: dt.date) -> tuple[str, ...] | None:
    """The tickers whose history this run replaces, or None for an ordinary merge run."""
    if tags.get(MODE_TAG) != RESTATE:
        return None
    if TICKERS_TAG not in tags:
        raise ConfigError(f"run tag {MODE_TAG}={RESTATE} needs {TICKERS_TAG} naming the tickers to restate")
    if start > settings.start_date:
        raise ConfigError(
            f"a restatement replaces a ticker's whole history, so its range must start at "
            f"FINANCIAL_ETL_START_DATE={settings.start_date}, not {start}"
        )
    return run_tickers(tags, settings)
