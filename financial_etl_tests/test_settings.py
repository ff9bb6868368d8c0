import datetime as dt

import pytest

from financial_etl.errors import ConfigError
from financial_etl.settings import SEED_TICKERS, load_settings


def test_defaults_work_on_a_fresh_clone():
    settings = load_settings({})
    assert settings.source == "synthetic"
    assert settings.tickers == SEED_TICKERS
    assert settings.start_date == dt.date(2020, 1, 1)
    assert settings.resolved_end(dt.date(2026, 1, 5)) == dt.date(2026, 1, 5)
    assert settings.duckdb_path.parent.name == "data"
    assert settings.export_duckdb_path != settings.duckdb_path


def test_tickers_are_parsed_upper_cased_and_trimmed():
    settings = load_settings({"FINANCIAL_ETL_TICKERS": " aapl, brk.b ,^GSPC"})
    assert settings.tickers == ("AAPL", "BRK.B", "^GSPC")


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FINANCIAL_ETL_SOURCE": "bloomberg"}, "FINANCIAL_ETL_SOURCE='bloomberg'"),
        (
            {"FINANCIAL_ETL_START_DATE": "2024-05-01", "FINANCIAL_ETL_END_DATE": "2024-04-01"},
            "2024-05-01 is after the end date 2024-04-01",
        ),
        ({"FINANCIAL_ETL_TICKERS": " , ,"}, "FINANCIAL_ETL_TICKERS"),
        ({"FINANCIAL_ETL_TICKERS": "AAPL'; DROP TABLE x;--"}, "AAPL'; DROP TABLE X;--"),
        ({"FINANCIAL_ETL_TICKERS": "../../etc/passwd"}, "../../ETC/PASSWD"),
        ({"FINANCIAL_ETL_TICKERS": "AAPL,AAPL"}, "twice"),
        ({"FINANCIAL_ETL_START_DATE": "01/02/2024"}, "FINANCIAL_ETL_START_DATE='01/02/2024'"),
        ({"FINANCIAL_ETL_END_DATE": "2024-13-01"}, "FINANCIAL_ETL_END_DATE='2024-13-01'"),
        ({"FINANCIAL_ETL_SOURCE": "csv"}, "FINANCIAL_ETL_CSV_DIR"),
        (
            {"FINANCIAL_ETL_SOURCE": "csv", "FINANCIAL_ETL_CSV_DIR": "/no/such/dir"},
            "FINANCIAL_ETL_CSV_DIR='/no/such/dir'",
        ),
        ({"FINANCIAL_ETL_EXPORT_TABLE": "x; drop"}, "FINANCIAL_ETL_EXPORT_TABLE"),
        ({"FINANCIAL_ETL_DUCKDB_PATH": ""}, "set but empty: FINANCIAL_ETL_DUCKDB_PATH;"),
        ({"FINANCIAL_ETL_SOURCE": " ", "FINANCIAL_ETL_TICKERS": ""}, "FINANCIAL_ETL_SOURCE, FINANCIAL_ETL_TICKERS;"),
        ({"FINANCIAL_ETL_START_DATE": "0001-01-01"}, "is before 1990-01-02, the first session of the NYSE calendar"),
        ({"FINANCIAL_ETL_END_DATE": "2041-01-02"}, "is after 2040-12-31, the last day of the NYSE calendar"),
        ({"FINANCIAL_ETL_DUCKDB_PATH": "/tmp/it's;x/w.duckdb"}, 'FINANCIAL_ETL_DUCKDB_PATH="/tmp/it\'s;x/w.duckdb"'),
        ({"FINANCIAL_ETL_EXPORT_DUCKDB_PATH": "/tmp/a=b/e.duckdb"}, "its path holds '='"),
    ],
)
def test_bad_settings_fail_naming_the_setting_and_value(env, named):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(env)
    assert named in str(excinfo.value)


def test_a_range_override_is_validated_too():
    settings = load_settings({"FINANCIAL_ETL_START_DATE": "2024-01-01"})
    with pytest.raises(ConfigError, match="after the end date"):
        settings.with_range(dt.date(2024, 6, 1), dt.date(2024, 5, 1))
    assert settings.with_range(None, dt.date(2024, 5, 1)).end_date == dt.date(2024, 5, 1)


def test_the_freshness_deadline_defaults_to_weekday_evenings_and_is_read_normalized():
    assert load_settings({}).freshness_deadline_cron == "0 21 * * 1-5"
    settings = load_settings({"FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON": " 30  22 * * 1-5 "})
    assert settings.freshness_deadline_cron == "30 22 * * 1-5"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("0 21 * *", "five cron fields"),
        ("*/15 21 * * 1-5", "minute and hour are plain numbers"),
        ("0 25 * * 1-5", "25:00 is not a time of day"),
        ("0 21 * * funday", "Invalid cron string"),
        ("0 21 31 2 *", "Invalid cron string"),
    ],
)
def test_a_bad_freshness_deadline_fails_naming_the_setting(value, why):
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON": value})
    message = str(excinfo.value)
    assert message.startswith(f"FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON={value!r} is not a deadline cron")
    assert why in message
