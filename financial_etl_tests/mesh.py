"""Helpers that run the SQLMesh project directly on a DuckDB file, without Dagster."""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

import duckdb
import pandas as pd
from sqlmesh import Context

from financial_etl.extract.contract import RAW_SCHEMA
from financial_etl.extract.sources.synthetic import fetch_synthetic
from financial_etl.settings import SQLMESH_PROJECT_DIR
from financial_etl.transform.sqlmesh_adapter import mesh_config
from financial_etl.warehouse import MART, RAW, RAW_DATASET, RAW_TABLE

MODEL = MART


def write_raw(db: Path, frame: pd.DataFrame) -> None:
    """raw.eod_prices_raw as the extract writes it (the dlt columns are not needed)."""
    db.parent.mkdir(parents=True, exist_ok=True)
    prices = frame[list(RAW_SCHEMA.names)]  # noqa: F841  # DuckDB reads it by name
    with duckdb.connect(str(db)) as con:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {RAW_DATASET}")
        con.execute(f"CREATE OR REPLACE TABLE {RAW} AS SELECT * FROM prices")


def load_raw(warehouse, frame: pd.DataFrame, pipelines_dir: Path, replace: bool) -> list:
    """raw.eod_prices_raw loaded the extract's way on any warehouse: to the extract's dlt
    destination in its file format; for Spark, then published to Parquet (what the publish
    wrote is returned: warehouse/lake.py's Published)."""
    import dlt
    import pyarrow as pa

    from financial_etl.extract.assets import raw_destination, raw_file_format
    from financial_etl.warehouse.lake import publish_raw

    pipeline = dlt.pipeline(
        pipeline_name=f"raw_{warehouse.engine}",
        destination=raw_destination(warehouse),
        dataset_name=RAW_DATASET,
        pipelines_dir=str(pipelines_dir),
    )
    file_format = raw_file_format(warehouse)
    table = pa.Table.from_pandas(frame[list(RAW_SCHEMA.names)], schema=RAW_SCHEMA, preserve_index=False)
    pipeline.run(
        table,
        table_name=RAW_TABLE,
        write_disposition="replace" if replace else "append",
        **({"loader_file_format": file_format} if file_format else {}),
    ).raise_on_failed_jobs()
    return publish_raw(warehouse) if warehouse.engine == "spark" else []


def project_copy(dest: Path, *, batch_size: int | None = None, audits: bool = True) -> Path:
    """A copy of the SQLMesh project, optionally cutting backfills into batches of N days,
    or without the model's audits (when only the computed values are under test)."""
    shutil.copytree(SQLMESH_PROJECT_DIR, dest, ignore=shutil.ignore_patterns("logs", ".cache", "__pycache__"))
    if batch_size:
        model = dest / "models" / "marts" / "stock_metrics.sql"
        text = model.read_text()
        text, n = re.subn(
            r"time_column trade_date", f"time_column trade_date,\n    batch_size {batch_size}", text, count=1
        )
        assert n == 1
        model.write_text(text)
    if not audits:
        model = dest / "models" / "marts" / "stock_metrics.sql"
        text, n = re.subn(r"\n  audits \(.*?\n  \)\n", "\n", model.read_text(), count=1, flags=re.S)
        assert n == 1
        model.write_text(text)
    return dest


def context(db: Path, start: dt.date, project: Path = SQLMESH_PROJECT_DIR) -> Context:
    return Context(paths=[str(project)], config=mesh_config(str(project), str(db), start.isoformat()))


def plan_prod(ctx: Context, until: dt.date, **kwargs) -> None:
    execution_time = (until + dt.timedelta(days=1)).isoformat()
    ctx.plan("prod", auto_apply=True, no_prompts=True, execution_time=execution_time, **kwargs)


def restate(ctx: Context, start: dt.date, end: dt.date) -> None:
    plan_prod(ctx, end, restate_models=[MODEL], start=start.isoformat(), end=end.isoformat())


def mart(db: Path) -> pd.DataFrame:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(f"SELECT * FROM {MART} ORDER BY ticker, trade_date").df()


def full_plan(
    db: Path, prices: pd.DataFrame, start: dt.date, end: dt.date, project: Path = SQLMESH_PROJECT_DIR
) -> pd.DataFrame:
    """The mart after one prod plan over `prices` from `start` to `end`."""
    write_raw(db, prices)
    ctx = context(db, start, project)
    plan_prod(ctx, end)
    ctx.close()
    return mart(db)


def history_with_gaps(start: dt.date, end: dt.date) -> pd.DataFrame:
    """Four tickers of exchange sessions, with the irregularities real history has:
    HALT stops trading for three months mid-history, LATE lists a year after the others,
    and SPARSE misses every seventh session."""
    frame = fetch_synthetic(["FULL", "HALT", "LATE", "SPARSE"], start, end).frame
    halted = (frame.ticker == "HALT") & (frame.date >= dt.date(2022, 6, 1)) & (frame.date <= dt.date(2022, 8, 31))
    late = (frame.ticker == "LATE") & (frame.date < dt.date(start.year + 1, 3, 1))
    sparse = frame.ticker == "SPARSE"
    sparse_drop = sparse & (frame.groupby("ticker").cumcount() % 7 == 3)
    return frame[~(halted | late | sparse_drop)].reset_index(drop=True)
