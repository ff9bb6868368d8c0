"""Freshness: the mart and the export are due by the deadline, made after the close."""

import datetime as dt

import pytest
from dagster import AssetKey

from financial_etl.automation.freshness import CLOSE, DEFAULT_DEADLINE_CRON, deadline_policy
from financial_etl.automation.schedule import SCHEDULE_CRON
from financial_etl.definitions import build_definitions
from financial_etl.settings import load_settings

RAW = AssetKey(["raw", "eod_prices_raw"])
MART = AssetKey(["marts", "stock_metrics"])
EXPORT = AssetKey(["dbo", "Dim_Stock_Metrics"])


def _time_of_day(cron: str) -> dt.time:
    minute, hour = cron.split()[:2]
    return dt.time(int(hour), int(minute))


@pytest.mark.parametrize(
    ("cron", "window"),
    [
        ("0 21 * * 1-5", dt.timedelta(hours=5)),  # the default: 16:00 to 21:00
        ("45 16 * * 1-5", dt.timedelta(minutes=45)),
        ("0 8 * * 2-6", dt.timedelta(hours=16)),  # the next morning: since the previous day's close
        ("0 16 * * 1-5", dt.timedelta(hours=24)),
    ],
)
def test_the_window_before_the_deadline_opens_at_the_close(cron, window):
    policy = deadline_policy(cron)
    assert (policy.deadline_cron, policy.lower_bound_delta, policy.timezone) == (cron, window, "America/New_York")


def test_the_default_deadline_falls_after_the_evening_run_on_the_same_days():
    policy = deadline_policy(DEFAULT_DEADLINE_CRON)
    run, deadline = _time_of_day(SCHEDULE_CRON), _time_of_day(DEFAULT_DEADLINE_CRON)
    assert CLOSE < run < deadline
    opens = dt.datetime.combine(dt.date.min, deadline) - policy.lower_bound_delta
    assert opens.time() == CLOSE
    assert DEFAULT_DEADLINE_CRON.split()[2:] == SCHEDULE_CRON.split()[2:]


def test_the_mart_and_the_export_are_due_and_the_setting_moves_the_deadline(workdir, clean_env):
    def policies():
        specs = {spec.key: spec for spec in build_definitions(load_settings()).resolve_all_asset_specs()}
        return {key: spec.freshness_policy for key, spec in specs.items()}

    assert policies() == {
        RAW: None,
        MART: deadline_policy(DEFAULT_DEADLINE_CRON),
        EXPORT: deadline_policy(DEFAULT_DEADLINE_CRON),
    }
    clean_env.setenv("FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON", "0 7 * * 2-6")
    moved = policies()
    assert moved[MART] == moved[EXPORT] == deadline_policy("0 7 * * 2-6")
    assert moved[MART].lower_bound_delta == dt.timedelta(hours=15)
    assert moved[RAW] is None
