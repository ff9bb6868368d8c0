"""Export stage: full refresh of the mart to a dlt target (PostgreSQL, the same dlt path
as SQL Server, or the local DuckDB stand-in) and one-day merges on top of it, in one process."""

from __future__ import annotations

import os
import statistics
import tempfile
from pathlib import Path

import duckdb
import pandas as pd

from benchmarks.clock import Clock
from financial_etl.export.assets import load_export
from financial_etl.export.destination import export_target_for
from financial_etl.settings import load_settings
from financial_etl.transform.sqlmesh_adapter import model_columns
from financial_etl.warehouse import MART, MART_SCHEMA


def write_mart(db: Path, frame: pd.DataFrame, columns: list[str], append: bool = False) -> None:
    """The mart (marts.stock_metrics) with the model's `columns` (indicator values derived
    from close); `append` adds the frame's rows to the table instead of replacing it."""
    extra = [c for c in columns if c not in frame.columns and c not in ("trade_date", "volume_sma_20")]
    select = ", ".join(
        ["ticker", "date AS trade_date", "open_price", "high_price", "low_price", "close_price", "volume"]
        + [f"close_price * {1 + i / 100} AS {c}" for i, c in enumerate(extra)]
        + ["volume AS volume_sma_20"]
    )
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {MART_SCHEMA}")
        if append:
            con.execute(f"INSERT INTO {MART} SELECT {select} FROM frame")
        else:
            con.execute(f"CREATE OR REPLACE TABLE {MART} AS SELECT {select} FROM frame")


def measure(frame: pd.DataFrame, export_url: str, workdir: Path | None = None, daily_days: int = 3) -> dict:
    """Full refresh of the mart but its last `daily_days` sessions, then each of those
    sessions added to the mart and merged on its own, as a daily run does."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_export_"))
    db = workdir / "data" / "financial_etl.duckdb"
    db.parent.mkdir(parents=True, exist_ok=True)
    days = sorted(frame["date"].unique())
    held_back = days[-daily_days:]
    columns = model_columns(load_settings({}), MART)
    write_mart(db, frame[frame["date"] < held_back[0]], columns)
    env = {"FINANCIAL_ETL_DUCKDB_PATH": str(db), "FINANCIAL_ETL_TICKERS": "AAA"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        settings = load_settings()
        target = export_target_for(settings, env={"FINANCIAL_ETL_EXPORT_URL": export_url})
        with Clock() as full_clock:
            rows = load_export(settings, target, ranges=None, full_refresh=True).rows
        full = full_clock.wall
        merges = []
        for day in held_back:
            write_mart(db, frame[frame["date"] == day], columns, append=True)
            with Clock() as merge:
                day_rows = load_export(settings, target, ranges=[(day, day)]).rows
            merges.append(merge.wall)
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    one_day = statistics.median(merges)
    return {
        "target_kind": target.kind,
        "rows": rows,
        "full_refresh_s": full,
        "full_refresh_cpu_s": full_clock.cpu,
        "rows_per_s": rows / full,
        "one_day_rows": day_rows,
        "one_day_merge_s": one_day,
        "one_day_merge_runs_s": merges,
        "one_day_vs_full": one_day / full,
    }
