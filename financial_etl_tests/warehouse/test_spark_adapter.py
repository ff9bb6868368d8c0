"""SQLMesh's Spark adapter (sqlmesh_project/config.py) on a table partitioned by the month
of its time column, as the mart is: an interval covering part of a month keeps the month's
other days; an interval within one month is written into that month's partition by name,
from a query that reads the table itself as the model does; a longer one goes through
Spark's dynamic overwrite, one file a month."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlglot import exp, parse_one

from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.warehouse.project import project_config_module

pytestmark = pytest.mark.slow

COLUMNS = {"ticker": "STRING", "v": "DOUBLE", "trade_date": "DATE", "trade_month": "DATE"}
DAYS = [dt.date(2024, 1, 30), dt.date(2024, 1, 31), dt.date(2024, 2, 1), dt.date(2024, 2, 2), dt.date(2024, 3, 1)]


def day(value, columns=None) -> exp.Expr:  # the model's time formatter for a DATE column
    return exp.cast(exp.Literal.string(str(value)[:10]), "DATE")


def rows_sql(rows: list[tuple[str, str, str]], reading_table: bool = False) -> str:
    """A query giving (ticker, v, trade_date, trade_month); v of 'SUM' is the sum of the
    table's own v, as the model reads its own rows."""
    selects = [
        f"SELECT '{ticker}' AS ticker, {'(SELECT SUM(v) FROM m.t)' if v == 'SUM' else f'CAST({v} AS DOUBLE)'} AS v,"
        f" DATE'{when}' AS trade_date, trunc(DATE'{when}', 'MM') AS trade_month"
        for ticker, v, when in rows
    ]
    return " UNION ALL ".join(selects)


def test_part_of_a_month_keeps_the_months_other_days_and_one_month_is_written_by_name(tmp_path):
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
        "CREATE TABLE m.t (ticker STRING, v DOUBLE, trade_date DATE, trade_month DATE)"
        " USING parquet PARTITIONED BY (trade_month)"
    )

    def write(sql: str, start: dt.date, end: dt.date) -> list[tuple]:
        statements.clear()
        adapter.insert_overwrite_by_time_partition(
            "m.t", parse_one(sql, read="spark"), start.isoformat(), end.isoformat(), day, "trade_date", types
        )
        return sorted(adapter.fetchall("SELECT ticker, v, trade_date FROM m.t"))

    def files() -> dict[str, int]:
        folder = tmp_path / "data" / "spark-warehouse" / "m.db" / "t"
        return {p.name: len(list(p.glob("*.parquet"))) for p in folder.iterdir() if p.name.startswith("trade_month=")}

    # Five days over three months, from four input partitions: one file a month.
    spread = (
        "SELECT CONCAT('T', id) AS ticker, CAST(id AS DOUBLE) AS v, element_at(array("
        + ", ".join(f"DATE'{d}'" for d in DAYS)
        + "), CAST(id % 5 AS INT) + 1) AS trade_date FROM range(0, 10, 1, 4)"
    )
    first = write(f"SELECT *, trunc(trade_date, 'MM') AS trade_month FROM ({spread})", DAYS[0], DAYS[-1])
    assert len(first) == 10 and {row[2] for row in first} == set(DAYS)
    assert not any("PARTITION(" in s for s in statements)
    assert files() == {"trade_month=2024-01-01": 1, "trade_month=2024-02-01": 1, "trade_month=2024-03-01": 1}

    # January 31 and February 1 restated: January 30 and February 2 stay, though their
    # months are rewritten (Spark's dynamic overwrite alone would drop them).
    restated = {DAYS[1], DAYS[2]}
    second = write(rows_sql([("X", "1", "2024-01-31"), ("X", "2", "2024-02-01")]), DAYS[1], DAYS[2])
    assert [row for row in second if row[2] in restated] == [("X", 1.0, DAYS[1]), ("X", 2.0, DAYS[2])]
    assert [row for row in second if row[2] not in restated] == [row for row in first if row[2] not in restated]
    assert not any("PARTITION(" in s for s in statements)

    # One day, from the table's own rows (as the model carries its state): only February 2
    # changes, its month written by name; a row outside the interval is not written.
    total = sum(row[1] for row in second)
    third = write(rows_sql([("B", "SUM", "2024-02-02"), ("B", "0.5", "2024-03-01")]), DAYS[3], DAYS[3])
    assert [row for row in third if row[2] == DAYS[3]] == [("B", total, DAYS[3])]
    assert [row for row in third if row[2] != DAYS[3]] == [row for row in second if row[2] != DAYS[3]]
    inserts = [s for s in statements if s.startswith("INSERT")]
    assert len(inserts) == 1 and "PARTITION(trade_month = '2024-02-01')" in inserts[0], inserts
    assert files()["trade_month=2024-02-01"] == 1
