"""Dagster stage: how long the definitions take to load, and whole runs of the daily job
in process (as `financial-etl run` executes them), split into the steps' own time and
Dagster's overhead around them.

Each function here runs in a fresh child process (see benchmarks.scale), so imports are
cold and the process's peak RSS is the run's own.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from benchmarks.clock import Clock

# Imported by the definitions: none may be loaded before the load is timed.
HEAVY_MODULES = ("pandas", "pyarrow", "duckdb", "dagster", "dlt", "sqlmesh")


def definitions_load(env: dict[str, str]) -> dict:
    """Import `financial_etl.definitions`, then resolve its Definitions the way Dagster's
    loader does (call the lazy `defs`, build the repository, resolve every job)."""
    isolate_env(env)
    preloaded = [name for name in HEAVY_MODULES if name in sys.modules]
    started = time.perf_counter()
    import financial_etl.definitions as module

    imported = time.perf_counter()
    defs = module.defs()
    built = time.perf_counter()
    repository = defs.get_repository_def()
    jobs = repository.get_all_jobs()
    resolved = time.perf_counter()
    return {
        "import_s": imported - started,
        "build_s": built - imported,
        "resolve_s": resolved - built,
        "total_s": resolved - started,
        "jobs": sorted(job.name for job in jobs),
        "preloaded_modules": preloaded,
    }


def pipeline_env(workdir: Path, tickers: int, days: int) -> dict[str, str]:
    """FINANCIAL_ETL_* for the synthetic source over the universe's tickers and sessions,
    every file under `workdir`, the export going to the local DuckDB stand-in."""
    from benchmarks.universe import sessions

    all_sessions = sessions(days)
    return {
        "FINANCIAL_ETL_SOURCE": "synthetic",
        "FINANCIAL_ETL_TICKERS": ",".join(f"T{i:04d}" for i in range(tickers)),
        "FINANCIAL_ETL_START_DATE": all_sessions[0].isoformat(),
        "FINANCIAL_ETL_END_DATE": all_sessions[-1].isoformat(),
        "FINANCIAL_ETL_DUCKDB_PATH": str(workdir / "data" / "financial_etl.duckdb"),
    }


def isolate_env(env: dict[str, str]) -> None:
    """Only these settings: no SQL Server, export URL or Dagster home of the caller."""
    for key in list(os.environ):
        if key.startswith("FINANCIAL_ETL_") or key == "DAGSTER_HOME" or key.startswith("DESTINATION__"):
            del os.environ[key]
    os.environ.update(env)


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Each step's duration, from its STEP_START to its STEP_SUCCESS event."""
    return {
        stats.step_key: stats.end_time - stats.start_time
        for stats in instance.get_run_step_stats(run_id)
        if stats.start_time is not None and stats.end_time is not None
    }


def pipeline_run(workdir: str, tickers: int, days: int, which: str) -> dict:
    """`which` = "full_refresh": the whole history but its last session, export replaced;
    "daily": then that last session as one partition, on top of it."""
    from dagster import DagsterInstance

    from financial_etl.assets.export import EXPORT_TAG, FULL_REFRESH
    from financial_etl.cli import execute_range, quiet_libraries
    from financial_etl.partitions import key_range_for_dates, trading_day_partitions
    from financial_etl.settings import load_settings

    from benchmarks.universe import sessions

    workdir_path = Path(workdir)
    isolate_env(pipeline_env(workdir_path, tickers, days))
    os.chdir(workdir_path)  # no credentials.json or .dlt/ of the caller is picked up
    quiet_libraries()
    all_sessions = sessions(days)
    if which == "full_refresh":
        start, end, tags = all_sessions[0], all_sessions[-2], {EXPORT_TAG: FULL_REFRESH}
    else:
        start = end = all_sessions[-1]
        tags = None
    settings = load_settings()
    # Dagster records each partition of a range run: its cost grows with this count.
    partitions = trading_day_partitions(settings.start_date).get_partition_keys_in_range(
        key_range_for_dates(trading_day_partitions(settings.start_date), start, end))
    instance = DagsterInstance.ephemeral()
    with Clock() as clock:
        result = execute_range(settings, start, end, instance=instance, tags=tags)
    if not result.success:
        raise RuntimeError(f"the {which} run failed: see the child log in {workdir}")
    steps = step_seconds(instance, result.run_id)
    stages = sum(steps.values())
    return {
        "range": f"{start} to {end}",
        "partitions": len(partitions),
        "run_s": clock.wall,
        "run_cpu_s": clock.cpu,
        "steps_s": steps,
        "stages_s": stages,
        "overhead_s": clock.wall - stages,
    }
