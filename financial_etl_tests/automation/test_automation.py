"""Partitions, the daily schedule, and the sensors that launch backfills."""

import datetime as dt
import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    SkipReason,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
)

from financial_etl.calendar import year_partitions
from financial_etl.cli.main import execute_range
from financial_etl.definitions import DAILY_JOB, build_definitions
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.runs import (
    END_TAG,
    MODE_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    REASON_TAG,
    START_TAG,
    TICKERS_TAG,
    WAREHOUSE_TAG,
    range_tags,
)
from financial_etl.settings import REPO_ROOT, load_settings
from financial_etl_tests.helpers import assert_same_rows, day, query, write_yahoo_csv

NY = "America/New_York"
RAW_ROWS = (
    "SELECT ticker, date, open_price, high_price, low_price, close_price, volume FROM raw.eod_prices_raw ORDER BY ALL"
)
MART_ROWS = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"
EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


def _tables(root):
    db, export = root / "data" / "financial_etl.duckdb", root / "data" / "export.duckdb"
    return query(db, RAW_ROWS), query(db, MART_ROWS), query(export, EXPORT_ROWS)


def _written_by(root, ticker: str):
    """A ticker's raw and export rows with the dlt load that last wrote each one."""
    db, export = root / "data" / "financial_etl.duckdb", root / "data" / "export.duckdb"
    return (
        query(db, "SELECT * FROM raw.eod_prices_raw WHERE ticker = ? ORDER BY date", [ticker]),
        query(export, 'SELECT * FROM dbo."Dim_Stock_Metrics" WHERE ticker = ? ORDER BY trade_date', [ticker]),
    )


# --- schedule ---------------------------------------------------------------------------


@pytest.fixture
def instance(tmp_path):
    """A schedule reads its past runs from the instance: a persistent temporary one."""
    (tmp_path / "dagster_home").mkdir()
    temporary = DagsterInstance.local_temp(tempdir=str(tmp_path / "dagster_home"))
    yield temporary
    temporary.dispose()


def _tick(when: str, instance):
    defs = build_definitions(load_settings())
    schedule = defs.resolve_schedule_def("daily_after_close")
    # Closed after the tick, as the daemon does: the context opens its own instance from
    # the ref and would otherwise leave it as Dagster's current defs-state storage.
    with build_schedule_context(
        scheduled_execution_time=pd.Timestamp(when, tz=NY).to_pydatetime(),
        repository_def=defs.get_repository_def(),
        instance=instance,
    ) as context:
        return schedule, schedule.evaluate_tick(context)


def test_schedule_runs_after_the_close_on_weekdays_in_new_york(workdir, instance):
    schedule, _ = _tick("2024-06-10 18:30", instance)
    assert schedule.cron_schedule == "30 18 * * 1-5"
    assert schedule.execution_timezone == NY
    assert schedule.job_name == DAILY_JOB


def test_schedule_requests_the_days_session_in_its_year_partition(workdir, instance):
    _, tick = _tick("2024-06-10 18:30", instance)
    (request,) = tick.run_requests
    assert request.partition_key == "2024"
    assert (request.tags[START_TAG], request.tags[END_TAG]) == ("2024-06-10", "2024-06-10")
    assert request.run_key == "2024-06-10"


def _scheduled_run(instance, start: str, end: str, fail: bool = False):
    """A run as the schedule launches it (its tags), of the extract alone; `fail` breaks it."""
    defs = build_definitions(load_settings())
    tags = {"dagster/schedule_name": "daily_after_close", START_TAG: start, END_TAG: end}
    if fail:
        tags["financial_etl/tickers"] = "not a ticker!"
    result = defs.resolve_job_def(DAILY_JOB).execute_in_process(
        instance=instance,
        partition_key=start[:4],
        tags=tags,
        raise_on_error=False,
        asset_selection=[__import__("dagster").AssetKey(["raw", "eod_prices_raw"])],
    )
    assert result.success is not fail
    return result


@pytest.mark.slow
def test_the_evening_run_catches_up_from_the_last_successful_evening_run(workdir, clean_env, instance):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2023-12-01")
    _scheduled_run(instance, "2024-06-05", "2024-06-05")
    _scheduled_run(instance, "2024-06-06", "2024-06-06", fail=True)  # a failed night
    _, tick = _tick("2024-06-10 18:30", instance)
    (request,) = tick.run_requests
    assert (request.partition_key, request.tags[START_TAG], request.tags[END_TAG]) == (
        "2024",
        "2024-06-06",
        "2024-06-10",
    )
    assert "catching up from 2024-06-06" in request.tags["financial_etl/reason"]

    # Across New Year the request covers both years' partitions.
    _scheduled_run(instance, "2023-12-28", "2023-12-28")
    _, tick = _tick("2024-01-02 18:30", instance)
    (request,) = tick.run_requests
    assert request.partition_key is None
    assert (request.tags[RANGE_START_TAG], request.tags[RANGE_END_TAG]) == ("2023", "2024")
    assert (request.tags[START_TAG], request.tags[END_TAG]) == ("2023-12-29", "2024-01-02")


@pytest.mark.parametrize(
    ("when", "reason"),
    [("2024-12-25 18:30", "Christmas"), ("2024-07-04 18:30", "July 4th"), ("2024-06-08 18:30", "Saturday")],
)
def test_schedule_skips_weekends_and_exchange_holidays_naming_them(workdir, instance, when, reason):
    _, tick = _tick(when, instance)
    assert tick.run_requests == []
    assert reason in tick.skip_message and "NYSE is closed" in tick.skip_message


@pytest.mark.slow
def test_an_exchange_holiday_partition_completes_with_zero_rows(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-12-02")
    result = execute_range(load_settings(), day("2024-12-25"), day("2024-12-25"))
    assert result.success
    mats = {
        m.materialization.asset_key.to_user_string(): m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert mats["raw/eod_prices_raw"]["rows_in_range"].value == 0
    assert mats["dbo/Dim_Stock_Metrics"]["rows_exported"].value == 0


# --- backfills --------------------------------------------------------------------------


@pytest.mark.slow
def test_a_three_month_backfill_in_one_run_equals_its_last_two_weeks_run_day_by_day(tmp_path, clean_env):
    """The daily warehouse takes January to mid-March in one run, then each weekday of the last
    two weeks as the schedule runs it: every window of those days reads the look-back the
    earlier runs wrote."""
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    start, first_daily, end = day("2024-01-02"), day("2024-03-18"), day("2024-03-29")

    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "range" / "data" / "financial_etl.duckdb"))
    result = execute_range(load_settings(), start, end)
    assert result.success
    # One run, one extract (one download and merge) for the whole range, every partition marked.
    assert [e.step_key for e in result.all_events if e.is_step_success].count("extract_prices") == 1
    raw_partitions = {
        m.partition
        for m in result.get_asset_materialization_events()
        if m.materialization.asset_key.path == ["raw", "eod_prices_raw"]
    }
    assert raw_partitions == {"2024"}
    by_range = _tables(tmp_path / "range")

    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "daily" / "data" / "financial_etl.duckdb"))
    settings = load_settings()
    instance = DagsterInstance.ephemeral()
    assert execute_range(settings, start, first_daily - dt.timedelta(days=1), instance=instance).success
    defs = build_definitions(settings)
    job = defs.resolve_job_def(DAILY_JOB)
    days = [first_daily + dt.timedelta(days=n) for n in range((end - first_daily).days + 1)]
    days = [d for d in days if d.weekday() < 5]
    assert len(days) == 10  # weekdays, Good Friday included
    for one in days:  # one run per day as the schedule runs it, assets only (the checks are not what is compared)
        daily = job.execute_in_process(
            instance=instance,
            partition_key="2024",
            tags={START_TAG: one.isoformat(), END_TAG: one.isoformat()},
            asset_selection=list(defs.resolve_all_asset_keys()),
        )
        assert daily.success, one
    by_day = _tables(tmp_path / "daily")
    for name, a, b in zip(("raw", "mart", "export"), by_range, by_day, strict=True):
        assert_same_rows(a, b, name)
    assert len(by_range[1]) == 2 * 61  # 61 NYSE sessions in the range


@pytest.mark.slow
def test_rerunning_a_range_is_idempotent_and_touches_nothing_outside_it(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    settings = load_settings()
    assert execute_range(settings, day("2024-01-02"), day("2024-03-29")).success
    before = _tables(workdir)
    assert execute_range(settings, day("2024-02-05"), day("2024-02-09")).success
    assert _tables(workdir) == before


# --- sensors ----------------------------------------------------------------------------


def _evaluate(sensor_name: str, cursor=None, instance=None):
    defs = build_definitions(load_settings())
    sensor = defs.resolve_sensor_def(sensor_name)
    context = build_sensor_context(cursor=cursor, instance=instance or DagsterInstance.ephemeral(), definitions=defs)
    return sensor.evaluate_tick(context)


ASSETS = {"raw/eod_prices_raw", "marts/stock_metrics", "dbo/Dim_Stock_Metrics"}


def _execute_request(request):
    """What the daemon does with a sensor's request: one run of its assets over its year
    partitions, narrowed to its dates by its tags. Returns the years every asset
    materialized and the dates the extract loaded, as the run recorded them."""
    settings = load_settings()
    defs = build_definitions(settings)
    assert {key.to_user_string() for key in request.asset_selection} == ASSETS
    assert request.partition_key is None and request.partition_key_range is not None
    years = year_partitions(settings.start_date).get_partition_keys_in_range(request.partition_key_range)
    result = defs.resolve_job_def(DAILY_JOB).execute_in_process(
        tags=request.tags,
        asset_selection=request.asset_selection,
        raise_on_error=False,
    )
    assert result.success
    assert result.dagster_run.tags[RANGE_START_TAG] == years[0] and result.dagster_run.tags[RANGE_END_TAG] == years[-1]
    materialized: dict[str, set[str]] = {}
    for event in result.get_asset_materialization_events():
        materialized.setdefault(event.materialization.asset_key.to_user_string(), set()).add(event.partition)
    assert materialized == {asset: set(years) for asset in ASSETS}
    raw = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key.to_user_string() == "raw/eod_prices_raw"
    )
    loaded = (raw["range_start"].value, raw["range_end"].value)
    assert loaded == (request.tags[START_TAG], request.tags[END_TAG])
    return years, loaded


@pytest.fixture
def universe_file(workdir, clean_env):
    path = workdir / "tickers.txt"
    path.write_text("# universe\nAAA\nBBB\n")
    clean_env.setenv("FINANCIAL_ETL_TICKERS_FILE", str(path))
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    clean_env.setenv("FINANCIAL_ETL_END_DATE", "2024-06-28")
    return path


def test_adding_a_ticker_backfills_its_history_alone(workdir, universe_file):
    first = _evaluate("new_ticker_backfill")
    assert first.run_requests == [] and "recorded the ticker universe" in first.skip_message
    assert execute_range(load_settings(), day("2024-01-02"), day("2024-06-28")).success
    raw_before, mart_before, export_before = _tables(workdir)
    written_before = {t: _written_by(workdir, t) for t in ("AAA", "BBB")}

    universe_file.write_text("# universe\nAAA\nBBB\nCCC\n")
    tick = _evaluate("new_ticker_backfill", cursor=first.cursor)
    assert len(tick.run_requests) == 1
    request = tick.run_requests[0]
    assert request.tags[TICKERS_TAG] == "CCC" and request.tags[MODE_TAG] == "restate"
    assert "new ticker CCC" in request.tags[REASON_TAG]
    keys, dates = _execute_request(request)
    assert keys == ["2024"] and dates == ("2024-01-02", "2024-06-28")

    raw_after, mart_after, export_after = _tables(workdir)
    expected_days = fetch_synthetic(["CCC"], day("2024-01-02"), day("2024-06-28")).frame.date.tolist()
    assert [r[1] for r in mart_after if r[0] == "CCC"] == expected_days
    assert [r for r in mart_after if r[0] != "CCC"] == mart_before
    assert [r for r in raw_after if r[0] != "CCC"] == raw_before
    assert [r for r in export_after if r[0] != "CCC"] == export_before
    assert [r for r in export_after if r[0] == "CCC"] == [r for r in mart_after if r[0] == "CCC"]
    # Not rewritten either: the same loads still hold the other tickers' raw and export rows.
    assert {t: _written_by(workdir, t) for t in ("AAA", "BBB")} == written_before

    again = _evaluate("new_ticker_backfill", cursor=tick.cursor)
    assert again.run_requests == []


def test_a_removed_ticker_is_reported_not_deleted(workdir, universe_file):
    first = _evaluate("new_ticker_backfill")
    universe_file.write_text("AAA\n")
    tick = _evaluate("new_ticker_backfill", cursor=first.cursor)
    assert tick.run_requests == []
    assert "removed tickers reported, not deleted: BBB" in tick.skip_message


@pytest.fixture
def csv_universe(workdir, clean_env):
    csv_dir = workdir / "csv"
    frames = {t: fetch_synthetic([t], day("2024-01-02"), day("2024-06-28")).frame for t in ("AAA", "BBB")}
    for ticker, frame in frames.items():
        write_yahoo_csv(csv_dir / f"{ticker}.csv", frame)
    for key, value in {
        "SOURCE": "csv",
        "CSV_DIR": str(csv_dir),
        "TICKERS": "AAA,BBB",
        "START_DATE": "2024-01-02",
        "END_DATE": "2024-06-28",
    }.items():
        clean_env.setenv(f"FINANCIAL_ETL_{key}", value)
    return csv_dir, frames


@pytest.mark.slow
def test_a_four_for_one_split_restates_that_ticker_only(workdir, csv_universe, tmp_path, clean_env):
    csv_dir, frames = csv_universe
    assert execute_range(load_settings(), day("2024-01-02"), day("2024-06-28")).success
    quiet = _evaluate("restated_history_backfill")
    assert quiet.run_requests == [] and "matches the source" in quiet.skip_message
    _, mart_before, _ = _tables(workdir)
    written_before = _written_by(workdir, "AAA")

    split = frames["BBB"].copy()
    before_split = split.date < day("2024-06-28")
    for column in ("open_price", "high_price", "low_price", "close_price"):
        split.loc[before_split, column] = split.loc[before_split, column] / 4
    split.loc[before_split, "volume"] = split.loc[before_split, "volume"] * 4
    write_yahoo_csv(csv_dir / "BBB.csv", split)

    tick = _evaluate("restated_history_backfill", cursor=quiet.cursor)
    assert len(tick.run_requests) == 1
    request = tick.run_requests[0]
    assert request.tags[TICKERS_TAG] == "BBB" and request.tags[MODE_TAG] == "restate"
    assert "restated history for BBB" in request.tags[REASON_TAG] and "close_price" in request.tags[REASON_TAG]
    assert _evaluate("restated_history_backfill", cursor=tick.cursor).run_requests == []  # requested once
    _execute_request(request)

    # The same CSVs loaded from scratch: the restated warehouse must equal it.
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "fresh" / "data" / "financial_etl.duckdb"))
    assert execute_range(load_settings(), day("2024-01-02"), day("2024-06-28")).success
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(workdir / "data" / "financial_etl.duckdb"))
    restated, fresh = _tables(workdir), _tables(tmp_path / "fresh")
    for name, a, b in zip(("raw", "mart", "export"), restated, fresh, strict=True):
        assert_same_rows(a, b, name)
    assert [r for r in restated[1] if r[0] == "AAA"] == [r for r in mart_before if r[0] == "AAA"]
    # AAA's raw and export rows were not rewritten: the loads that wrote them still hold them.
    assert _written_by(workdir, "AAA") == written_before
    assert all(len(rows) > 100 for rows in written_before)
    restated_load = {r[-1] for r in _written_by(workdir, "BBB")[1]}
    assert len(restated_load) == 1 and restated_load.isdisjoint({r[-1] for r in written_before[1]})
    assert _evaluate("restated_history_backfill", cursor=tick.cursor).run_requests == []


def test_a_restatement_must_cover_the_whole_history(workdir, csv_universe):
    settings = load_settings()
    job = build_definitions(settings).resolve_job_def(DAILY_JOB)
    result = job.execute_in_process(
        tags={TICKERS_TAG: "AAA", MODE_TAG: "restate", **range_tags(day("2024-03-01"), day("2024-03-29"))},
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "must start at FINANCIAL_ETL_START_DATE=2024-01-02" in str(
        failure.step_failure_data.error.cause or failure.step_failure_data.error
    )


@pytest.mark.slow
def test_a_failed_run_is_recorded_with_asset_partition_and_error(workdir, csv_universe):
    csv_dir, _ = csv_universe
    (csv_dir / "BBB.csv").write_text("Date;Open;High;Low;Close;Volume\n2024-01-02;1;2;0.5;1;10\n")
    instance = DagsterInstance.ephemeral()
    result = execute_range(load_settings(), day("2024-01-02"), day("2024-01-31"), instance=instance)
    assert not result.success
    defs = build_definitions(load_settings())
    sensor = defs.resolve_sensor_def("run_failure_alerts")
    failure_event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure_event,
    ).for_run_failure()
    sensor(context)
    record = json.loads((workdir / "data" / "alerts.log").read_text().splitlines()[-1])
    assert record["run_id"] == result.run_id
    assert record["partitions"] == "2024-01-02 to 2024-01-31"
    assert record["failed_steps"][0]["step"] == "extract_prices"
    assert "BBB.csv:1" in record["failed_steps"][0]["error"]


def test_a_run_failed_on_a_bad_date_tag_is_recorded_with_the_tag_it_held(workdir, csv_universe):
    instance = DagsterInstance.ephemeral()
    defs = build_definitions(load_settings())
    result = defs.resolve_job_def(DAILY_JOB).execute_in_process(
        instance=instance,
        partition_key="2024",
        tags={START_TAG: "June 10th", END_TAG: "2024-06-10"},
        raise_on_error=False,
    )
    assert not result.success
    failure_event = next(e for e in result.all_events if e.event_type == DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alerts",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=failure_event,
    ).for_run_failure()
    defs.resolve_sensor_def("run_failure_alerts")(context)
    record = json.loads((workdir / "data" / "alerts.log").read_text().splitlines()[-1])
    assert record["partitions"] == "June 10th to 2024-06-10 (run tags, not dates)"
    assert "financial_etl/start='June 10th' is not a date" in record["failed_steps"][0]["error"]


@pytest.mark.slow
def test_a_backfill_and_the_daily_run_started_together_both_succeed(workdir, clean_env, tmp_path):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")

    def run(start: str, end: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "financial_etl.cli.main", "run", "--start", start, "--end", end],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )

    backfill, daily = run("2024-01-02", "2024-03-29"), run("2024-04-01", "2024-04-01")
    out_backfill, _ = backfill.communicate(timeout=600)
    out_daily, _ = daily.communicate(timeout=600)
    assert backfill.returncode == 0, out_backfill[-3000:]
    assert daily.returncode == 0, out_daily[-3000:]
    assert "waiting for the warehouse" in out_backfill + out_daily  # one queued behind the other
    together = _tables(workdir)

    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "serial" / "data" / "financial_etl.duckdb"))
    settings = load_settings()
    assert execute_range(settings, day("2024-01-02"), day("2024-03-29")).success
    assert execute_range(settings, day("2024-04-01"), day("2024-04-01")).success
    for name, a, b in zip(("raw", "mart", "export"), together, _tables(tmp_path / "serial"), strict=True):
        assert_same_rows(a, b, name)


def test_the_instance_queues_single_writer_runs_one_at_a_time():
    """DuckDB and Spark runs one at a time (by the tag every run of the job and every
    sensor request carries); PostgreSQL runs side by side."""
    import yaml

    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    limits = {(limit["key"], limit["value"]): limit["limit"] for limit in config["run_queue"]["tag_concurrency_limits"]}
    assert limits == {(WAREHOUSE_TAG, "duckdb"): 1, (WAREHOUSE_TAG, "spark"): 1}
    assert config["run_queue"]["max_concurrent_runs"] > 1
    assert isinstance(SkipReason("x"), SkipReason)
