"""The pipeline's queries keep their `?` parameters as parameters on every engine: the
driver binds the values, and no value is ever written into the statement's text."""

from __future__ import annotations

import datetime as dt

import pytest

from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.warehouse.engines import parse_warehouse, write_sql

EVIL = "A'; DROP TABLE prices; --"
QUERY = "SELECT ticker, date, close_price FROM prices WHERE ticker = ? AND date BETWEEN ? AND ? ORDER BY date"
PARAMS = [EVIL, dt.date(2024, 1, 1), dt.date(2024, 1, 31)]
WANT = [(EVIL, dt.date(2024, 1, 2), 1.5), (EVIL, dt.date(2024, 1, 3), 2.5)]


def read_both_ways(warehouse) -> tuple[list[tuple], list[tuple]]:
    """The rows through `execute` and through `arrow_batches`."""
    with warehouse.connect() as con:
        rows = con.execute(QUERY, PARAMS).fetchall()
        batches = list(con.arrow_batches(QUERY, PARAMS, 1))
    assert batches[0].num_rows == 0 and batches[0].schema.names == ["ticker", "date", "close_price"]
    return rows, [tuple(row.values()) for batch in batches for row in batch.to_pylist()]


def test_placeholders_stay_placeholders_numbered_in_the_order_of_the_text():
    text = "SELECT * FROM t WHERE s = '?' AND d BETWEEN ? AND ? AND ticker IN (?, ?) ORDER BY d LIMIT ?"
    # sqlglot's tree holds LIMIT before WHERE: the numbers come from the text.
    assert write_sql(text, "postgres", numbered=True).endswith(
        "s = '?' AND d BETWEEN $1 AND $2 AND ticker IN ($3, $4) ORDER BY d LIMIT $5"
    )
    assert write_sql(text, "spark").endswith(
        "s = '?' AND d BETWEEN ? AND ? AND ticker IN (?, ?) ORDER BY d NULLS LAST LIMIT ?"
    )
    assert write_sql(text, "postgres").endswith(
        "s = '?' AND d BETWEEN %s AND %s AND ticker IN (%s, %s) ORDER BY d LIMIT %s"
    )
    assert "d BETWEEN ? AND ? AND ticker IN (?, ?)" in write_sql(text, "tsql")


@pytest.mark.slow
def test_postgresql_receives_a_quoted_ticker_as_a_bound_parameter_never_in_the_statement(postgres, tmp_path):
    con = postgres.connect()
    con.autocommit = True
    with con.cursor() as cur:
        cur.execute("CREATE TABLE prices (ticker text, date date, close_price double precision)")
        cur.execute(
            "INSERT INTO prices VALUES (%s, '2024-01-02', 1.5), (%s, '2024-01-03', 2.5), ('B', '2024-01-02', 9)",
            [EVIL, EVIL],
        )
        # Every statement of the sessions opened from now on, as the server received it.
        cur.execute(f"ALTER DATABASE {postgres.database} SET log_statement = 'all'")
    con.close()
    logged_before = postgres.log.read_text().count("\n")

    rows, streamed = read_both_ways(parse_warehouse(postgres.url(), tmp_path / "unused.duckdb"))

    assert rows == streamed == WANT
    log = postgres.log.read_text().splitlines()[logged_before:]
    statements = [line for line in log if "FROM prices WHERE" in line]
    assert len(statements) == 2, log  # the query, and the server-side cursor that streams it
    assert all("ticker = $1" in line and "DROP TABLE" not in line for line in statements), statements
    values = [line for line in log if "DETAIL:  parameters: $1 = " in line]
    assert len(values) == 2 and all("DROP TABLE prices" in line for line in values), log


@pytest.mark.slow
def test_spark_binds_a_quoted_ticker_as_a_positional_argument(tmp_path):
    from financial_etl.warehouse.engines import spark_session

    warehouse = parse_warehouse("spark:local[1]", tmp_path / "data" / "financial_etl.duckdb", SQLMESH_PROJECT_DIR)
    assert "DROP" not in write_sql(QUERY, "spark") and write_sql(QUERY, "spark").count("?") == 3
    spark = spark_session(warehouse)
    frame = spark.createDataFrame(
        [(EVIL, dt.date(2024, 1, 2), 1.5), (EVIL, dt.date(2024, 1, 3), 2.5), ("B", dt.date(2024, 1, 2), 9.0)],
        "ticker string, date date, close_price double",
    )
    frame.createOrReplaceTempView("prices")
    try:
        rows, streamed = read_both_ways(warehouse)
    finally:
        spark.catalog.dropTempView("prices")
    assert rows == streamed == WANT
