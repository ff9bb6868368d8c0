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


def data_work(instance, run_id: str) -> dict:
    """The steps' data work in a run, and the events Dagster wrote for it. A step's data
    work runs from its STEP_START to its first asset materialization: the moment its code
    hands the results to Dagster (a check step, which materializes nothing, to its
    STEP_SUCCESS). What follows is Dagster recording the run's partitions."""
    import collections

    records = instance.all_logs(run_id)
    counts = collections.Counter(r.dagster_event.event_type_value for r in records if r.dagster_event)
    start, handed, success = {}, {}, {}
    for r in records:
        event = r.dagster_event
        if event is None or event.step_key is None:
            continue
        kind = event.event_type_value
        if kind == "STEP_START":
            start[event.step_key] = r.timestamp
        elif kind == "ASSET_MATERIALIZATION":
            handed.setdefault(event.step_key, r.timestamp)
        elif kind == "STEP_SUCCESS":
            success[event.step_key] = r.timestamp
    steps = {key: handed.get(key, success.get(key, start[key])) - start[key] for key in start}
    return {
        "events": dict(counts),
        "events_total": sum(counts.values()),
        "steps_data_work_s": steps,
        "data_work_s": sum(steps.values()),
    }


def dagster_home(path: Path) -> Path:
    """A persistent DAGSTER_HOME: the project's dagster.yaml, its relative folders
    resolved inside `path` (SQLite run, event and schedule storage, as a new user has)."""
    from financial_etl_tests.dagster_dev import instance_yaml

    path.mkdir(parents=True, exist_ok=True)
    (path / "dagster.yaml").write_text(instance_yaml(path))
    return path


def tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def pipeline_run(workdir: str, tickers: int, days: int, which: str) -> dict:
    """`which` = "full_refresh": the whole history but its last session, export replaced;
    "daily": then that last session, on top of it. Both on one persistent SQLite
    DAGSTER_HOME under `workdir`."""
    from dagster import DagsterInstance

    from benchmarks.universe import sessions
    from financial_etl.calendar import keys_in_window, year_partitions
    from financial_etl.cli.main import execute_range, quiet_libraries
    from financial_etl.runs import EXPORT_TAG, FULL_REFRESH
    from financial_etl.settings import load_settings

    workdir_path = Path(workdir)
    isolate_env(pipeline_env(workdir_path, tickers, days))
    home = dagster_home(workdir_path / "dagster_home")
    os.environ["DAGSTER_HOME"] = str(home)
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
    partitions = keys_in_window(year_partitions(settings.start_date), start, end)
    home_before = tree_bytes(home)
    with Clock() as clock:
        instance = DagsterInstance.get()
        result = execute_range(settings, start, end, instance=instance, tags=tags)
    if not result.success:
        raise RuntimeError(f"the {which} run failed: see the child log in {workdir}")
    steps = step_seconds(instance, result.run_id)
    stages = sum(steps.values())
    work = data_work(instance, result.run_id)
    return {
        "range": f"{start} to {end}",
        "partitions": len(partitions),
        "run_s": clock.wall,
        "run_cpu_s": clock.cpu,
        "steps_s": steps,
        "stages_s": stages,
        "overhead_s": clock.wall - stages,
        **work,
        "run_vs_data_work": clock.wall / work["data_work_s"],
        "dagster_home_growth_mb": (tree_bytes(home) - home_before) / 1e6,
    }
