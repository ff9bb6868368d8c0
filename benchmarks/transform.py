"""Transform stage: SQLMesh full refresh and one-day incremental run of marts.stock_metrics,
against a bare DuckDB query computing the same window aggregates, in one process."""

from __future__ import annotations

import datetime as dt
import shutil
import statistics
import tempfile
from pathlib import Path

import duckdb
import pandas as pd
from sqlmesh import Context

from benchmarks.clock import Clock
from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.transform.sqlmesh_adapter import mesh_config, prod_matches_project
from financial_etl.warehouse import MART, RAW, RAW_DATASET

MODEL = MART  # the SQLMesh model's name is the mart's table

# The same window aggregates as the model, over the whole table, with no SQLMesh and no
# lookback machinery: the floor a full refresh is measured against.
BARE_QUERY = f"""
CREATE OR REPLACE TABLE bare_metrics AS
WITH s AS (
  SELECT *, LAG(close_price) OVER (PARTITION BY ticker ORDER BY date) AS prev_close
  FROM {RAW}
), t AS (
  SELECT *, close_price - prev_close AS change,
    GREATEST(close_price - prev_close, 0) AS gain, GREATEST(prev_close - close_price, 0) AS loss,
    CASE WHEN prev_close IS NOT NULL
      THEN GREATEST(high_price - low_price, ABS(high_price - prev_close), ABS(low_price - prev_close)) END AS tr
  FROM s
)
SELECT ticker, date AS trade_date, open_price, high_price, low_price, close_price, volume,
  AVG(close_price) OVER w9 AS sma_9_day, AVG(close_price) OVER w20 AS sma_20_day,
  AVG(close_price) OVER w50 AS sma_50_day, STDDEV_POP(close_price) OVER w20 AS sd20,
  AVG(gain) OVER w14 AS g14, AVG(loss) OVER w14 AS l14,
  AVG(close_price) OVER w12 - AVG(close_price) OVER w26 AS macd_line,
  AVG(tr) OVER w14 AS atr_14_day, (close_price - prev_close) / prev_close * 100 AS daily_return_pct,
  (high_price - low_price) / close_price * 100 AS price_range_pct, AVG(volume) OVER w20 AS volume_sma_20
FROM t
WINDOW
  w9 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 8 PRECEDING AND CURRENT ROW),
  w12 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 11 PRECEDING AND CURRENT ROW),
  w14 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 13 PRECEDING AND CURRENT ROW),
  w20 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 19 PRECEDING AND CURRENT ROW),
  w26 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 25 PRECEDING AND CURRENT ROW),
  w50 AS (PARTITION BY ticker ORDER BY date ROWS BETWEEN 49 PRECEDING AND CURRENT ROW)
"""


def write_raw(db: Path, frame: pd.DataFrame) -> None:
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_DATASET}")
        con.execute(f"CREATE OR REPLACE TABLE {RAW} AS SELECT * FROM frame ORDER BY date, ticker")


def timed(fn) -> float:
    with Clock() as clock:
        fn()
    return clock.wall


def measure(frame: pd.DataFrame, workdir: Path | None = None, daily_days: int = 3, repeats: int = 3) -> dict:
    """Full refresh of all but the last `daily_days` sessions, then those sessions one
    day at a time, each the way the pipeline runs a daily partition. The bare query and
    the full refresh alternate `repeats` times (each refresh on a fresh copy of the raw
    table), so a noisy neighbour on a shared machine slows both; the ratio is their
    medians'."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_transform_"))
    days = sorted(frame["date"].unique())
    held_back, first_day = days[-daily_days:], days[0]
    history = frame[frame["date"] < held_back[0]]
    raw_only = workdir / "history.duckdb"
    write_raw(raw_only, history)

    bares, fulls, full_cpus = [], [], []
    ctx = None
    for attempt in range(repeats):
        with duckdb.connect(str(raw_only)) as con:
            bares.append(timed(lambda: con.execute(BARE_QUERY)))
            con.execute("DROP TABLE bare_metrics")
        db = workdir / f"w{attempt}.duckdb"
        shutil.copyfile(raw_only, db)
        if ctx is not None:
            ctx.close()
        ctx = Context(
            paths=[str(SQLMESH_PROJECT_DIR)],
            config=mesh_config(str(SQLMESH_PROJECT_DIR), str(db), first_day.isoformat()),
        )
        with Clock() as full_clock:
            ctx.plan(
                "prod",
                auto_apply=True,
                no_prompts=True,
                skip_tests=True,
                execution_time=held_back[0].isoformat(),
            )
        fulls.append(full_clock.wall)
        full_cpus.append(full_clock.cpu)
    bare, full = statistics.median(bares), statistics.median(fulls)
    rows = ctx.engine_adapter.fetchone(f"SELECT count(*) FROM {MART}")[0]

    def deploy_check(day: dt.date) -> None:
        # run_range's first step: is prod current? (It is here, so no deploying plan.)
        assert prod_matches_project(ctx)

    def incremental(day: dt.date) -> None:
        # run_range's second step, the incremental run itself: restate the day.
        ctx.plan(
            "prod",
            auto_apply=True,
            no_prompts=True,
            skip_tests=True,
            restate_models=[MODEL],
            start=day.isoformat(),
            end=day.isoformat(),
            execution_time=(day + dt.timedelta(days=1)).isoformat(),
        )

    checks, incrementals = [], []
    for day in held_back:
        day_rows = frame[frame["date"] == day]  # noqa: F841  # DuckDB reads it by name
        ctx.engine_adapter.cursor.execute(f"INSERT INTO {RAW} SELECT * FROM day_rows")
        checks.append(timed(lambda day=day: deploy_check(day)))
        incrementals.append(timed(lambda day=day: incremental(day)))
    written = ctx.engine_adapter.fetchone(
        f"SELECT count(*) FROM {MART} WHERE trade_date = DATE '{held_back[-1].isoformat()}'"
    )[0]
    ctx.close()
    one_day = statistics.median(incrementals)
    daily_step = statistics.median(c + i for c, i in zip(checks, incrementals, strict=True))
    return {
        "rows": int(rows),
        "bare_duckdb_s": bare,
        "bare_duckdb_runs_s": bares,
        "full_refresh_s": full,
        "full_refresh_runs_s": fulls,
        "full_refresh_cpu_s": statistics.median(full_cpus),
        "full_vs_bare": full / bare,
        "one_day_s": one_day,
        "one_day_runs_s": incrementals,
        "one_day_rows": int(written),
        "one_day_vs_full": one_day / full,
        "daily_step_s": daily_step,
        "daily_step_vs_full": daily_step / full,
    }
