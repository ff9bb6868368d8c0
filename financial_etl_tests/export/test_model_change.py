"""A change of the model reaches the export: each kind of edit, then the next ordinary daily
run, leaves the target equal to the mart on every column and every row, on the DuckDB
stand-in and on a real PostgreSQL target; a stale target fails the reconciliation by name;
`financial-etl plan` previews a change and touches nothing."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from financial_etl.cli.main import main
from financial_etl.definitions import CHECKS_JOB, build_definitions
from financial_etl.errors import EXIT_SUCCESS
from financial_etl.settings import load_settings
from financial_etl.transform.preview import PREVIEW_ENV
from financial_etl.transform.sqlmesh_adapter import PROD, sqlmesh_context
from financial_etl.warehouse import MART_KEY
from financial_etl_tests import mesh
from financial_etl_tests.helpers import assert_same_rows

MODEL = Path("models") / "marts" / "stock_metrics.sql"
RANGE_COLUMN = "  ((high_price - low_price) / close_price * 100)::DOUBLE AS price_range_pct,\n"
LAST_COLUMN = "  DATE_TRUNC('month', date)::DATE AS trade_month\n"

# (what the edit is, the text replaced, its replacement): applied one after the other. A
# removed column leaves the finite_values audit's column list too, as an editor would.
EDITS = [
    ("a new column", LAST_COLUMN, LAST_COLUMN.replace("\n", ",\n") + "  (close_price * 2)::DOUBLE AS close_doubled\n"),
    (
        "a changed formula",
        RANGE_COLUMN,
        "  ((high_price - low_price) / open_price * 100)::DOUBLE AS price_range_pct,\n",
    ),
    (
        "a removed column",
        "  ((high_price - low_price) / open_price * 100)::DOUBLE AS price_range_pct,\n",
        "",
        ("daily_return_pct, price_range_pct, volume_ratio", "daily_return_pct, volume_ratio"),
    ),
    ("a type change", "END::BIGINT AS volume_sma_20", "END::DOUBLE AS volume_sma_20"),
]
DAYS = ["2024-03-22", "2024-03-25", "2024-03-26", "2024-03-27", "2024-03-28"]


def edit(project: Path, old: str, new: str) -> None:
    path = project / MODEL
    text = path.read_text()
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new))


@pytest.fixture
def project(workdir, clean_env):
    copy = mesh.project_copy(workdir / "sqlmesh_project")
    clean_env.setenv("FINANCIAL_ETL_SQLMESH_PROJECT", str(copy))
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    return copy


def mart_table(workdir) -> tuple[list[str], list[tuple]]:
    with duckdb.connect(str(workdir / "data" / "financial_etl.duckdb"), read_only=True) as con:
        result = con.execute("SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date")
        return [d[0] for d in result.description], result.fetchall()


def standin_table(workdir) -> tuple[list[str], list[tuple], dict]:
    with duckdb.connect(str(workdir / "data" / "export.duckdb"), read_only=True) as con:
        types = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = 'dbo' AND table_name = 'Dim_Stock_Metrics'"
            ).fetchall()
        )
        columns = [c for c in types if not c.startswith("_dlt")]
        rows = con.execute(
            f'SELECT {", ".join(columns)} FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
        ).fetchall()
        return columns, rows, types


def postgres_table(pg) -> tuple[list[str], list[tuple], dict]:
    types = dict(
        pg.query(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = 'dbo' AND table_name = 'Dim_Stock_Metrics' ORDER BY ordinal_position"
        )
    )
    columns = [c for c in types if not c.startswith("_dlt")]
    rows = [
        tuple(r)
        for r in pg.query(f'SELECT {", ".join(columns)} FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date')
    ]
    return columns, rows, types


def assert_export_equals_mart(workdir, target, label: str) -> dict:
    columns, want = mart_table(workdir)
    got_columns, got, types = target()
    assert sorted(got_columns) == sorted(columns), f"{label}: target columns {got_columns} vs mart {columns}"
    order = [got_columns.index(c) for c in columns]
    assert_same_rows([tuple(row[i] for i in order) for row in got], want, label)
    return types


def reconciliation(settings=None) -> tuple[bool, dict]:
    result = (
        build_definitions(settings or load_settings())
        .resolve_job_def(CHECKS_JOB)
        .execute_in_process(instance=DagsterInstance.ephemeral(), raise_on_error=False)
    )
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "reconciles_with_mart"]
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def _every_edit_reaches_the_target(workdir, project, target) -> None:
    assert main(["run", "--end", DAYS[0]]) == EXIT_SUCCESS
    assert_export_equals_mart(workdir, target, "first load")
    for (what, old, new, *more), day in zip(EDITS, DAYS[1:], strict=True):
        for a, b in [(old, new), *more]:
            edit(project, a, b)
        assert main(["run", "--start", day, "--end", day]) == EXIT_SUCCESS, what
        types = assert_export_equals_mart(workdir, target, f"after {what}")
        passed, meta = reconciliation()
        assert passed, (what, meta)
    assert "price_range_pct" not in types and "close_doubled" in types
    assert types["volume_sma_20"] in ("DOUBLE", "double precision")


@pytest.mark.slow
def test_every_kind_of_model_change_reaches_the_duckdb_standin(workdir, project):
    _every_edit_reaches_the_target(workdir, project, lambda: standin_table(workdir))


@pytest.mark.slow
def test_every_kind_of_model_change_reaches_a_postgres_target(workdir, project, clean_env, postgres):
    clean_env.setenv("FINANCIAL_ETL_EXPORT_URL", postgres.url())
    _every_edit_reaches_the_target(workdir, project, lambda: postgres_table(postgres))


def test_a_stale_value_in_the_target_fails_the_reconciliation_naming_its_column(workdir, project):
    assert main(["run", "--end", DAYS[0]]) == EXIT_SUCCESS
    assert reconciliation()[0]
    with duckdb.connect(str(workdir / "data" / "export.duckdb")) as con:
        con.execute(
            'UPDATE dbo."Dim_Stock_Metrics" SET rsi_14_wilder = rsi_14_wilder * 1.0001 '
            "WHERE ticker = 'AAA' AND trade_date = DATE '2024-02-15'"
        )
    passed, meta = reconciliation()
    assert not passed
    assert meta["columns_differing"] == "rsi_14_wilder" and meta["partitions_differing"] == "2024"
    assert meta["mart_rows"] == meta["target_rows"]  # the old count-and-sum check passed this


def test_a_model_change_without_its_export_fails_the_reconciliation(workdir, project):
    """The export as it was before this check existed: the mart rebuilt with a new formula,
    the target holding the old values outside the run's range."""
    assert main(["run", "--end", DAYS[0]]) == EXIT_SUCCESS
    edit(project, RANGE_COLUMN, "  ((high_price - low_price) / open_price * 100)::DOUBLE AS price_range_pct,\n")
    assert main(["run", "--start", DAYS[1], "--end", DAYS[1]]) == EXIT_SUCCESS
    assert reconciliation()[0]
    with duckdb.connect(str(workdir / "data" / "export.duckdb")) as con:  # the old values outside the range
        con.execute(
            'UPDATE dbo."Dim_Stock_Metrics" SET price_range_pct = (high_price - low_price) / close_price * 100 '
            "WHERE trade_date <= ?",
            [DAYS[0]],
        )
    passed, meta = reconciliation()
    assert not passed and meta["columns_differing"] == "price_range_pct"


def test_plan_previews_a_change_and_touches_neither_prod_nor_the_export_nor_dagster(
    workdir, project, clean_env, capsys, caplog
):
    home = workdir / "dagster_home"
    home.mkdir()
    clean_env.setenv("DAGSTER_HOME", str(home))
    assert main(["run", "--end", DAYS[0]]) == EXIT_SUCCESS
    clean_env.setenv("FINANCIAL_ETL_END_DATE", DAYS[0])
    settings = load_settings()
    with sqlmesh_context(settings) as ctx:
        prod_before = sorted(
            (s.name, s.fingerprint.to_identifier()) for s in ctx.state_reader.get_environment(PROD).snapshots
        )
    mart_before, export_before = mart_table(workdir), standin_table(workdir)
    home_before = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*"))
    code_before = build_definitions(settings).resolve_assets_def(MART_KEY).specs_by_key[MART_KEY].code_version
    edit(
        project,
        RANGE_COLUMN,
        "  ((high_price - low_price) / open_price * 100)::DOUBLE AS price_range_pct,\n"
        "  (close_price * 2)::DOUBLE AS close_doubled,\n",
    )
    capsys.readouterr()
    caplog.clear()
    assert main(["plan"]) == EXIT_SUCCESS
    out = capsys.readouterr().out
    # SQLMesh's table diff logs its statements at any level: the preview prints none of them.
    assert not [r for r in caplog.records if "Executing SQL" in r.getMessage()]
    assert re.search(r"marts\.stock_metrics\s+(non_)?breaking", out), out
    assert "columns added: close_doubled" in out
    assert re.search(r"marts\.stock_metrics\s+2024-01-02 to " + DAYS[0], out), out
    assert re.search(r"rows: prod (\d+), preview \1, matched \1, only in prod 0, only in preview 0", out), out
    assert re.search(r"price_range_pct\s+differs in 100\.0% of matched rows", out), out
    assert "close_price " not in out.split("numbers")[1]  # unchanged columns are not listed
    with sqlmesh_context(settings) as ctx:
        prod_after = sorted(
            (s.name, s.fingerprint.to_identifier()) for s in ctx.state_reader.get_environment(PROD).snapshots
        )
        assert ctx.state_reader.get_environment(PREVIEW_ENV) is not None
    assert prod_after == prod_before
    assert mart_table(workdir) == mart_before and standin_table(workdir) == export_before
    assert sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in home.rglob("*")) == home_before
    # In the UI, the mart and the export show a changed code version.
    defs = build_definitions(load_settings())
    code_after = defs.resolve_assets_def(MART_KEY).specs_by_key[MART_KEY].code_version
    export_spec = next(s for s in defs.resolve_all_asset_specs() if s.group_name == "export")
    assert code_after != code_before and export_spec.code_version == code_after


def test_sql_server_gets_a_rename_and_fingerprints_in_its_own_dialect():
    """No SQL Server runs here: what the mssql target is sent for the swap and the check."""
    from financial_etl.export.checks import TARGET_DIALECT, fingerprint_sql
    from financial_etl.export.destination import ExportTarget
    from financial_etl.warehouse.engines import write_sql

    target = ExportTarget("mssql", "dbo", "Dim_Stock_Metrics", "SQL Server")
    assert (
        target.rename_sql(None, "Dim_Stock_Metrics__rebuild", "Dim_Stock_Metrics")
        == "EXEC sp_rename 'dbo.Dim_Stock_Metrics__rebuild', 'Dim_Stock_Metrics'"
    )
    sql, names = fingerprint_sql("t", {"ticker": "text", "trade_date": "date", "close_price": "number"}, None, None)
    tsql = write_sql(sql, TARGET_DIALECT["mssql"])
    assert "DATEPART(YEAR, [trade_date])" in tsql or "DATEPART(YEAR, trade_date)" in tsql, tsql
    assert "EXTRACT" not in tsql and "LEN(" in tsql and "COUNT_BIG(DISTINCT [ticker])" in tsql, tsql
    assert len(names) == 3 + 4 + 4  # text: 3 aggregates, dates and numbers: 4
    ranged, _ = fingerprint_sql("t", {"close_price": "number"}, dt.date(2024, 1, 2), dt.date(2024, 3, 28))
    assert "BETWEEN ? AND ?" in write_sql(ranged, TARGET_DIALECT["mssql"])  # pyodbc binds the dates
