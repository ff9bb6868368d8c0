"""Shared fixtures: a clean FINANCIAL_ETL_* environment in a temp dir, a CSV history to
point it at, a PostgreSQL server for the export tests, and a Spark cluster with a Hive
metastore service. Helper functions live in financial_etl_tests/helpers.py.

Before anything is collected, pytest_configure checks the system packages the tests need
(financial_etl_tests/system_packages.py) and stops the run with one line naming any that
is missing. Keep this module's imports free of them (no pyodbc, no pyspark)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl_tests.helpers import day, write_yahoo_csv
from financial_etl_tests.system_packages import missing_message

# pytest's exit code for a run stopped because a system package is missing.
EXIT_MISSING_SYSTEM_PACKAGE = pytest.ExitCode.USAGE_ERROR


def pytest_configure(config: pytest.Config) -> None:
    """No test runs, here or in CI, without every system package: one line says which to
    install (rather than an ImportError while collecting, or a skip)."""
    message = missing_message()
    if message:
        pytest.exit(message, returncode=EXIT_MISSING_SYSTEM_PACKAGE)
    # The tests' JVMs (Spark's) live a minute or two: without the server compiler's warm-up
    # and with one GC thread they take about 25% less CPU, which the 2 cores share. The
    # client compiler fills the default code cache, and the JVM then stops compiling.
    os.environ.setdefault(
        "JAVA_TOOL_OPTIONS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -XX:ReservedCodeCacheSize=256m"
    )


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """`-n auto`: one worker more than the cores. About a third of a worker's time is spent
    waiting (servers starting, subprocess runs, timed signals), which the extra one fills."""
    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1


# The files of the longest tests (minutes each, measured with --durations), longest first.
LONGEST_FIRST = (
    "test_spark_deployment.py",
    "test_spark_warehouse.py",
    "test_engines.py",
    "test_crash.py",
    "test_automation.py",
    "test_stock_metrics.py",
    "test_benchmarks_smoke.py",
    "test_export_postgres.py",
    "test_ui.py",
    "test_model_change.py",
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Slow tests first, the longest files' first of all (a stable sort keeps the rest in
    order): workers taking one file at a time start on the minutes-long ones, and the fast
    files fill the end instead of one long file running alone at the end."""

    def rank(item: pytest.Item) -> tuple[bool, int]:
        name = item.path.name
        return item.get_closest_marker("slow") is None, LONGEST_FIRST.index(name) if name in LONGEST_FIRST else 99

    items.sort(key=rank)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in list(os.environ):
        if key.startswith("FINANCIAL_ETL_") or key == "DAGSTER_HOME":
            monkeypatch.delenv(key, raising=False)
    return monkeypatch


@pytest.fixture
def workdir(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Path:
    """Every file the pipeline writes goes under tmp_path/data."""
    clean_env.setenv("FINANCIAL_ETL_DUCKDB_PATH", str(tmp_path / "data" / "financial_etl.duckdb"))
    return tmp_path


@pytest.fixture
def csv_history(workdir, clean_env):
    """Two tickers of CSV history, 2023-2024, and the environment that points at it."""
    csv_dir = workdir / "csv"
    frames = {}
    for ticker in ("AAA", "BBB"):
        frame = fetch_synthetic([ticker], day("2023-01-01"), day("2024-12-31")).frame
        write_yahoo_csv(csv_dir / f"{ticker}.csv", frame)
        frames[ticker] = frame
    clean_env.setenv("FINANCIAL_ETL_SOURCE", "csv")
    clean_env.setenv("FINANCIAL_ETL_CSV_DIR", str(csv_dir))
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2023-01-01")
    return pd.concat(frames.values(), ignore_index=True)


@pytest.fixture(scope="session")
def postgres_server():
    from financial_etl_tests.servers import start_postgres

    server = start_postgres()
    yield server
    server.stop()


@pytest.fixture
def postgres(postgres_server):
    """A fresh, empty `financial_mart` database on the running server."""
    postgres_server.reset_database()
    return postgres_server
