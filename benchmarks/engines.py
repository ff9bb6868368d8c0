"""The warehouse on each engine (FINANCIAL_ETL_WAREHOUSE): raw loaded the pipeline's way,
SQLMesh's full refresh and one-day run of marts.stock_metrics on DuckDB, PostgreSQL,
Spark local[2] and a Spark standalone cluster (a master, one worker and a Hive metastore
service on loopback, SQLMesh's state in PostgreSQL); then the export's full refresh to
PostgreSQL per dlt loader file format (INSERT VALUES, CSV through COPY, Parquet through
ADBC), in one process. On Spark, also the bytes a one-day load publishes to Spark's lake,
in the middle of the history and at its end: flat in the history's length."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
from sqlmesh import Context

from benchmarks.clock import Clock
from financial_etl.settings import SQLMESH_PROJECT_DIR, load_settings
from financial_etl.transform.sqlmesh_adapter import mesh_config
from financial_etl.warehouse import MART
from financial_etl.warehouse.engines import parse_warehouse
from financial_etl_tests.mesh import load_raw

# issue targets for Spark on the cluster, on 2 cores
CLUSTER_TARGETS = {"full_refresh_s": (100, 45.0), "one_day_s": (None, 10.0)}  # (at tickers, at most s)
EXPORT_FORMATS = {"insert_values": "INSERT VALUES", "csv": "CSV through COPY", "parquet": "Parquet through ADBC"}


def published_bytes(published: list) -> int:
    return sum(p.bytes for p in published)


def measure_engine(engine: str, setting: tuple, frame: pd.DataFrame, workdir: Path) -> dict:
    """Full refresh of all but the last session, then that session the way a daily run
    transforms it (a restatement of the day). `setting`: FINANCIAL_ETL_WAREHOUSE, and on a
    cluster its metastore and SQLMesh's state. On Spark raw is loaded in three parts, the
    middle session alone, to measure what a one-day load publishes in mid-history."""
    folder = workdir / engine
    duckdb_path = folder / "data" / "financial_etl.duckdb"
    duckdb_path.parent.mkdir(parents=True)
    warehouse = parse_warehouse(setting[0], duckdb_path, SQLMESH_PROJECT_DIR, *setting[1:])
    days = sorted(frame["date"].unique())
    last, middle = days[-1], days[len(days) // 2]
    pipelines = folder / "pipelines"
    lake = {}
    with Clock() as load:
        if warehouse.engine == "spark":
            load_raw(warehouse, frame[frame["date"] < middle], pipelines, replace=True)
            lake["middle_day_bytes"] = published_bytes(
                load_raw(warehouse, frame[frame["date"] == middle], pipelines, replace=False)
            )
            lake["history_bytes"] = published_bytes(
                load_raw(warehouse, frame[(frame["date"] > middle) & (frame["date"] < last)], pipelines, replace=False)
            )
        else:
            load_raw(warehouse, frame[frame["date"] < last], pipelines, replace=True)
    ctx = Context(
        paths=[str(SQLMESH_PROJECT_DIR)],
        config=mesh_config(
            str(SQLMESH_PROJECT_DIR), str(duckdb_path), days[0].isoformat(), **warehouse.mesh_settings()
        ),
    )
    with Clock() as full:
        ctx.plan("prod", auto_apply=True, no_prompts=True, skip_tests=True, execution_time=last.isoformat())
    rows = int(ctx.engine_adapter.fetchone(f"SELECT count(*) FROM {MART}")[0])
    with Clock() as day_load:
        published = load_raw(warehouse, frame[frame["date"] == last], pipelines, replace=False)
    if warehouse.engine == "spark":
        lake["last_day_bytes"] = published_bytes(published)
    with Clock() as one_day:
        ctx.plan(
            "prod",
            auto_apply=True,
            no_prompts=True,
            skip_tests=True,
            restate_models=[MART],
            start=last.isoformat(),
            end=last.isoformat(),
            execution_time=(last + dt.timedelta(days=1)).isoformat(),
        )
    day_rows = int(
        ctx.engine_adapter.fetchone(f"SELECT count(*) FROM {MART} WHERE trade_date = DATE '{last.isoformat()}'")[0]
    )
    master = ctx.engine_adapter.spark.sparkContext.master if warehouse.engine == "spark" else None
    ctx.close()
    if master:
        # One SparkContext per process: the next Spark engine (local, then the cluster) needs its own.
        ctx.engine_adapter.spark.stop()
    return {
        "spark_master": master,
        "engine": engine,
        "warehouse": warehouse.describe(),
        "raw_load_s": load.wall,
        "full_refresh_s": full.wall,
        "full_refresh_rows": rows,
        "full_refresh_rows_per_s": rows / full.wall,
        "one_day_raw_load_s": day_load.wall,
        "one_day_s": one_day.wall,
        "one_day_rows": day_rows,
        "one_day_vs_full": one_day.wall / full.wall,
        "duckdb_path": str(duckdb_path),
        **lake,
    }


def measure_exports(duckdb_path: Path, export_url: str) -> list[dict]:
    """The mart in the DuckDB warehouse at `duckdb_path`, fully refreshed into PostgreSQL
    once per loader file format."""
    from financial_etl.export.assets import EXPORT_PIPELINE, load_export
    from financial_etl.export.destination import export_target_for
    from financial_etl_tests.helpers import loaded_file_formats

    settings = load_settings({**os.environ, "FINANCIAL_ETL_DUCKDB_PATH": str(duckdb_path)})
    target = export_target_for(settings, env={"FINANCIAL_ETL_EXPORT_URL": export_url})
    results = []
    for fmt, label in EXPORT_FORMATS.items():
        with Clock() as clock:
            rows = load_export(
                settings, dataclasses.replace(target, load_format=fmt), ranges=None, full_refresh=True
            ).rows
        loaded_as = loaded_file_formats(EXPORT_PIPELINE, settings.pipelines_dir, target.table)
        assert loaded_as == {fmt}, f"asked for {fmt}, dlt loaded {loaded_as}"
        results.append(
            {"format": fmt, "label": label, "rows": rows, "seconds": clock.wall, "rows_per_s": rows / clock.wall}
        )
    return results


ENGINES = ("duckdb", "postgres", "spark", "spark-cluster")


def measure(frame: pd.DataFrame, postgres, workdir: Path | None = None, engines=ENGINES, progress=print) -> dict:
    """`postgres`: a running server (financial_etl_tests.servers.start_postgres)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_engines_"))
    settings = {"duckdb": (None,), "postgres": (postgres.url(),), "spark": ("spark:local[2]",)}
    results = []
    with ExitStack() as stack:
        if "spark-cluster" in engines:
            from financial_etl_tests.spark_cluster import start_spark_cluster

            progress("starting a Spark master, worker and metastore service")
            cluster = start_spark_cluster(postgres, workdir / "cluster")
            stack.callback(cluster.stop)
            state = dataclasses.replace(postgres, database="sqlmesh_state")
            state.reset_database()
            settings["spark-cluster"] = (cluster.master_url, cluster.metastore_uri, state.url())
        for engine in engines:
            progress(f"transform on {engine}")
            results.append(measure_engine(engine, settings[engine], frame, workdir))
    duckdb_run = next((r for r in results if r["engine"] == "duckdb"), None)
    exports = []
    if duckdb_run:
        progress("export to PostgreSQL per loader format")
        exports = measure_exports(Path(duckdb_run["duckdb_path"]), postgres.url())
    return {"transform": results, "export": exports}


def markdown(result: dict) -> str:
    lines = [
        f"Warehouse engines, {result['tickers']} tickers x {result['days']:,} days, on {result['machine']}",
        "",
        "| engine | raw load (pipeline's path) | full refresh | rows/s | one-day run | one-day vs full |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["transform"]:
        lines.append(
            f"| {r['engine']} | {r['raw_load_s']:.1f} s | {r['full_refresh_s']:.1f} s "
            f"({r['full_refresh_rows']:,} rows) | {r['full_refresh_rows_per_s']:,.0f} | "
            f"{r['one_day_s']:.2f} s ({r['one_day_rows']} rows) | {100 * r['one_day_vs_full']:.0f}% |"
        )
    spark = [r for r in result["transform"] if "last_day_bytes" in r]
    if spark:
        lines += [
            "",
            "Bytes a one-day load publishes to Spark's lake (the changed month's Parquet file), against the "
            "whole history's publish:",
            "",
            "| engine | one day, mid-history | one day, at the end | history's publish |",
            "|---|---|---|---|",
        ]
        for r in spark:
            sizes = (r["middle_day_bytes"], r["last_day_bytes"], r["history_bytes"])
            lines.append(f"| {r['engine']} | " + " | ".join(f"{n:,} B" for n in sizes) + " |")
    for r in result["transform"]:
        if r["engine"] == "spark-cluster":
            for key, (tickers, limit) in CLUSTER_TARGETS.items():
                if tickers in (None, result["tickers"]):
                    met = "met" if r[key] <= limit else "NOT met"
                    lines.append(f"\nTarget on the cluster: {key} at most {limit:.0f} s: {r[key]:.1f} s, {met}.")
    lines += [
        "",
        "Export full refresh to PostgreSQL (dlt, atomic replace), per loader file format:",
        "",
        "| loader format | rows | time | rows/s |",
        "|---|---|---|---|",
    ]
    for e in result["export"]:
        lines.append(f"| {e['label']} | {e['rows']:,} | {e['seconds']:.1f} s | {e['rows_per_s']:,.0f} |")
    return "\n".join(lines) + "\n"
