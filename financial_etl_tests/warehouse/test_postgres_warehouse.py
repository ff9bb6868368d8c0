"""FINANCIAL_ETL_WAREHOUSE=postgresql://…: the whole graph on a real PostgreSQL server.

`financial-etl run` loads raw with dlt (Parquet through ADBC), runs SQLMesh and its audits there and
exports from there; the schedule and the sensors read it too. Two runs started together
on different ranges both succeed, and leave what running them one after the other leaves.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import pandas as pd
import pytest
from dagster import DagsterInstance, build_schedule_context, build_sensor_context

from financial_etl.definitions import build_definitions
from financial_etl.extract.assets import EXTRACT_PIPELINE
from financial_etl.runs import WAREHOUSE_TAG
from financial_etl.settings import REPO_ROOT, load_settings
from financial_etl.warehouse import MART, RAW, RAW_TABLE
from financial_etl_tests.helpers import assert_same_rows, loaded_file_formats, query
from financial_etl_tests.servers import start_postgres

pytestmark = pytest.mark.slow

EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
CLI = [sys.executable, "-m", "financial_etl.cli.main", "run"]


@pytest.fixture(scope="module")
def server():
    server = start_postgres()
    yield server
    server.stop()


def database(server, name: str):
    """A fresh database on the server, and its URL."""
    fresh = dataclasses.replace(server, database=name)
    fresh.reset_database()
    return fresh, fresh.url()


def tables(server, url: str, root):
    """raw, mart and the export, in a comparable form."""
    settings = load_settings({**os.environ, "FINANCIAL_ETL_WAREHOUSE": url})
    with settings.warehouse.connect() as con:
        raw = con.execute(
            f"SELECT ticker, date, open_price, high_price, low_price, close_price, volume "
            f"FROM {RAW} ORDER BY ticker, date"
        ).df()
        mart = con.execute(f"SELECT * FROM {MART} ORDER BY ticker, trade_date").df()
    export = query(root / "data" / "export.duckdb", EXPORT_ROWS)
    return [list(frame.itertuples(index=False, name=None)) for frame in (raw, mart)] + [export]


def run_cli(args, env):
    return subprocess.Popen(
        [*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO_ROOT
    )


def test_financial_etl_run_on_postgresql_runs_the_graph_the_schedule_and_the_sensors(server, workdir, clean_env):
    _, url = database(server, "whole_graph")
    clean_env.setenv("FINANCIAL_ETL_WAREHOUSE", url)
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    clean_env.setenv("FINANCIAL_ETL_END_DATE", "2024-06-28")
    (workdir / "dagster").mkdir()
    run = run_cli([], {**os.environ, "DAGSTER_HOME": str(workdir / "dagster")})
    out, _ = run.communicate(timeout=600)
    assert run.returncode == 0, out[-3000:]
    # The password is in no output, no run config, event or log Dagster stored.
    assert server.password not in out
    stored = [p for p in (workdir / "dagster").rglob("*") if p.is_file()]
    assert stored and not [p for p in stored if server.password.encode() in p.read_bytes()]
    assert f"{RAW}" in out and "postgresql://postgres:***@127.0.0.1" in out  # where the tables are, redacted
    raw, mart, export = tables(server, url, workdir)
    assert len(raw) == len(mart) == len(export) == 2 * 124
    assert sum(row[9] is not None and row[9] == row[9] for row in mart) == 2 * (124 - 49)  # sma_50_day
    assert not (workdir / "data" / "financial_etl.duckdb").exists()  # nothing went to DuckDB
    assert loaded_file_formats(EXTRACT_PIPELINE, load_settings().pipelines_dir, RAW_TABLE) == {"parquet"}  # ADBC

    settings = load_settings()
    defs = build_definitions(settings)
    assert defs.resolve_job_def("daily_stock_metrics").tags[WAREHOUSE_TAG] == "postgres"
    schedule = defs.resolve_schedule_def("daily_after_close")
    (workdir / "dagster_home").mkdir()
    instance = DagsterInstance.local_temp(tempdir=str(workdir / "dagster_home"))
    with build_schedule_context(
        scheduled_execution_time=pd.Timestamp("2024-07-01 18:30", tz="America/New_York").to_pydatetime(),
        repository_def=defs.get_repository_def(),
        instance=instance,
    ) as context:
        requests = schedule.evaluate_tick(context).run_requests
    assert [r.tags["financial_etl/start"] for r in requests] == ["2024-07-01"]
    sensor = defs.resolve_sensor_def("restated_history_backfill")
    result = sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
    assert not result.run_requests
    assert "matches the source" in str(result.skip_message)
    instance.dispose()


def test_two_runs_at_once_on_postgresql_both_succeed_and_equal_them_one_after_the_other(server, tmp_path, clean_env):
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    ranges = (["--start", "2024-01-02", "--end", "2024-03-29"], ["--start", "2024-04-01", "--end", "2024-04-01"])

    _, together_url = database(server, "together")
    env = {
        **os.environ,
        "FINANCIAL_ETL_WAREHOUSE": together_url,
        "FINANCIAL_ETL_DUCKDB_PATH": str(tmp_path / "together" / "data" / "financial_etl.duckdb"),
    }
    runs = [run_cli(args, env) for args in ranges]
    outputs = [run.communicate(timeout=600)[0] for run in runs]
    for run, out in zip(runs, outputs, strict=True):
        assert run.returncode == 0, out[-3000:]
    assert not any("waiting for the warehouse" in out for out in outputs)  # no file lock on PostgreSQL

    _, serial_url = database(server, "serial")
    env = {
        **os.environ,
        "FINANCIAL_ETL_WAREHOUSE": serial_url,
        "FINANCIAL_ETL_DUCKDB_PATH": str(tmp_path / "serial" / "data" / "financial_etl.duckdb"),
    }
    for args in ranges:
        run = run_cli(args, env)
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out[-3000:]

    together, serial = (
        tables(server, together_url, tmp_path / "together"),
        tables(server, serial_url, tmp_path / "serial"),
    )
    assert len(together[1]) == 2 * 62
    for name, a, b in zip(("raw", "mart", "export"), together, serial, strict=True):
        assert_same_rows(a, b, name)
