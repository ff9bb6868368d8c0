"""SQLMesh's Spark adapter (sqlmesh_project/config.py) writes a one-day interval into that
day's partition by name, from a query that reads the table itself as the model does, and
leaves every other day as it was; a longer interval goes SQLMesh's own way."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlglot import exp, parse_one

from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.warehouse.project import project_config_module

pytestmark = pytest.mark.slow

COLUMNS = {"ticker": "STRING", "v": "DOUBLE", "trade_date": "DATE"}


def day(value, columns=None) -> exp.Expr:  # the model's time formatter for a DATE column
    return exp.cast(exp.Literal.string(str(value)[:10]), "DATE")


def test_a_one_day_interval_overwrites_its_partition_by_name_and_nothing_else(tmp_path):
    config = project_config_module(str(SQLMESH_PROJECT_DIR))
    connection = config.ProjectSparkConnectionConfig(
        config=config.spark_conf(str(tmp_path / "data" / "financial_etl.duckdb"), "local[1]")
    )
    adapter = connection.create_engine_adapter()
    statements: list[str] = []
    execute = adapter.execute

    def recorded(expressions, *args, **kwargs):
        statements.append(expressions.sql(dialect="spark") if isinstance(expressions, exp.Expr) else str(expressions))
        return execute(expressions, *args, **kwargs)

    adapter.execute = recorded
    types = {name: exp.DataType.build(kind, dialect="spark") for name, kind in COLUMNS.items()}
    adapter.execute("CREATE DATABASE m")
    adapter.execute(
        "CREATE TABLE m.t (ticker STRING, v DOUBLE, trade_date DATE) USING parquet PARTITIONED BY (trade_date)"
    )

    def write(sql: str, start: str, end: str) -> list[tuple]:
        statements.clear()
        adapter.insert_overwrite_by_time_partition(
            "m.t", parse_one(sql, read="spark"), start, end, day, "trade_date", types
        )
        return sorted(adapter.fetchall("SELECT ticker, v, trade_date FROM m.t"))

    days = (
        "SELECT 'A' AS ticker, CAST(id AS DOUBLE) AS v, date_add(DATE'2024-01-01', CAST(id AS INT)) AS trade_date"
        " FROM range(1, 4)"
    )
    assert write(days, "2024-01-02", "2024-01-04") == [("A", float(i), dt.date(2024, 1, 1 + i)) for i in (1, 2, 3)]
    assert not any("PARTITION(" in s for s in statements), "three days: SQLMesh's dynamic overwrite"

    # One day, from the table's own rows (as the model carries its state): only 2024-01-03 changes.
    own = (
        "SELECT 'B' AS ticker, SUM(v) AS v, DATE'2024-01-03' AS trade_date FROM m.t"
        " UNION ALL SELECT 'B', 0.5, DATE'2024-01-04'"
    )
    assert write(own, "2024-01-03", "2024-01-03") == [
        ("A", 1.0, dt.date(2024, 1, 2)),
        ("A", 3.0, dt.date(2024, 1, 4)),
        ("B", 6.0, dt.date(2024, 1, 3)),
    ]
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 1 and "PARTITION(trade_date = '2024-01-03')" in inserts[0], inserts
