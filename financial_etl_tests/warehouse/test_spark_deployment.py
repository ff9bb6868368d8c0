"""FINANCIAL_ETL_WAREHOUSE=spark://host:port: the whole graph on a Spark standalone cluster
with a shared Hive metastore service and SQLMesh's state in PostgreSQL, started the way a
user starts them (financial_etl_tests/spark_cluster.py, docs/scaling-out.md).

One deployment serves the module: a master, one worker and the metastore on loopback, the
metastore and SQLMesh's state in databases of the tests' PostgreSQL server. The CLI test
loads a history, one more day and a vendor-corrected range; the Dagster test then runs the
UI, the daemon and its sensor on the same warehouse while a CLI run writes to it. After
each, the mart, the checks and the export equal what the DuckDB warehouse gives for the
same runs, to 1e-9.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import REPO_ROOT, load_settings
from financial_etl.warehouse import MART, RAW
from financial_etl_tests.dagster_dev import launch, run_errors, running_dagster_dev, wait_for_run, wait_until
from financial_etl_tests.helpers import assert_same_rows, check_outcomes, day, query, write_yahoo_csv

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "financial_etl.cli.main", "run"]
EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
RAW_ROWS = f"SELECT ticker, date, open_price, high_price, low_price, close_price, volume FROM {RAW} ORDER BY 1, 2"
START = "2024-01-02"
CORRECTED = ("2024-03-04", "2024-03-08")  # a vendor correction of AAA's prices, re-run after the fact


@dataclasses.dataclass
class Deployment:
    root: Path
    cluster: object
    state_url: str
    password: str

    def env(self, engine: str, **extra: str) -> dict[str, str]:
        """FINANCIAL_ETL_* for `engine` (spark: the cluster; duckdb: the default file)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
        env.update(
            FINANCIAL_ETL_SOURCE="csv",
            FINANCIAL_ETL_CSV_DIR=str(self.root / "csv"),
            FINANCIAL_ETL_TICKERS_FILE=str(self.root / f"tickers-{engine}.txt"),
            FINANCIAL_ETL_START_DATE=START,
            FINANCIAL_ETL_DUCKDB_PATH=str(self.root / engine / "data" / "financial_etl.duckdb"),
            DAGSTER_HOME=str(self.root / engine / "dagster"),
            **extra,
        )
        if engine == "spark":
            env.update(
                FINANCIAL_ETL_WAREHOUSE=self.cluster.master_url,
                FINANCIAL_ETL_SPARK_METASTORE=self.cluster.metastore_uri,
                FINANCIAL_ETL_SQLMESH_STATE=self.state_url,
            )
        (self.root / engine / "dagster").mkdir(parents=True, exist_ok=True)
        return env

    def cli(self, engine: str, *args: str, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [*CLI, *args],
            env=self.env(engine, **extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO_ROOT,
        )

    def run(self, engine: str, *args: str) -> str:
        process = self.cli(engine, *args)
        out, _ = process.communicate(timeout=900)
        assert process.returncode == 0, out[-4000:]
        assert self.password not in out
        return out

    def tables(self, engine: str) -> dict[str, list[tuple]]:
        """raw and the mart as the pipeline reads them, and the export as loaded."""
        settings = load_settings(self.env(engine))
        with settings.warehouse.connect() as con:
            raw = con.execute(RAW_ROWS).df()
            mart = con.execute(f"SELECT * FROM {MART} ORDER BY ticker, trade_date").df()
        export = query(self.root / engine / "data" / "export.duckdb", EXPORT_ROWS)
        # Spark's dates, DuckDB's timestamps; the mart's columns in the model's order on both
        for frame, column in ((raw, "date"), (mart, "trade_date"), (mart, "trade_month")):
            frame[column] = pd.to_datetime(frame[column]).dt.date
        return {"raw": rows(raw), "mart": rows(mart), "export": export}

    def assert_equal_to_duckdb(self) -> dict[str, list[tuple]]:
        spark, duckdb = self.tables("spark"), self.tables("duckdb")
        for name in spark:
            assert_same_rows(spark[name], duckdb[name], f"{name} on the cluster vs DuckDB")
        return spark


def rows(frame: pd.DataFrame) -> list[tuple]:
    """Plain Python values, every missing one None (pandas gives NaN, NA or None by engine)."""
    return list(frame.astype(object).where(frame.notna(), None).itertuples(index=False, name=None))


def write_history(csv_dir: Path, tickers=("AAA", "BBB", "CCC")) -> None:
    for ticker in tickers:
        write_yahoo_csv(csv_dir / f"{ticker}.csv", fetch_synthetic([ticker], day(START), day("2024-12-31")).frame)


def correct_prices(csv_dir: Path, ticker: str, first: str, last: str) -> None:
    """The vendor re-issues these days' prices 2% higher."""
    frame = fetch_synthetic([ticker], day(START), day("2024-12-31")).frame
    days = (frame["date"] >= day(first)) & (frame["date"] <= day(last))
    for column in ("open_price", "high_price", "low_price", "close_price"):
        frame.loc[days, column] = frame.loc[days, column] * 1.02
    write_yahoo_csv(csv_dir / f"{ticker}.csv", frame)


@pytest.fixture(scope="module")
def deployment(postgres_server, tmp_path_factory):
    from financial_etl_tests.spark_cluster import start_spark_cluster

    root = tmp_path_factory.mktemp("spark_deployment")
    state = dataclasses.replace(postgres_server, database="sqlmesh_state")
    state.reset_database()
    write_history(root / "csv")
    for engine in ("spark", "duckdb"):
        (root / f"tickers-{engine}.txt").write_text("AAA\nBBB\n")
    cluster = start_spark_cluster(postgres_server, root / "cluster")
    try:
        yield Deployment(root, cluster, state.url(), postgres_server.password)
    finally:
        # This process's session (Deployment.tables) is on the cluster: left open, the next
        # test's getOrCreate would get it and wait forever for the stopped cluster's executors.
        from pyspark.sql import SparkSession

        if session := SparkSession.getActiveSession():
            session.stop()
        cluster.stop()
    assert cluster.processes() == []  # stopped by PID: no JVM of the cluster, no executor, is left


def test_financial_etl_run_on_a_standalone_cluster_equals_duckdb(deployment):
    for engine in ("spark", "duckdb"):
        out = deployment.run(engine, "--end", "2024-05-31")
        if engine == "spark":
            assert deployment.cluster.master_url in out and deployment.cluster.metastore_uri in out
        deployment.run(engine, "--start", "2024-06-03", "--end", "2024-06-03")
    correct_prices(deployment.root / "csv", "AAA", *CORRECTED)
    for engine in ("spark", "duckdb"):
        deployment.run(engine, "--start", CORRECTED[0], "--end", CORRECTED[1])

    tables = deployment.assert_equal_to_duckdb()
    assert len(tables["mart"]) == 2 * 106  # two tickers, 2024-01-02 to 2024-06-03
    spark_checks = sorted(set(check_outcomes(deployment.root / "spark" / "dagster")))
    assert spark_checks and all(passed for *_, passed in spark_checks)
    assert spark_checks == sorted(set(check_outcomes(deployment.root / "duckdb" / "dagster")))
    # The runs were applications of the cluster, not local Spark sessions.
    assert len(deployment.cluster.state()["completedapps"]) >= 3


DEFINITIONS = """{ repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
  sensors { name sensorState { status } } } } } }"""

SENSOR_TICKS = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) {
  __typename ... on Sensor { sensorState { ticks(limit: 10) { status skipReason } } } } }"""

RUNS_TAGGED = """query Runs($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
  ... on Runs { results { runId status } } } }"""


def test_dagster_ui_daemon_and_sensor_on_the_cluster_beside_a_cli_run(deployment):
    settings = {k: v for k, v in deployment.env("spark").items() if k.startswith("FINANCIAL_ETL_")}
    settings["FINANCIAL_ETL_END_DATE"] = "2024-06-05"  # what the sensor's backfill covers
    (deployment.root / "dev").mkdir()
    with running_dagster_dev(deployment.root / "dev", settings) as dev:
        definitions = dev.graphql(DEFINITIONS)
        (repo,) = definitions["repositoriesOrError"]["nodes"]
        assert {s["name"]: s["sensorState"]["status"] for s in repo["sensors"]}["new_ticker_backfill"] == "RUNNING"
        selector = {
            "repositoryLocationName": repo["location"]["name"],
            "repositoryName": repo["name"],
            "sensorName": "new_ticker_backfill",
        }

        def universe_recorded() -> bool:
            ticks = dev.graphql(SENSOR_TICKS, {"selector": selector})["sensorOrError"]["sensorState"]["ticks"]
            return any("recorded the ticker universe" in (t["skipReason"] or "") for t in ticks)

        # The sensor's first tick records the universe; a ticker added after it is new.
        wait_until("the sensor's first tick", universe_recorded, 120, dev, every=3)
        # Materialize from the UI, and a CLI run on the same metastore, at once.
        one_day = {"dagster/partition": "2024", "financial_etl/start": "2024-06-04", "financial_etl/end": "2024-06-04"}
        ui_run = launch(dev, definitions, one_day)
        cli_run = deployment.cli("spark", "--start", "2024-06-05", "--end", "2024-06-05")
        # A ticker added to the file: the daemon's sensor backfills its whole history.
        (deployment.root / "tickers-spark.txt").write_text("AAA\nBBB\nCCC\n")
        out, _ = cli_run.communicate(timeout=900)
        assert cli_run.returncode == 0, out[-4000:]
        status = wait_for_run(dev, ui_run, timeout=600)
        assert status == "SUCCESS", f"{run_errors(dev, ui_run)}\n{dev.log_tail()}"
        tagged = [{"key": "financial_etl/tickers", "value": "CCC"}]

        def sensor_run() -> str | None:
            runs = dev.graphql(RUNS_TAGGED, {"tags": tagged})["runsOrError"]["results"]
            return runs[0]["runId"] if runs else None

        backfill = wait_until("the new-ticker sensor's run", sensor_run, 300, dev, every=5)
        status = wait_for_run(dev, backfill, timeout=600)
        assert status == "SUCCESS", f"{run_errors(dev, backfill)}\n{dev.log_tail()}"

    # DuckDB, loaded whole with the three tickers: the same raw, mart and export.
    (deployment.root / "tickers-duckdb.txt").write_text("AAA\nBBB\nCCC\n")
    deployment.run("duckdb", "--start", START, "--end", "2024-06-05")
    tables = deployment.assert_equal_to_duckdb()
    days = pd.Series([row[1] for row in tables["mart"] if row[0] == "CCC"])
    assert len(days) == 108 and str(days.min()) == START  # 2024-01-02 to 2024-06-05
