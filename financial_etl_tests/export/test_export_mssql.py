"""dlt's mssql destination itself: what it would send to SQL Server, and the real ODBC
Driver 18 failing clearly against a closed port. A live server test runs only when
FINANCIAL_ETL_MSSQL_TEST_URL is set (see compose.yaml)."""

import datetime as dt
import os
import re
from pathlib import Path

import dlt
import numpy as np
import pyarrow as pa
import pytest
from dlt.destinations.impl.mssql.mssql import MsSqlMergeJob
from dlt.destinations.insert_job_client import InsertValuesLoadJob

from financial_etl.errors import EXIT_CONNECTION, DestinationUnreachableError
from financial_etl.export.assets import EXPORT_COLUMN_HINTS, load_export, nan_to_null
from financial_etl.export.destination import export_target_for
from financial_etl.settings import Settings, load_settings
from financial_etl_tests.helpers import MART_COLUMNS, unavailable
from financial_etl_tests.servers import free_port

PASSWORD = "Mssql-Secret-9920"


def _mart_batch(rows: int) -> pa.Table:
    columns = {name: pa.array(np.linspace(1.0, 2.0, rows)) for name in MART_COLUMNS}
    columns["ticker"] = pa.array(["AAA"] * rows)
    columns["trade_date"] = pa.array([dt.date(2020, 1, 1) + dt.timedelta(days=i) for i in range(rows)])
    columns["trade_month"] = pa.array([day.replace(day=1) for day in columns["trade_date"].to_pylist()])
    columns["volume"] = pa.array(np.arange(rows, dtype=np.int64))
    columns["volume_sma_20"] = pa.array([None] * rows, pa.int64())
    columns["rsi_14_day"] = pa.array([float("nan"), float("inf")] + [50.0] * (rows - 2))
    return nan_to_null(pa.table(columns))


@pytest.fixture
def mssql_package(tmp_path):
    """A normalized mssql load package (nothing is sent), and the client that would load it."""
    target = export_target_for(
        load_settings({}),
        env={},
        mssql_fields={
            "HOST": "sql.example.internal",
            "DATABASE": "FINANCIAL_MART",
            "USERNAME": "etl",
            "PASSWORD": PASSWORD,
        },
    )
    pipeline = dlt.pipeline(
        "mssql_sql", destination=target.destination(), dataset_name="dbo", pipelines_dir=str(tmp_path)
    )
    resource = dlt.resource(
        _mart_batch(2500),
        name="Dim_Stock_Metrics",
        table_name="Dim_Stock_Metrics",
        primary_key=("ticker", "trade_date"),
        write_disposition={"disposition": "merge", "strategy": "delete-insert"},
        columns=EXPORT_COLUMN_HINTS,
    )
    pipeline.extract(resource)
    pipeline.normalize()
    jobs = list(Path(tmp_path, "mssql_sql", "load", "normalized").glob("*/new_jobs/Dim_Stock_Metrics.*"))
    assert len(jobs) == 1 and ".insert_values." in jobs[0].name
    return pipeline, pipeline.destination_client(), jobs[0]


def test_mssql_ddl_has_proper_types_and_keeps_the_tables_case(mssql_package):
    pipeline, client, _ = mssql_package
    columns = list(pipeline.default_schema.get_table_columns("Dim_Stock_Metrics").values())
    (ddl,) = client._get_table_update_sql("Dim_Stock_Metrics", columns, False)
    assert ddl.startswith('CREATE TABLE "dbo"."Dim_Stock_Metrics"')
    assert '"ticker" nvarchar(16)  NOT NULL' in ddl and '"trade_date" date  NOT NULL' in ddl
    assert '"close_price" float' in ddl and '"volume" bigint' in ddl and '"volume_sma_20" bigint' in ddl
    assert '"trade_month" date' in ddl
    assert "nvarchar(max)" not in ddl


def test_mssql_inserts_are_batches_of_1000_rows_with_iso_dates_and_null(mssql_package):
    _, client, job_file = mssql_package
    job = InsertValuesLoadJob(str(job_file))
    job._sql_client = client.sql_client
    statements = ["".join(f) for f in job._insert('"dbo"."Dim_Stock_Metrics"', str(job_file))]
    text = "\n".join(statements)
    pieces = text.split('INSERT INTO "dbo"."Dim_Stock_Metrics"')[1:]
    per_statement = [len(re.findall(r"^\(N'AAA',", piece, flags=re.M)) for piece in pieces]
    assert sum(per_statement) == 2500 and len(pieces) >= 3
    assert max(per_statement) <= 1000  # SQL Server's limit for one INSERT ... VALUES
    rows = re.findall(r"^\(N'AAA','(\d{4}-\d{2}-\d{2})',", text, flags=re.M)
    assert len(rows) == 2500 and rows[0] == "2020-01-01"
    first = text[text.index("(N'AAA','2020-01-01'") :].split("\n", 1)[0]
    assert first.count("NULL") == 2  # rsi NaN and volume_sma_20 None; never a literal nan
    second = text[text.index("(N'AAA','2020-01-02'") :].split("\n", 1)[0]
    assert "NULL" in second and "inf" not in text.lower().replace("info", "")
    assert "nan" not in re.sub(r"N'[^']*'", "", text).lower()


def test_mssql_merge_deletes_then_inserts_on_ticker_and_trade_date(mssql_package):
    _, client, _ = mssql_package
    table = client.prepare_load_table("Dim_Stock_Metrics")
    sql = "\n".join(MsSqlMergeJob.generate_sql([table], client.sql_client))
    assert "DELETE FROM" in sql and '"dbo"."Dim_Stock_Metrics"' in sql and "dbo_staging" in sql
    assert '"ticker"' in sql and '"trade_date"' in sql
    assert "INSERT INTO" in sql
    assert sql.index("DELETE FROM") < sql.index("INSERT INTO")


# --- the real ODBC driver -----------------------------------------------------------------


@pytest.fixture
def odbc_driver_18(tmp_path, monkeypatch):
    """Microsoft's ODBC Driver 18 from the PyPI package mssql-python-odbc, registered with
    unixODBC through an odbcinst.ini in a temp dir (ODBCSYSINI)."""
    from financial_etl.export.odbc import register_pypi_driver

    try:
        ini_dir = register_pypi_driver(tmp_path / "odbc")
    except RuntimeError as exc:
        unavailable(str(exc))
    monkeypatch.setenv("ODBCSYSINI", str(ini_dir))
    import pyodbc

    if "ODBC Driver 18 for SQL Server" not in pyodbc.drivers():
        pytest.fail(f"the driver did not register: {pyodbc.drivers()}")


def _settings(workdir, env: dict[str, str]) -> Settings:
    from financial_etl_tests.export.test_export_postgres import _row, _warehouse_with_mart

    for key, value in env.items():
        os.environ[key] = value
    return _warehouse_with_mart(workdir, [_row("AAA", dt.date(2024, 1, 2), 10.0)])


def test_a_closed_port_is_a_clear_connection_error_with_exit_4(workdir, clean_env, odbc_driver_18):
    port = free_port()
    settings = _settings(workdir, {})
    target = export_target_for(
        settings,
        env={},
        mssql_fields={
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "USERNAME": "sa",
            "PASSWORD": PASSWORD,
            "CONNECT_TIMEOUT": "3",
        },
    )
    with pytest.raises(DestinationUnreachableError) as excinfo:
        load_export(settings, target, ranges=[(dt.date(2024, 1, 1), dt.date(2024, 1, 31))])
    message = str(excinfo.value)
    assert f"cannot reach SQL Server 127.0.0.1:{port}/FINANCIAL_MART" in message
    assert PASSWORD not in message
    assert excinfo.value.exit_code == EXIT_CONNECTION


@pytest.mark.slow
def test_a_missing_driver_names_the_installed_ones_and_exits_4(workdir, clean_env, odbc_driver_18, capsys):
    from financial_etl.cli.main import main

    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    clean_env.setenv("FINANCIAL_ETL_MSSQL_HOST", "127.0.0.1")
    clean_env.setenv("FINANCIAL_ETL_MSSQL_PORT", str(free_port()))
    clean_env.setenv("FINANCIAL_ETL_MSSQL_USERNAME", "etl")
    clean_env.setenv("FINANCIAL_ETL_MSSQL_PASSWORD", PASSWORD)
    clean_env.setenv("FINANCIAL_ETL_MSSQL_DRIVER", "ODBC Driver 17 for SQL Server")  # not installed here
    assert main(["run", "--start", "2024-01-02", "--end", "2024-01-05"]) == EXIT_CONNECTION
    err = capsys.readouterr().err
    assert "no usable SQL Server ODBC driver" in err and "ODBC Driver 18 for SQL Server" in err
    assert PASSWORD not in err


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("FINANCIAL_ETL_MSSQL_TEST_URL"), reason="set FINANCIAL_ETL_MSSQL_TEST_URL (see compose.yaml)"
)
def test_live_sql_server_export_merge_and_reconciliation(workdir, clean_env):
    from financial_etl.cli.main import main

    clean_env.setenv("FINANCIAL_ETL_MSSQL_URL", os.environ["FINANCIAL_ETL_MSSQL_TEST_URL"])
    clean_env.setenv("FINANCIAL_ETL_MSSQL_TRUST_SERVER_CERTIFICATE", "yes")
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    assert main(["run", "--start", "2024-01-02", "--end", "2024-02-29"]) == 0
    assert main(["run", "--start", "2024-02-01", "--end", "2024-03-28"]) == 0
    assert main(["run", "--start", "2024-01-02", "--end", "2024-03-28", "--full-refresh"]) == 0
    assert main(["check", "--start", "2024-01-02", "--end", "2024-03-28"]) == 0
