"""Helpers shared by the tests (plain functions, no fixtures): settings as the CLI reads
them, Yahoo-format CSV files, queries on DuckDB files, a DuckDB file held by another
program, the files under a folder, and scripts run in a private mount namespace (Yahoo's
chart answers: financial_etl_tests/yahoo.py)."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import duckdb
import numpy as np
import pandas as pd
import pytest

from financial_etl.settings import load_settings

# The mart's columns in the order the README documents them: the export selects every
# column of the mart, so the target table promises the same ones.
MART_COLUMNS = (
    "ticker",
    "trade_date",
    "open_price",
    "high_price",
    "low_price",
    "close_price",
    "volume",
    "sma_9_day",
    "sma_20_day",
    "sma_50_day",
    "bollinger_upper",
    "bollinger_lower",
    "rsi_14_day",
    "macd_line",
    "atr_14_day",
    "daily_return_pct",
    "price_range_pct",
    "volume_ratio",
    "volume_sma_20",
    "ema_12",
    "ema_26",
    "macd",
    "macd_signal",
    "macd_histogram",
    "rsi_14_wilder",
    "atr_14_wilder",
    "wilder_avg_gain_14",
    "wilder_avg_loss_14",
    "trade_month",
)


def settings_for(**env: str):
    """Settings as `financial-etl` would read them with these variables set."""
    return load_settings({f"FINANCIAL_ETL_{k.upper()}": v for k, v in env.items()})


def write_yahoo_csv(path: Path, frame: pd.DataFrame, *, adj_close: bool = True) -> Path:
    """Write a long single-ticker frame (date, open..volume) as Yahoo's CSV download."""
    out = pd.DataFrame(
        {
            "Date": [d.isoformat() for d in frame["date"]],
            "Open": frame["open_price"],
            "High": frame["high_price"],
            "Low": frame["low_price"],
            "Close": frame["close_price"],
        }
    )
    if adj_close:
        out["Adj Close"] = frame["close_price"]
    out["Volume"] = frame["volume"].astype("int64")
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, index=False)
    return path


def query(db: Path, sql: str, params: Sequence | None = None) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql, params or []).fetchall()


def files_under(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below `root` with its size and modification time: equal before and
    after a command proves it wrote nothing there (no data, dlt state or Dagster storage)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@contextmanager
def held_open(db: Path) -> Iterator[int]:
    """A DuckDB file held open by another program (as a DuckDB shell would), for the
    block; yields that program's pid."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; con = duckdb.connect(sys.argv[1]); print('open', flush=True); time.sleep(600)",
            str(db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def day(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def assert_same_rows(got: Sequence[tuple], want: Sequence[tuple], label: str = "") -> None:
    """Row-for-row equal: keys, integers and NULLs exactly, floats within 1e-9 relative
    (windows summed over differently cut batches differ in the last bits)."""
    assert len(got) == len(want), f"{label}: {len(got)} rows vs {len(want)}"
    for a, b in zip(got, want, strict=True):
        assert len(a) == len(b), label
        for x, y in zip(a, b, strict=True):
            if isinstance(x, float) and isinstance(y, float):
                assert np.isclose(x, y, rtol=1e-9, atol=1e-12, equal_nan=True), f"{label}: {a[:2]} {x} != {y}"
            else:
                assert x == y, f"{label}: {a[:2]} {x!r} != {y!r}"


def loaded_file_formats(pipeline_name: str, pipelines_dir, table: str) -> set[str]:
    """The file formats (parquet, insert_values, ...) in which a dlt pipeline's last load
    sent `table`'s rows (a merge's SQL follow-up job sends none)."""
    import dlt

    info = dlt.attach(pipeline_name=pipeline_name, pipelines_dir=str(pipelines_dir)).last_trace.last_load_info
    return {
        job.job_file_info.file_format
        for package in info.load_packages
        for job in package.jobs["completed_jobs"]
        if job.job_file_info.table_name == table and job.job_file_info.file_format != "sql"
    }


def unavailable(reason: str) -> NoReturn:
    """Something a test needs is not on this machine: skip on a developer machine, fail in
    CI (CI set), whose README command installs everything."""
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


def in_mount_namespace(script: str) -> subprocess.CompletedProcess:
    """Run a bash script in a private mount namespace (its mounts vanish with it). Where
    that is not allowed (no root, no `unshare`) the test skips on a developer machine and
    fails in CI (CI set), which runs as root."""
    reason = None
    if shutil.which("unshare") is None:
        reason = "unshare is not installed"
    else:
        probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "true"], capture_output=True)
        if probe.returncode != 0:
            reason = f"private mount namespaces are not allowed here: {probe.stderr.decode().strip()}"
    if reason:
        unavailable(reason)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-euc", script],
        capture_output=True,
        text=True,
        timeout=900,
    )


def check_outcomes(dagster_home: Path) -> list[tuple[str, str, bool]]:
    """Every asset check evaluation the Dagster instance at `dagster_home` recorded, as
    (asset, check, passed), sorted."""
    from dagster import DagsterEventType, DagsterInstance, EventRecordsFilter

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        records = instance.get_event_records(EventRecordsFilter(DagsterEventType.ASSET_CHECK_EVALUATION))
        evaluations = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    return sorted((e.asset_key.to_user_string(), e.check_name, e.passed) for e in evaluations)
