"""Memory benchmark: `financial-etl run` at a large universe, as an operator runs it.

`python -m benchmarks memory --tickers 5000 --histories 1500,6500`: for each history
length H, on a fresh warehouse, the full refresh of the first H sessions
(`financial-etl run --full-refresh`), then the daily run of session H + 1 on top of it.
Every run is the real CLI in a fresh process (synthetic source, DuckDB warehouse, the
local export stand-in, a persistent SQLite DAGSTER_HOME). Its peak RSS is the larger of
the process's own high-water mark (wait4's ru_maxrss, what `time -v` reports) and the
highest sum of PSS over the process and its children, polled every POLL_S seconds.

Results: memory.json and memory.md (tables and targets).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

TICKERS = 5000
HISTORIES = (1500, 6500)
POLL_S = 0.1
GIB = 1024**3
# A run above this is killed: the machine is shared, and the figure is already a miss.
CAP_BYTES = 12 * GIB
DAILY_WALL_S, DAILY_RSS, FULL_RSS = 30.0, 1 * GIB, 4 * GIB
FLAT_RATIO = 1.15  # the daily run's peak RSS at the longest history over the shortest's
LINEAR_SLOPE = 1.1  # log-log slope of the full refresh's time against rows (scale.py's rule)
STAGE = re.compile(r"^  (extract|transform|export)\s+\S+\s+(\d+) rows\s+([\d.]+) s")


def _children(pids: set[int]) -> set[int]:
    found = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                ppid = int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid in pids:
            found.add(int(entry.name))
    return found


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as rollup:
            return next((int(line.split()[1]) * 1024 for line in rollup if line.startswith("Pss:")), 0)
    except OSError:
        return 0


def tree_memory(pid: int) -> int:
    """Memory of `pid` and every process below it, in bytes: the sum of their PSS, so the
    pages a forked child shares with its parent (Dagster's log capture forks) count once."""
    tree, frontier = {pid}, {pid}
    while frontier:
        frontier = _children(frontier) - tree
        tree |= frontier
    return sum(_pss(member) for member in tree)


def measured_run(args: list[str], env: dict, cwd: Path, cap_bytes: int = CAP_BYTES) -> dict:
    """`financial-etl <args>` in a fresh process: exit code, wall time, peak RSS of its
    process tree (and when it peaked), its output lines with their times, an RSS timeline."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "financial_etl.cli", *args],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[tuple[float, str]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    peak, peak_at, timeline, capped = 0, 0.0, [], False
    while True:
        # wait4: the run's own peak RSS, exact (the kernel's high-water mark, as time -v reports it).
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            break
        rss, now = tree_memory(proc.pid), time.perf_counter() - started
        if rss > peak:
            peak, peak_at = rss, now
        if not timeline or now - timeline[-1][0] >= 1.0:
            timeline.append((round(now, 2), rss))
        if rss > cap_bytes:
            os.killpg(proc.pid, signal.SIGKILL)
            capped = True
        time.sleep(POLL_S)
    wall = time.perf_counter() - started
    reader.join(timeout=10)
    stages = {
        m.group(1): {"rows": int(m.group(2)), "s": float(m.group(3)), "ended_at_s": round(t, 2)}
        for t, line in lines
        if (m := STAGE.match(line))
    }
    return {
        "args": args,
        "exit_code": proc.returncode,
        "wall_s": wall,
        "peak_rss_bytes": max(peak, usage.ru_maxrss * 1024),
        "process_max_rss_bytes": usage.ru_maxrss * 1024,
        "tree_peak_pss_bytes": peak,
        "peak_at_s": round(peak_at, 2),
        "killed_above_cap": capped,
        "stages": stages,
        "output": [[round(t, 2), line] for t, line in lines[-60:]],
        "rss_timeline": timeline,
    }


def run_env(workdir: Path, tickers: int, start: dt.date, end: dt.date) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("FINANCIAL_ETL_", "DESTINATION__")) and k != "DAGSTER_HOME"
    }
    repo = str(Path(__file__).resolve().parent.parent)
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([repo, *filter(None, [env.get("PYTHONPATH")])]),
            "FINANCIAL_ETL_SOURCE": "synthetic",
            "FINANCIAL_ETL_TICKERS": ",".join(f"T{i:04d}" for i in range(tickers)),
            "FINANCIAL_ETL_START_DATE": start.isoformat(),
            "FINANCIAL_ETL_END_DATE": end.isoformat(),
            "FINANCIAL_ETL_DUCKDB_PATH": str(workdir / "data" / "financial_etl.duckdb"),
            "DAGSTER_HOME": str(workdir / "dagster_home"),
        }
    )
    return env


def measure_history(tickers: int, days: int, workdir: Path, cap_bytes: int, progress=print) -> dict:
    """The full refresh of `days` sessions, then the daily run of the next one."""
    from benchmarks.orchestration import dagster_home
    from benchmarks.universe import sessions

    all_sessions = sessions(days + 1)
    dagster_home(workdir / "dagster_home")
    env = run_env(workdir, tickers, all_sessions[0], all_sessions[-1])
    first, last, day = all_sessions[0], all_sessions[-2], all_sessions[-1]
    progress(f"{tickers} x {days}: full refresh {first} to {last}")
    full = measured_run(
        ["run", "--start", first.isoformat(), "--end", last.isoformat(), "--full-refresh"], env, workdir, cap_bytes
    )
    full["rows"] = tickers * days
    progress(f"  {full['wall_s']:.1f} s, {full['peak_rss_bytes'] / GIB:.2f} GiB, exit {full['exit_code']}")
    if full["exit_code"] != 0:
        return {"tickers": tickers, "days": days, "full_refresh": full, "daily": None}
    progress(f"{tickers} x {days}: daily run {day}")
    daily = measured_run(["run", "--start", day.isoformat(), "--end", day.isoformat()], env, workdir, cap_bytes)
    daily["rows"] = tickers
    progress(f"  {daily['wall_s']:.1f} s, {daily['peak_rss_bytes'] / GIB:.2f} GiB, exit {daily['exit_code']}")
    return {"tickers": tickers, "days": days, "full_refresh": full, "daily": daily}


def _ok(run: dict | None) -> bool:
    return bool(run) and run["exit_code"] == 0


def targets(result: dict) -> dict:
    runs = result["runs"]
    out: dict = {}
    not_measured = {"met": None, "measured": "not measured"}
    dailies = [(r["days"], r["daily"]) for r in runs if _ok(r["daily"])]
    if dailies:
        days, worst = max(dailies, key=lambda d: d[1]["wall_s"])
        out["daily run at most 30 s"] = {
            "met": worst["wall_s"] <= DAILY_WALL_S,
            "measured": f"{worst['wall_s']:.1f} s after {days:,} days (the slowest)",
        }
        days, worst = max(dailies, key=lambda d: d[1]["peak_rss_bytes"])
        out["daily run peak RSS at most 1 GiB"] = {
            "met": worst["peak_rss_bytes"] <= DAILY_RSS,
            "measured": f"{worst['peak_rss_bytes'] / GIB:.2f} GiB after {days:,} days (the highest)",
        }
    else:
        out["daily run at most 30 s"] = out["daily run peak RSS at most 1 GiB"] = not_measured
    if len(dailies) > 1:
        (d1, a), (d2, b) = min(dailies, key=lambda d: d[0]), max(dailies, key=lambda d: d[0])
        ratio = b["peak_rss_bytes"] / a["peak_rss_bytes"]
        out[f"daily run peak RSS flat with history (at most {FLAT_RATIO}x)"] = {
            "met": ratio <= FLAT_RATIO,
            "measured": f"{ratio:.2f}x ({a['peak_rss_bytes'] / GIB:.2f} GiB after {d1:,} days, "
            f"{b['peak_rss_bytes'] / GIB:.2f} GiB after {d2:,})",
        }
    else:
        out[f"daily run peak RSS flat with history (at most {FLAT_RATIO}x)"] = not_measured
    fulls = sorted((r["full_refresh"]["rows"], r["full_refresh"]) for r in runs if _ok(r["full_refresh"]))
    largest = max(runs, key=lambda r: r["tickers"] * r["days"])
    full = largest["full_refresh"]
    out["full refresh peak RSS at most 4 GiB"] = {
        "met": full["peak_rss_bytes"] <= FULL_RSS and _ok(full),
        "measured": f"{full['peak_rss_bytes'] / GIB:.2f} GiB at {largest['tickers']:,} x {largest['days']:,}"
        + (
            ""
            if _ok(full)
            else f" (did not finish: exit {full['exit_code']}"
            + (", killed above the cap)" if full["killed_above_cap"] else ")")
        ),
    }
    if len(fulls) > 1:
        (r1, a), (r2, b) = fulls[0], fulls[-1]
        slope = math.log(b["wall_s"] / a["wall_s"]) / math.log(r2 / r1)
        out[f"full refresh time linear in rows (log-log slope at most {LINEAR_SLOPE})"] = {
            "met": slope <= LINEAR_SLOPE,
            "measured": f"slope {slope:.2f} from {r1:,} rows ({a['wall_s']:.0f} s) to {r2:,} ({b['wall_s']:.0f} s)",
        }
    else:
        out[f"full refresh time linear in rows (log-log slope at most {LINEAR_SLOPE})"] = not_measured
    return out


def run(
    tickers: int, histories, out: Path, workdir: Path | None = None, cap_bytes: int = CAP_BYTES, progress=print
) -> dict:
    import shutil
    import tempfile

    from benchmarks.machine import machine

    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench_memory_", dir=workdir))
    result: dict = {
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "tickers": tickers,
        "histories": list(histories),
        "cap_bytes": cap_bytes,
        "runs": [],
    }
    try:
        for days in histories:
            folder = base / f"{tickers}x{days}"
            result["runs"].append(measure_history(tickers, days, folder, cap_bytes, progress))
            shutil.rmtree(folder, ignore_errors=True)  # GBs at the larger sizes
    finally:
        shutil.rmtree(base, ignore_errors=True)
    result["elapsed_s"] = time.perf_counter() - started
    result["targets"] = targets(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "memory.json").write_text(json.dumps(result, indent=2))
    (out / "memory.md").write_text(markdown(result))
    return result


def _gib(run: dict | None) -> str:
    return f"{run['peak_rss_bytes'] / GIB:.2f} GiB" if run else "–"


def _stages(run: dict | None) -> str:
    if not run:
        return "–"
    if run["exit_code"] != 0:
        return f"exit {run['exit_code']}" + (" (killed above the cap)" if run["killed_above_cap"] else "")
    return ", ".join(f"{name} {v['s']:.1f} s" for name, v in run["stages"].items())


def markdown(result: dict) -> str:
    lines = [
        f"`financial-etl run` at {result['tickers']:,} synthetic tickers, on {result['machine']}; "
        f"harness {result['elapsed_s'] / 60:.1f} min",
        "",
        "| history (sessions) | run | rows | wall | peak RSS (process tree) | peaked at | stages |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        for name, run in (("full refresh", r["full_refresh"]), ("daily run on top", r["daily"])):
            if run is None:
                continue
            lines.append(
                f"| {r['days']:,} | {name} | {run['rows']:,} | {run['wall_s']:.1f} s | {_gib(run)} | "
                f"{run['peak_at_s']:.0f} s | {_stages(run)} |"
            )
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    verdict = {True: "met", False: "MISSED", None: "–"}
    lines += [f"| {name} | {t['measured']} | {verdict[t['met']]} |" for name, t in result["targets"].items()]
    return "\n".join(lines) + "\n"
