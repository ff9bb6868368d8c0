"""History benchmark: one ticker's 8.5-year history (2004-08-19 to 2013-03-01, 2,227
weekdays) through the csv source and `financial-etl run`, as a new user runs it: a
persistent DAGSTER_HOME (the project's dagster.yaml, SQLite storage), a fresh process.

It reports the run's wall time, how much DAGSTER_HOME grew, the events Dagster wrote,
and the steps' data work: for each step, from its STEP_START to its first asset
materialization (the moment the step's code hands its results to Dagster; a check step,
which materializes nothing, to its STEP_SUCCESS). What comes after that is Dagster
recording the partitions. Targets: wall at most 2x data work + 10 s, DAGSTER_HOME
growth at most 20 MB. Then the next session runs as a daily run on top of the history.

`--before REV` measures that git revision too, in a temporary worktree (the same
environment, its own code), so both figures come from one run on one machine.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.orchestration import dagster_home, data_work, step_seconds, tree_bytes

REPO = Path(__file__).resolve().parent.parent
TICKER = "HIST"
START, END = dt.date(2004, 8, 19), dt.date(2013, 3, 1)
DAILY = dt.date(2013, 3, 4)  # the next session: the daily run on top of the history
WALL_FACTOR, WALL_SLACK_S, GROWTH_LIMIT_MB = 2.0, 10.0, 20.0


def write_history_csv(csv_dir: Path) -> int:
    from financial_etl.extract.sources.synthetic import fetch_synthetic
    from financial_etl_tests.helpers import write_yahoo_csv

    frame = fetch_synthetic([TICKER], START, DAILY).frame
    write_yahoo_csv(csv_dir / f"{TICKER}.csv", frame)
    return len(frame)


def newest_run_work(home: Path) -> dict:
    """Event counts and the steps' data work of the newest run stored in `home`."""
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        (run,) = instance.get_runs(limit=1)
        steps = step_seconds(instance, run.run_id)
        return {"run_success": run.is_success, **data_work(instance, run.run_id), "steps_total_s": sum(steps.values())}


def cli_module(code: Path) -> str:
    """The module behind `financial-etl` in the package found in `code`: financial_etl.cli.main,
    or financial_etl.cli in revisions from before the package was organized by stage."""
    return "financial_etl.cli.main" if (code / "financial_etl" / "cli" / "main.py").is_file() else "financial_etl.cli"


def cli_run(env: dict, cwd: Path, start: dt.date, end: dt.date) -> float:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            cli_module(Path(env["PYTHONPATH"])),
            "run",
            "--start",
            start.isoformat(),
            "--end",
            end.isoformat(),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"financial-etl run failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - started


def measure(code: Path, base: Path, csv_dir: Path) -> dict:
    """One `financial-etl run` of the history with the package found in `code`, then the
    next session's daily run on top of it, on the same DAGSTER_HOME."""
    home = dagster_home(base / "dagster_home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FINANCIAL_ETL_", "DESTINATION__"))}
    env.update(
        {
            "PYTHONPATH": str(code),
            "DAGSTER_HOME": str(home),
            "FINANCIAL_ETL_SOURCE": "csv",
            "FINANCIAL_ETL_CSV_DIR": str(csv_dir),
            "FINANCIAL_ETL_TICKERS": TICKER,
            "FINANCIAL_ETL_START_DATE": START.isoformat(),
            "FINANCIAL_ETL_DUCKDB_PATH": str(base / "data" / "financial_etl.duckdb"),
        }
    )
    before = tree_bytes(home)
    wall = cli_run(env, base, START, END)
    growth_mb = (tree_bytes(home) - before) / 1e6
    work = newest_run_work(home)
    daily_wall = cli_run(env, base, DAILY, DAILY)
    daily = newest_run_work(home)
    return {
        "wall_s": wall,
        "dagster_home_growth_mb": growth_mb,
        **work,
        "wall_limit_s": WALL_FACTOR * work["data_work_s"] + WALL_SLACK_S,
        "wall_met": wall <= WALL_FACTOR * work["data_work_s"] + WALL_SLACK_S,
        "growth_met": growth_mb <= GROWTH_LIMIT_MB,
        "daily_wall_s": daily_wall,
        "daily_data_work_s": daily["data_work_s"],
        "daily_events_total": daily["events_total"],
    }


def run(before_rev: str | None, out: Path, progress=print) -> dict:
    from benchmarks.machine import machine

    base = Path(tempfile.mkdtemp(prefix="bench_history_"))
    csv_dir = base / "csv"
    rows = write_history_csv(csv_dir) - 1  # the history's rows; the last is the daily run's
    result: dict = {
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ticker_rows": rows,
        "range": f"{START} to {END}",
        "weekdays": sum(1 for n in range((END - START).days + 1) if (START + dt.timedelta(days=n)).weekday() < 5),
        "versions": {},
    }
    worktree = None
    try:
        versions = [("after", REPO)]
        if before_rev:
            worktree = base / "before_code"
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "add", "--detach", str(worktree), before_rev],
                check=True,
                capture_output=True,
            )
            versions.insert(0, (f"before ({before_rev})", worktree))
        for label, code in versions:
            progress(f"history run: {label}")
            result["versions"][label] = measure(code, base / label.split()[0], csv_dir)
    finally:
        if worktree is not None:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)], capture_output=True
            )
        shutil.rmtree(base, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "history.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "history.md").write_text(markdown(result))
    return result


def markdown(result: dict) -> str:
    lines = [
        f"One ticker, {result['range']} ({result['ticker_rows']:,} rows, {result['weekdays']:,} weekdays), csv source, "
        f"`financial-etl run` with a persistent SQLite DAGSTER_HOME, on {result['machine']}; then the next session "
        f"({DAILY}) as a daily run on top",
        "",
        "| code | history run | steps' data work | limit (2x work + 10 s) | DAGSTER_HOME growth | events written "
        "| materializations | met | daily run on top (its data work) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, v in result["versions"].items():
        met = "met" if v["wall_met"] and v["growth_met"] else "MISSED"
        lines.append(
            f"| {label} | {v['wall_s']:.1f} s | {v['data_work_s']:.1f} s | {v['wall_limit_s']:.1f} s | "
            f"{v['dagster_home_growth_mb']:.1f} MB | {v['events_total']:,} | "
            f"{v['events'].get('ASSET_MATERIALIZATION', 0):,} | {met} "
            f"| {v['daily_wall_s']:.1f} s ({v['daily_data_work_s']:.1f} s) |"
        )
    versions = list(result["versions"].values())
    if len(versions) == 2:
        ratio = versions[1]["daily_wall_s"] / versions[0]["daily_wall_s"]
        lines += ["", f"Daily run, after ÷ before: {ratio:.2f}."]
    return "\n".join(lines) + "\n"
