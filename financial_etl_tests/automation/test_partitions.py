"""Year partitions: what a range run records in Dagster, and what it costs.

A run over several years writes one materialization per asset per year, each with its own
row count; the chart is on one event per run, the column schema and lineage on the
definitions. A run that fails marks its partitions failed.
"""

import datetime as dt

import pytest
from dagster import AssetKey, AssetPartitionStatus, DagsterEventType, DagsterInstance

from financial_etl.calendar import key_range_for_dates, year_partitions
from financial_etl.cli.main import execute_range
from financial_etl.definitions import build_definitions
from financial_etl.runs import END_TAG, START_TAG, range_tags, run_window
from financial_etl.settings import load_settings
from financial_etl_tests.helpers import day, query

RAW, MART, EXPORT = (
    AssetKey(["raw", "eod_prices_raw"]),
    AssetKey(["marts", "stock_metrics"]),
    AssetKey(["dbo", "Dim_Stock_Metrics"]),
)
TABLES = {RAW: ("raw.eod_prices_raw", "date"), MART: ("marts.stock_metrics", "trade_date")}


@pytest.fixture
def two_years(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2023-11-01")
    return load_settings()


@pytest.mark.slow
def test_a_range_run_writes_one_event_per_year_and_asset_each_with_its_own_row_count(workdir, two_years):
    instance = DagsterInstance.ephemeral()
    result = execute_range(two_years, day("2023-11-01"), day("2024-02-29"), instance=instance)
    assert result.success
    events = result.get_asset_materialization_events()
    by_asset: dict = {}
    for event in events:
        by_asset.setdefault(event.materialization.asset_key, {})[event.partition] = event.materialization.metadata
    assert {key: sorted(parts) for key, parts in by_asset.items()} == {
        key: ["2023", "2024"] for key in (RAW, MART, EXPORT)
    }
    planned = instance.all_logs(result.run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
    assert len(planned) == 6

    db, export = workdir / "data" / "financial_etl.duckdb", workdir / "data" / "export.duckdb"
    for key, (table, column) in {**TABLES, EXPORT: ('dbo."Dim_Stock_Metrics"', "trade_date")}.items():
        path = export if key == EXPORT else db
        for year in ("2023", "2024"):
            expected = query(path, f"SELECT count(*) FROM {table} WHERE year({column}) = {year}")[0][0]
            assert by_asset[key][year]["dagster/partition_row_count"].value == expected > 0, (key, year)
        total = query(path, f"SELECT count(*) FROM {table}")[0][0]
        assert by_asset[key]["2023"]["dagster/row_count"].value == total

    # The chart once, on the run's newest partition; schema and lineage only on the definition.
    assert "chart" in by_asset[MART]["2024"] and "chart" not in by_asset[MART]["2023"]
    for key, parts in by_asset.items():
        for metadata in parts.values():
            assert "dagster/column_schema" not in metadata and "dagster/column_lineage" not in metadata, key
    specs = {spec.key: spec for spec in build_definitions(two_years).resolve_all_asset_specs()}
    assert "dagster/column_lineage" in specs[MART].metadata
    for key in (RAW, MART, EXPORT):
        assert "dagster/column_schema" in specs[key].metadata, key


def _statuses(instance, settings, keys):
    partitions_def = year_partitions(settings.start_date)
    return {key: instance.get_status_by_partition(key, keys, partitions_def) for key in (RAW, MART, EXPORT)}


@pytest.mark.slow
def test_a_failed_range_run_marks_its_partitions_failed_and_a_repair_marks_them_materialized(workdir, two_years):
    instance = DagsterInstance.ephemeral()
    keys = ["2023", "2024"]
    assert execute_range(two_years, day("2023-11-01"), day("2024-02-29"), instance=instance).success
    materialized = {key: dict.fromkeys(keys, AssetPartitionStatus.MATERIALIZED) for key in (RAW, MART, EXPORT)}
    assert _statuses(instance, two_years, keys) == materialized

    failed = execute_range(
        two_years,
        day("2023-11-01"),
        day("2024-02-29"),
        instance=instance,
        tags={"financial_etl/tickers": "NOT A TICKER"},
    )
    assert not failed.success
    assert _statuses(instance, two_years, keys) == {
        key: dict.fromkeys(keys, AssetPartitionStatus.FAILED) for key in (RAW, MART, EXPORT)
    }
    assert execute_range(two_years, day("2023-11-01"), day("2024-02-29"), instance=instance).success
    assert _statuses(instance, two_years, keys) == materialized


def test_a_run_covers_its_years_clipped_to_the_tags_the_start_date_and_the_end(clean_env):
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2004-08-19")
    clean_env.setenv("FINANCIAL_ETL_END_DATE", "2013-03-01")
    settings = load_settings()
    partitions_def = year_partitions(settings.start_date)
    # A whole-history backfill of the partitions: the configured range.
    tags = {"dagster/asset_partition_range_start": "2004", "dagster/asset_partition_range_end": "2013"}
    assert run_window(tags, partitions_def, settings) == (day("2004-08-19"), day("2013-03-01"))
    # One year from the UI, and one day inside it as the schedule asks.
    assert run_window({"dagster/partition": "2008"}, partitions_def, settings) == (day("2008-01-01"), day("2008-12-31"))
    one_day = {"dagster/partition": "2008", START_TAG: "2008-06-10", END_TAG: "2008-06-10"}
    assert run_window(one_day, partitions_def, settings) == (day("2008-06-10"), day("2008-06-10"))
    # The CLI's tags: the years holding [start, end], narrowed to exactly those dates.
    tags = range_tags(day("2007-12-28"), day("2008-01-03"))
    assert (tags["dagster/asset_partition_range_start"], tags["dagster/asset_partition_range_end"]) == ("2007", "2008")
    assert run_window(tags, partitions_def, settings) == (day("2007-12-28"), day("2008-01-03"))
    assert run_window({}, partitions_def, settings) is None
    with pytest.raises(ValueError):
        key_range_for_dates(day("2008-01-03"), day("2007-12-28"))


def test_a_run_tag_that_is_not_a_date_is_a_config_error_naming_it(clean_env):
    from financial_etl.errors import ConfigError

    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2020-01-02")
    settings = load_settings()
    with pytest.raises(ConfigError, match="run tag financial_etl/start='June 10th' is not a date"):
        run_window(
            {"dagster/partition": "2024", START_TAG: "June 10th"}, year_partitions(settings.start_date), settings
        )


def test_a_partition_after_the_configured_end_fails_naming_the_range(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2023-01-02")
    clean_env.setenv("FINANCIAL_ETL_END_DATE", "2023-12-29")
    settings = load_settings()
    job = build_definitions(settings).resolve_job_def("daily_stock_metrics")
    result = job.execute_in_process(
        partition_key=str(dt.date.today().year), raise_on_error=False, instance=DagsterInstance.ephemeral()
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    text = error.message + (error.cause.message if error.cause else "")
    assert "hold no date from FINANCIAL_ETL_START_DATE=2023-01-02 to 2023-12-29" in text
