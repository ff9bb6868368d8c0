"""The mart's recompute is atomic on DuckDB: SQLMesh deletes a range and inserts it again,
and a run that stops in between (a kill, a failed query) must leave the old rows."""

import datetime as dt

import duckdb
import pytest
from sqlglot import exp, parse_one

from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.transform.sqlmesh_adapter import project_config_module


def overwrite_failing_midway(config_class, path):
    """Five rows, then SQLMesh's insert-overwrite of all of them from a query that fails
    after the delete; what is left in the table."""
    adapter = config_class(database=str(path)).create_engine_adapter()
    adapter.execute("CREATE TABLE t (d DATE, v INT)")
    adapter.execute("INSERT INTO t SELECT DATE '2024-01-01' + INTERVAL (i) DAY, i FROM range(5) AS r(i)")
    failing = parse_one(
        "SELECT DATE '2024-01-02' AS d, CAST(error('the query fails after the delete') AS INT) AS v FROM range(3)",
        read="duckdb",
    )
    with pytest.raises(Exception, match="fails after the delete"):
        adapter.insert_overwrite_by_time_partition(
            "t",
            failing,
            start=dt.date(2024, 1, 1),
            end=dt.date(2024, 1, 6),
            time_formatter=lambda value, _: exp.cast(exp.Literal.string(str(value)[:10]), "date"),
            time_column="d",
            target_columns_to_types={"d": exp.DataType.build("date"), "v": exp.DataType.build("int")},
        )
    adapter.close()
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("SELECT count(*) FROM t").fetchone()[0]


def test_an_interrupted_recompute_keeps_the_old_rows_where_sqlmesh_alone_loses_them(tmp_path):
    config = project_config_module(str(SQLMESH_PROJECT_DIR))
    assert overwrite_failing_midway(config.TransactionalDuckDBConnectionConfig, tmp_path / "ours.duckdb") == 5
    # Why the adapter exists: SQLMesh's own DuckDB adapter commits the delete on its own.
    assert overwrite_failing_midway(config.DuckDBConnectionConfig, tmp_path / "stock.duckdb") == 0
