"""A full disk or a read-only data folder: a clear error naming the path (exit 5),
nothing already loaded lost, and a re-run that completes.

The faults are real: a file-size limit (RLIMIT_FSIZE, any user), a tmpfs that fills up
and a read-only bind mount (both in a private mount namespace, which needs root; the
tests skip where `unshare` is not allowed, except in CI, where they fail)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from financial_etl.errors import EXIT_STORAGE, EXIT_SUCCESS, StorageError
from financial_etl.warehouse.storage import check_writable, storage_errors, storage_problem
from financial_etl_tests.helpers import in_mount_namespace, query

CLI = str(Path(sys.executable).with_name("financial-etl"))
TICKERS = ",".join(f"S{i:02d}" for i in range(20))
FIRST = ("2024-01-02", "2024-06-28")
BIGGER = ("2023-01-03", "2024-06-28")
TABLES = {
    "raw": "SELECT * EXCLUDE (_dlt_load_id) FROM raw.eod_prices_raw ORDER BY ticker, date",
    "mart": "SELECT * FROM marts.stock_metrics ORDER BY ticker, trade_date",
}
EXPORT = 'SELECT * EXCLUDE (_dlt_load_id) FROM dbo."Dim_Stock_Metrics" ORDER BY ticker, trade_date'


def env_for(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
    env.update(
        FINANCIAL_ETL_DUCKDB_PATH=str(data / "financial_etl.duckdb"),
        FINANCIAL_ETL_TICKERS=TICKERS,
        FINANCIAL_ETL_START_DATE="2023-01-02",
    )
    return env


def run_cli(data: Path, dates, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [CLI, "run", "--start", dates[0], "--end", dates[1]],
        env=env_for(data),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def snapshot(data: Path) -> dict[str, list[tuple]]:
    db = data / "financial_etl.duckdb"
    tables = {name: query(db, sql) for name, sql in TABLES.items()}
    tables["export"] = query(data / "export.duckdb", EXPORT)
    return tables


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> tuple[Path, dict]:
    """A warehouse holding the first half of 2024, and what it holds."""
    data = tmp_path_factory.mktemp("loaded") / "data"
    done = run_cli(data, FIRST)
    assert done.returncode == EXIT_SUCCESS, done.stderr
    return data, snapshot(data)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict:
    """The same two runs, on a disk that never fills: what a repaired run must equal."""
    data = tmp_path_factory.mktemp("uninterrupted") / "data"
    for dates in (FIRST, BIGGER):
        done = run_cli(data, dates)
        assert done.returncode == EXIT_SUCCESS, done.stderr
    return snapshot(data)


def copy_of(loaded, tmp_path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(loaded[0], data, ignore=shutil.ignore_patterns("*.lock"))
    return data


@pytest.mark.slow
def test_a_file_size_limit_hit_mid_run_names_the_file_keeps_the_data_and_a_rerun_completes(
    loaded, uninterrupted, tmp_path
):
    data = copy_of(loaded, tmp_path)
    limit = 256 * 1024  # no file may grow past this: the larger load cannot fit

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    failed = run_cli(data, BIGGER, preexec_fn=limit_file_size)
    assert failed.returncode == EXIT_STORAGE, failed.stderr[-3000:]
    assert "File too large" in failed.stderr and str(data) in failed.stderr
    assert snapshot(data) == loaded[1]  # nothing loaded before is lost or half-written

    repaired = run_cli(data, BIGGER)
    assert repaired.returncode == EXIT_SUCCESS, repaired.stderr[-3000:]
    assert snapshot(data) == uninterrupted


@pytest.mark.slow
def test_a_disk_that_fills_up_mid_run_names_the_path_and_a_rerun_completes(loaded, uninterrupted, tmp_path):
    data = copy_of(loaded, tmp_path)
    used = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    mount, after = tmp_path / "small", tmp_path / "after"
    mount.mkdir()
    env = env_for(mount)
    exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k.startswith("FINANCIAL_ETL_"))
    script = f"""
        mount -t tmpfs -o size={used // 1024 + 768}k tmpfs {mount}
        cp -a {data}/. {mount}/
        set +e
        env {exports} {CLI} run --start {BIGGER[0]} --end {BIGGER[1]} > {tmp_path}/out.txt 2> {tmp_path}/err.txt
        echo $? > {tmp_path}/rc.txt
        df -k {mount} > {tmp_path}/df.txt
        set -e
        mkdir -p {after} && cp -a {mount}/. {after}/
    """
    done = in_mount_namespace(script)
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "err.txt").read_text()
    assert int((tmp_path / "rc.txt").read_text()) == EXIT_STORAGE, err[-3000:]
    assert "No space left on device" in err and str(mount) in err
    assert snapshot(after) == loaded[1]

    repaired = run_cli(after, BIGGER)
    assert repaired.returncode == EXIT_SUCCESS, repaired.stderr[-3000:]
    assert snapshot(after) == uninterrupted


@pytest.mark.slow
def test_a_read_only_data_folder_fails_before_the_run_naming_the_folder(loaded, tmp_path):
    data = copy_of(loaded, tmp_path)
    env = env_for(data)
    exports = " ".join(f"{k}={v!r}" for k, v in env.items() if k.startswith("FINANCIAL_ETL_"))
    script = f"""
        mount --bind {data} {data} && mount -o remount,bind,ro {data}
        set +e
        env {exports} {CLI} run --start {FIRST[0]} --end {FIRST[1]} 2> {tmp_path}/err.txt
        echo $? > {tmp_path}/rc.txt
    """
    done = in_mount_namespace(script)
    assert done.returncode == 0, done.stderr
    err = (tmp_path / "err.txt").read_text()
    assert int((tmp_path / "rc.txt").read_text()) == EXIT_STORAGE, err
    assert f"the folder {data} is not writable (Read-only file system)" in err
    assert "FINANCIAL_ETL_DUCKDB_PATH" in err and "Traceback" not in err
    assert snapshot(data) == loaded[1]


def test_check_writable_names_the_setting_and_the_folder(tmp_path, monkeypatch):
    target = tmp_path / "data"

    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system", str(target))

    monkeypatch.setattr("tempfile.NamedTemporaryFile", refuse)
    with pytest.raises(StorageError, match=rf"FINANCIAL_ETL_DUCKDB_PATH: the folder {target} is not writable"):
        check_writable(target, "FINANCIAL_ETL_DUCKDB_PATH")


def test_storage_problems_are_found_deep_in_wrapped_errors():
    import duckdb

    class Wrapper(Exception):
        def __init__(self, errors):
            super().__init__("Plan application failed.")
            self.errors = errors

    deep = duckdb.IOException('IO Error: Could not write file "/data/w.duckdb.wal": No space left on device')
    assert storage_problem(Wrapper([ValueError("x"), deep])) == "/data/w.duckdb.wal: No space left on device"
    assert (
        storage_problem(OSError(28, "No space left on device", "/data/x.parquet"))
        == "/data/x.parquet: No space left on device"
    )
    assert storage_problem(ValueError("a number is wrong")) is None
    with pytest.raises(StorageError, match="the extract could not write /data/x: File too large"):
        with storage_errors("the extract"):
            raise RuntimeError("boom") from OSError(27, "File too large", "/data/x")
    with pytest.raises(ValueError):  # anything else passes through untouched
        with storage_errors("the extract"):
            raise ValueError("not a disk problem")


def test_storage_problems_are_read_from_driver_codes_and_only_duckdb_by_its_text(tmp_path):
    import sqlite3

    # Text is read only from DuckDB's errors, which carry nothing else.
    assert storage_problem(RuntimeError('Could not write file "/data/x": No space left on device')) is None
    assert storage_problem(OSError("No space left on device")) is None  # an OSError without its errno
    # SQLite (Dagster's run storage) gives a result code: a real read-only database.
    db = tmp_path / "runs.db"
    sqlite3.connect(db).close()
    with pytest.raises(sqlite3.OperationalError) as refused:
        sqlite3.connect(f"file:{db}?mode=ro", uri=True).execute("CREATE TABLE t (x)")
    assert storage_problem(refused.value, tmp_path) == f"a file under {tmp_path}: attempt to write a readonly database"


def test_a_storage_failure_rolls_the_database_back_to_the_checkpoint_before_the_step(tmp_path):
    import duckdb

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    dropped = []
    with pytest.raises(StorageError, match=r"the step could not write /data/w.duckdb.wal: No space left on device"):
        with storage_errors("the step", db, on_failure=lambda: dropped.append(True)):
            con = duckdb.connect(str(db))
            con.execute("PRAGMA disable_checkpoint_on_shutdown")
            con.execute("DELETE FROM t")  # committed to the write-ahead log only
            con.close()
            assert (db.parent / "w.duckdb.wal").exists()
            raise duckdb.IOException('IO Error: Could not write file "/data/w.duckdb.wal": No space left on device')
    assert dropped == [True]
    assert query(db, "SELECT x FROM t") == [(1,)]


def test_other_failures_leave_the_database_alone(tmp_path):
    import duckdb

    db = tmp_path / "w.duckdb"
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE t AS SELECT 1 AS x")
    with pytest.raises(ValueError):
        with storage_errors("the step", db):
            with duckdb.connect(str(db)) as con:
                con.execute("DELETE FROM t")
            raise ValueError("a bug, not the disk")
    assert query(db, "SELECT count(*) FROM t") == [(0,)]
