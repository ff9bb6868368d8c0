"""SQLMesh's Spark adapter (sqlmesh_project/config.py) writes a one-day interval into that
day's partition by name, from a query that reads the table itself as the model does, and
leaves every other day as it was; a longer interval goes through Spark's dynamic overwrite,
one file a day."""

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


def test_a_one_day_interval_overwrites_its_partition_by_name_and_longer_ones_a_file_per_day(tmp_path):
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

    # Three days from four input partitions: one file a day, through SQLMesh's dynamic overwrite.
    days = (
        "SELECT CONCAT('T', id) AS ticker, CAST(id AS DOUBLE) AS v,"
        " date_add(DATE'2024-01-01', CAST(id % 3 AS INT) + 1) AS trade_date FROM range(0, 12, 1, 4)"
    )
    first = write(days, "2024-01-02", "2024-01-04")
    assert len(first) == 12 and {row[2] for row in first} == {dt.date(2024, 1, d) for d in (2, 3, 4)}
    assert not any("PARTITION(" in s for s in statements)
    folder = tmp_path / "data" / "spark-warehouse" / "m.db" / "t"
    files = {p.name: len(list(p.glob("*.parquet"))) for p in folder.iterdir() if p.name.startswith("trade_date=")}
    assert files == {f"trade_date=2024-01-0{d}": 1 for d in (2, 3, 4)}

    # One day, from the table's own rows (as the model carries its state): only 2024-01-03 changes.
    own = (
        "SELECT 'B' AS ticker, SUM(v) AS v, DATE'2024-01-03' AS trade_date FROM m.t"
        " UNION ALL SELECT 'B', 0.5, DATE'2024-01-04'"
    )
    third = dt.date(2024, 1, 3)
    after = write(own, "2024-01-03", "2024-01-03")
    assert [row for row in after if row[2] == third] == [("B", 66.0, third)]
    assert [row for row in after if row[2] != third] == [row for row in first if row[2] != third]
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 1 and "PARTITION(trade_date = '2024-01-03')" in inserts[0], inserts
