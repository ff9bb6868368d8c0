"""FINANCIAL_ETL_WAREHOUSE=spark: `financial-etl run` runs the whole graph with Spark local[2].

dlt merges raw into the DuckDB file and publishes the months it changed as Parquet files
(warehouse/lake.py); SQLMesh runs the model and its audits on Spark; the checks read Spark;
the export reads the mart from Spark. Two runs (a history, then a later month) give what one run over the
whole range gives on the default DuckDB warehouse. Each run is its own process: a local
Spark's catalog admits one process at a time.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from financial_etl.settings import REPO_ROOT
from financial_etl.warehouse import RAW_TABLE
from financial_etl.warehouse.lake import manifest, table_folder
from financial_etl_tests.helpers import assert_same_rows, check_outcomes, query

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-m", "financial_etl.cli.main", "run"]
EXPORT_ROWS = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
RAW_COLUMNS = "ticker, date, open_price, high_price, low_price, close_price, volume"


def run(folder, warehouse: str | None, *args: str) -> str:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("FINANCIAL_ETL_") and key != "DAGSTER_HOME"
    }
    env.update(
        FINANCIAL_ETL_TICKERS="AAA,BBB",
        FINANCIAL_ETL_START_DATE="2024-01-02",
        FINANCIAL_ETL_END_DATE="2024-06-28",
        DAGSTER_HOME=str(folder / "dagster"),
        FINANCIAL_ETL_DUCKDB_PATH=str(folder / "data" / "financial_etl.duckdb"),
    )
    if warehouse:
        env["FINANCIAL_ETL_WAREHOUSE"] = warehouse
    (folder / "dagster").mkdir(parents=True, exist_ok=True)
    done = subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, cwd=REPO_ROOT, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    return done.stdout


def test_financial_etl_run_on_spark_gives_what_it_gives_on_duckdb(tmp_path):
    spark, duckdb = tmp_path / "spark", tmp_path / "duckdb"
    out = run(spark, "spark:local[2]", "--end", "2024-05-31")
    assert "Spark local[2]" in out
    run(spark, "spark:local[2]", "--start", "2024-06-03", "--end", "2024-06-28")
    run(duckdb, None)

    # Raw as Spark reads it: the months of the newest version in the lake equal the DuckDB file
    # dlt merged into; the second run wrote June's month only.
    folder = table_folder(spark / "data" / "financial_etl.duckdb", RAW_TABLE)
    newest = max(path.stem for path in (folder / "versions").glob("*.json"))
    months = manifest(folder, newest)["months"]
    assert sorted(months) == [f"2024-{m:02d}" for m in range(1, 7)]
    assert [m for m, entry in months.items() if entry["folder"].startswith(f"parts/{newest}/")] == ["2024-06"]
    files = [str(folder / entry["folder"] / "*.parquet") for entry in months.values()]
    published = query(
        spark / "data" / "financial_etl.duckdb",
        f"SELECT {RAW_COLUMNS} FROM read_parquet(?) ORDER BY ticker, date",
        [files],
    )
    merged = query(
        spark / "data" / "financial_etl.duckdb", f"SELECT {RAW_COLUMNS} FROM raw.eod_prices_raw ORDER BY ticker, date"
    )
    assert len(published) == 2 * 124 and published == merged

    # The mart, as exported from Spark, equals the DuckDB warehouse's; so do the checks.
    got, want = (query(folder / "data" / "export.duckdb", EXPORT_ROWS) for folder in (spark, duckdb))
    assert len(want) == 2 * 124
    assert_same_rows(got, want, "export from Spark")
    spark_checks, duckdb_checks = check_outcomes(spark / "dagster"), check_outcomes(duckdb / "dagster")
    assert duckdb_checks and all(passed for _, _, passed in duckdb_checks)
    # Spark ran every check twice (two runs), DuckDB once.
    assert sorted(set(spark_checks)) == duckdb_checks
