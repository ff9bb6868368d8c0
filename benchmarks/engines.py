"""The warehouse on each engine (FINANCIAL_ETL_WAREHOUSE): raw loaded the pipeline's way,
SQLMesh's full refresh and one-day run of marts.stock_metrics on DuckDB, PostgreSQL and
Spark local[2]; then the export's full refresh to PostgreSQL per dlt loader file format
(INSERT VALUES, CSV through COPY, Parquet through ADBC), in one process."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import tempfile
from pathlib import Path

import pandas as pd
from sqlmesh import Context

from benchmarks.clock import Clock
from financial_etl.settings import SQLMESH_PROJECT_DIR, load_settings
from financial_etl.transform.sqlmesh_adapter import mesh_config
from financial_etl.warehouse import MART
from financial_etl.warehouse.engines import ENGINES, parse_warehouse
from financial_etl_tests.mesh import load_raw

EXPORT_FORMATS = {"insert_values": "INSERT VALUES", "csv": "CSV through COPY", "parquet": "Parquet through ADBC"}


def measure_engine(engine: str, setting: str | None, frame: pd.DataFrame, workdir: Path) -> dict:
    """Full refresh of all but the last session, then that session the way a daily run
    transforms it (a restatement of the day)."""
    folder = workdir / engine
    duckdb_path = folder / "data" / "financial_etl.duckdb"
    duckdb_path.parent.mkdir(parents=True)
    warehouse = parse_warehouse(setting, duckdb_path, SQLMESH_PROJECT_DIR)
    days = sorted(frame["date"].unique())
    last = days[-1]
    with Clock() as load:
        load_raw(warehouse, frame[frame["date"] < last], folder / "pipelines", replace=True)
    ctx = Context(
        paths=[str(SQLMESH_PROJECT_DIR)],
        config=mesh_config(
            str(SQLMESH_PROJECT_DIR), str(duckdb_path), days[0].isoformat(), warehouse=warehouse.setting()
        ),
    )
    with Clock() as full:
        ctx.plan("prod", auto_apply=True, no_prompts=True, skip_tests=True, execution_time=last.isoformat())
    rows = int(ctx.engine_adapter.fetchone(f"SELECT count(*) FROM {MART}")[0])
    with Clock() as day_load:
        published = load_raw(warehouse, frame[frame["date"] == last], folder / "pipelines", replace=False)
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
    ctx.close()
    return {
        "engine": engine,
        "warehouse": warehouse.describe(),
        "raw_load_s": load.wall,
        "full_refresh_s": full.wall,
        "full_refresh_rows": rows,
        "full_refresh_rows_per_s": rows / full.wall,
        "one_day_raw_load_s": day_load.wall,
        "one_day_lake_bytes": sum(p.bytes for p in published),  # Spark's: what the day moved to the lake
        "one_day_s": one_day.wall,
        "one_day_rows": day_rows,
        "one_day_vs_full": one_day.wall / full.wall,
        "duckdb_path": str(duckdb_path),
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


def measure(frame: pd.DataFrame, postgres, workdir: Path | None = None, engines=ENGINES, progress=print) -> dict:
    """`postgres`: a running server (financial_etl_tests.servers.start_postgres)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="bench_engines_"))
    settings = {"duckdb": None, "postgres": postgres.url(), "spark": "spark:local[2]"}
    results = []
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
    lines += [
        f"\n{r['engine']}: the one-day load published {r['one_day_lake_bytes']:,} bytes to the lake"
        for r in result["transform"]
        if r.get("one_day_lake_bytes")
    ]
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
