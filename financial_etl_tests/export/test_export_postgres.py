"""The export's dlt code path against a real PostgreSQL server (no SQL Server runs here)."""

import datetime as dt
import os
import subprocess
import sys
import threading
import time

import duckdb
import pytest

from financial_etl.cli.main import main
from financial_etl.errors import (
    EXIT_CONNECTION,
    EXIT_SUCCESS,
    DestinationUnreachableError,
    LoginFailedError,
    MissingDatabaseError,
)
from financial_etl.export.assets import EXPORT_PIPELINE, load_export
from financial_etl.export.destination import export_target_for
from financial_etl.settings import REPO_ROOT, load_settings
from financial_etl_tests.helpers import MART_COLUMNS, assert_same_rows, day, loaded_file_formats, query

# The mart's columns: the target also holds _dlt_load_id, the load that wrote each row.
TARGET_ROWS = f'SELECT {", ".join(MART_COLUMNS)} FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'
MART_ROWS = "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date"


@pytest.fixture
def pg_env(workdir, clean_env, postgres):
    clean_env.setenv("FINANCIAL_ETL_EXPORT_URL", postgres.url())
    clean_env.setenv("FINANCIAL_ETL_TICKERS", "AAA,BBB")
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2024-01-02")
    return postgres


def _target_rows(pg):
    return [tuple(r) for r in pg.query(TARGET_ROWS)]


@pytest.mark.slow
def test_ranges_merge_into_postgres_and_reruns_change_nothing(workdir, pg_env):
    db = workdir / "data" / "financial_etl.duckdb"
    assert main(["run", "--start", "2024-01-02", "--end", "2024-02-29"]) == EXIT_SUCCESS
    first = _target_rows(pg_env)
    assert_same_rows(first, query(db, MART_ROWS), "first range")
    assert main(["run", "--start", "2024-03-01", "--end", "2024-03-28"]) == EXIT_SUCCESS
    both = _target_rows(pg_env)
    assert_same_rows(both, query(db, MART_ROWS), "two ranges")
    assert_same_rows([r for r in both if r[1] < day("2024-03-01")], first, "first range untouched")
    assert main(["run", "--start", "2024-03-01", "--end", "2024-03-28"]) == EXIT_SUCCESS
    assert_same_rows(_target_rows(pg_env), both, "re-run")
    assert pg_env.query('SELECT count(*), count(DISTINCT (ticker, trade_date)) FROM dbo."Dim_Stock_Metrics"')[0] == (
        len(both),
        len(both),
    )
    columns = dict(
        pg_env.query(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'Dim_Stock_Metrics'"
        )
    )
    assert columns["trade_date"] == "date" and columns["volume"] == "bigint"
    assert columns["close_price"] == "double precision" and columns["ticker"] == "character varying"
    # The rows went as Parquet through ADBC, not as INSERT statements.
    assert loaded_file_formats(EXPORT_PIPELINE, load_settings().pipelines_dir, "Dim_Stock_Metrics") == {"parquet"}


def _warehouse_with_mart(workdir, rows):
    db = workdir / "data" / "financial_etl.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE SCHEMA marts")
        con.execute(
            "CREATE TABLE marts.stock_metrics (ticker VARCHAR, trade_date DATE, open_price DOUBLE, high_price DOUBLE, "
            "low_price DOUBLE, close_price DOUBLE, volume BIGINT, "
            "sma_9_day DOUBLE, sma_20_day DOUBLE, sma_50_day DOUBLE, "
            "bollinger_upper DOUBLE, bollinger_lower DOUBLE, rsi_14_day DOUBLE, macd_line DOUBLE, atr_14_day DOUBLE, "
            "daily_return_pct DOUBLE, price_range_pct DOUBLE, volume_ratio DOUBLE, volume_sma_20 BIGINT)"
        )
        con.executemany(f"INSERT INTO marts.stock_metrics VALUES ({', '.join(['?'] * 19)})", rows)
    return load_settings()


def _row(ticker, day_, close, **overrides):
    values = dict(
        open_price=close,
        high_price=close + 1,
        low_price=close - 1,
        close_price=close,
        volume=100,
        sma_9_day=close,
        sma_20_day=close,
        sma_50_day=close,
        bollinger_upper=close + 2,
        bollinger_lower=close - 2,
        rsi_14_day=50.0,
        macd_line=0.1,
        atr_14_day=1.0,
        daily_return_pct=0.5,
        price_range_pct=2.0,
        volume_ratio=1.0,
        volume_sma_20=100,
    )
    values.update(overrides)
    return (ticker, day_, *values.values())


def test_an_empty_range_creates_the_table_then_rows_load_through_adbc(workdir, pg_env):
    # ADBC cannot ingest a Parquet file without rows: the empty first load goes as INSERT VALUES.
    settings = _warehouse_with_mart(workdir, [_row("AAA", dt.date(2024, 1, 2), 10.0)])
    target = export_target_for(settings)
    assert target.load_format == "parquet"
    assert load_export(settings, target, ranges=[(dt.date(2024, 1, 6), dt.date(2024, 1, 7))]).rows == 0
    assert pg_env.query('SELECT count(*) FROM dbo."Dim_Stock_Metrics"') == [(0,)]
    assert loaded_file_formats(EXPORT_PIPELINE, settings.pipelines_dir, target.table) == {"insert_values"}
    assert load_export(settings, target, ranges=[(dt.date(2024, 1, 1), dt.date(2024, 1, 31))]).rows == 1
    assert pg_env.query('SELECT ticker, close_price FROM dbo."Dim_Stock_Metrics"') == [("AAA", 10.0)]
    assert loaded_file_formats(EXPORT_PIPELINE, settings.pipelines_dir, target.table) == {"parquet"}


def test_nan_and_infinity_arrive_as_null(workdir, pg_env):
    rows = [
        _row("AAA", dt.date(2024, 1, 2), 10.0, daily_return_pct=float("nan"), volume_ratio=float("inf")),
        _row("AAA", dt.date(2024, 1, 3), 11.0, macd_line=float("-inf"), rsi_14_day=None),
    ]
    settings = _warehouse_with_mart(workdir, rows)
    target = export_target_for(settings)
    assert load_export(settings, target, ranges=[(dt.date(2024, 1, 1), dt.date(2024, 1, 31))]).rows == 2
    got = pg_env.query(
        'SELECT daily_return_pct, volume_ratio, macd_line, rsi_14_day FROM dbo."Dim_Stock_Metrics" ORDER BY trade_date'
    )
    assert got == [(None, None, 0.1, 50.0), (0.5, 1.0, None, None)]


@pytest.mark.slow
def test_a_full_refresh_is_atomic_for_a_concurrent_reader(workdir, pg_env):
    old = [_row("OLD", dt.date(2020, 1, 1) + dt.timedelta(days=i), 10.0 + i) for i in range(500)]
    settings = _warehouse_with_mart(workdir, old)
    target = export_target_for(settings)
    load_export(settings, target, ranges=None, full_refresh=True)
    with duckdb.connect(str(settings.duckdb_path)) as con:
        con.execute("DELETE FROM marts.stock_metrics")
        con.execute(
            "INSERT INTO marts.stock_metrics SELECT 'T' || (i % 100)::VARCHAR, DATE '2000-01-01' + (i // 100)::INT, "
            "1, 2, 0.5, 1.5, 10, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL "
            "FROM range(120000) t(i)"
        )
    seen, stop = set(), threading.Event()

    def reader():
        con = pg_env.connect()
        con.autocommit = True
        with con.cursor() as cur:
            while not stop.is_set():
                cur.execute('SELECT count(*) FROM dbo."Dim_Stock_Metrics"')
                seen.add(cur.fetchone()[0])
        con.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        assert load_export(settings, target, ranges=None, full_refresh=True).rows == 120000
    finally:
        time.sleep(0.2)
        stop.set()
        thread.join()
    assert seen <= {500, 120000}, sorted(seen)[:10]  # never empty, never partial
    assert 500 in seen and 120000 in seen
    assert pg_env.query("SELECT count(*) FROM dbo.\"Dim_Stock_Metrics\" WHERE ticker = 'OLD'") == [(0,)]


@pytest.mark.parametrize(
    ("url_change", "error"),
    [({"password": "wrong-password"}, LoginFailedError), ({"database": "no_such_db"}, MissingDatabaseError)],
)
def test_login_failure_and_missing_database_are_clear_and_never_show_the_password(workdir, pg_env, url_change, error):
    settings = _warehouse_with_mart(workdir, [_row("AAA", dt.date(2024, 1, 2), 10.0)])
    target = export_target_for(settings, env={"FINANCIAL_ETL_EXPORT_URL": pg_env.url(**url_change)})
    with pytest.raises(error) as excinfo:
        load_export(settings, target, ranges=[(dt.date(2024, 1, 1), dt.date(2024, 1, 31))])
    message = str(excinfo.value)
    assert "PostgreSQL 127.0.0.1" in message
    assert pg_env.password not in message and "wrong-password" not in message
    assert excinfo.value.exit_code == EXIT_CONNECTION


def test_an_unreachable_server_is_a_connection_error(workdir, clean_env):
    from financial_etl_tests.servers import free_port

    clean_env.setenv("FINANCIAL_ETL_EXPORT_URL", f"postgresql://etl:s3cret-pw@127.0.0.1:{free_port()}/financial_mart")
    settings = _warehouse_with_mart(workdir, [_row("AAA", dt.date(2024, 1, 2), 10.0)])
    with pytest.raises(DestinationUnreachableError) as excinfo:
        load_export(settings, export_target_for(settings), ranges=[(dt.date(2024, 1, 1), dt.date(2024, 1, 31))])
    assert "cannot reach PostgreSQL 127.0.0.1" in str(excinfo.value)
    assert "s3cret-pw" not in str(excinfo.value)


def _wait_for_staging_load(pg, timeout_s: float = 120) -> None:
    """Until dlt is writing rows into its staging table (the load is under way)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if pg.query(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE '%dbo_staging%' "
                "AND query NOT ILIKE '%pg_stat_activity%' AND query ~* '^\\s*(insert|copy)'"
            )[0][0]:
                return
        except Exception:
            pass
        time.sleep(0.02)
    raise AssertionError("the export never started loading")


@pytest.mark.slow
def test_a_server_killed_mid_load_fails_with_exit_4_leaves_the_target_and_reruns_cleanly(workdir, pg_env, clean_env):
    db = workdir / "data" / "financial_etl.duckdb"
    clean_env.setenv("FINANCIAL_ETL_TICKERS", ",".join(f"T{i:03d}" for i in range(80)))
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2022-01-03")
    assert main(["run", "--start", "2022-01-03", "--end", "2022-01-31"]) == EXIT_SUCCESS
    before = _target_rows(pg_env)
    assert before

    env = os.environ.copy()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "financial_etl.cli.main",
            "run",
            "--start",
            "2022-01-03",
            "--end",
            "2024-12-31",
            "--full-refresh",
            "--verbose",
        ],
        env=env,
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    killed = False
    for line in proc.stdout:
        output.append(line)
        if not killed and "exporting the whole mart" in line:
            _wait_for_staging_load(pg_env)
            pg_env.kill()
            killed = True
    proc.wait(timeout=600)
    text = "".join(output)
    assert killed, text[-2000:]
    assert proc.returncode == EXIT_CONNECTION, text[-3000:]
    assert "cannot reach PostgreSQL" in text
    assert pg_env.password not in text

    pg_env.start()
    assert _target_rows(pg_env) == before  # unchanged: no partial replace
    assert main(["run", "--start", "2022-01-03", "--end", "2024-12-31", "--full-refresh"]) == EXIT_SUCCESS
    after = _target_rows(pg_env)
    assert_same_rows(after, query(db, MART_ROWS), "re-run after the crash")
    assert len({(r[0], r[1]) for r in after}) == len(after)  # no duplicates
