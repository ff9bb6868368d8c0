"""Scale benchmarks: how each stage's cost grows with tickers and history.

`python -m benchmarks scale` generates a synthetic universe per size (tickers x trading
sessions) and measures every stage in a fresh child process (spawned, so imports are
cold and each measurement's peak RSS, /proc VmHWM, is its own):

- extract: the project's bulk dlt resource vs the seed's per-row dict generator;
- transform: SQLMesh full refresh, then one-day incremental runs on top;
- export: full refresh to the local DuckDB stand-in, then one-day merges on top;
- dagster: definitions load (once per harness run), a full-refresh run of the whole
  graph through Dagster in process, then a daily run of the last session on top of it,
  both on a persistent SQLite DAGSTER_HOME.

Results: scale.json, scale.md (tables and targets) and scale.png (time against rows).
"""

from __future__ import annotations

import datetime as dt
import importlib
import json
import math
import multiprocessing
import os
import shutil
import statistics
import tempfile
import time
import traceback
from pathlib import Path

SIZES = ((7, 1500), (100, 2500), (500, 1500), (500, 6500), (2000, 6500))
STAGES = ("extract", "transform", "export", "dagster")
PER_ROW_ROWS = 200_000
# Sessions held back from each full refresh and then run one at a time: the one-day
# figures are their median, so one slow run on a shared machine does not decide them.
DAILY_DAYS = 5
DEFINITION_LOADS = 3
# The flat-daily-cost target compares history lengths at this many tickers.
FLAT_TICKERS = 500
RSS_SIZE = (500, 6500)
GIB = 1024**3


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        tickers, _, days = part.strip().lower().partition("x")
        sizes.append((int(tickers), int(days)))
    return sizes


def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# --- what runs in a child -------------------------------------------------------------


def extract_stage(tickers: int, days: int, workdir: str, per_row_rows: int) -> dict:
    from benchmarks.extract import measure
    from benchmarks.universe import universe

    return measure(universe(tickers, days), Path(workdir), per_row_rows=per_row_rows)


def transform_stage(tickers: int, days: int, workdir: str) -> dict:
    from benchmarks.transform import measure
    from benchmarks.universe import universe

    return measure(universe(tickers, days), Path(workdir), daily_days=DAILY_DAYS, repeats=1)  # growth, not ratios


def export_stage(tickers: int, days: int, workdir: str) -> dict:
    from benchmarks.export import measure
    from benchmarks.universe import universe

    url = f"duckdb:///{Path(workdir) / 'data' / 'export.duckdb'}"
    return measure(universe(tickers, days), url, Path(workdir), daily_days=DAILY_DAYS)


def _child_main(conn, log_path: str, target: str, kwargs: dict) -> None:
    # Library output goes to the child's log, not the harness's terminal.
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        load_before = os.getloadavg()[0]
        module, name = target.split(":")
        result = getattr(importlib.import_module(module), name)(**kwargs)
        result["peak_rss_bytes"] = peak_rss_bytes()
        # The machine's 1-minute load average around the measurement: above the core
        # count, another process was competing for the CPUs.
        result["load_average"] = [load_before, os.getloadavg()[0]]
        conn.send(("ok", result))
    except BaseException:  # reported to the parent, which records it and goes on
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def in_child(target: str, log_path: Path, **kwargs) -> dict:
    """Run `module:function(**kwargs)` in a fresh spawned process; its result, with the
    child's peak RSS and wall time, or {"error": ...} if it failed."""
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    started = time.perf_counter()
    process = context.Process(target=_child_main, args=(send, str(log_path), target, kwargs))
    process.start()
    send.close()
    try:
        status, payload = receive.recv()
    except EOFError:  # it died before sending (killed, out of memory)
        status, payload = "error", None
    process.join()
    if payload is None:
        payload = f"the child exited with code {process.exitcode} (see {log_path})"
    wall = time.perf_counter() - started
    if status != "ok":
        return {"error": payload.strip().splitlines()[-1], "log": str(log_path), "child_wall_s": wall}
    return {**payload, "child_wall_s": wall}


# --- the harness ----------------------------------------------------------------------


def measure_size(tickers: int, days: int, stages, base: Path, per_row_rows: int, progress) -> dict:
    label = f"{tickers}x{days}"
    workdir = base / label
    logs = base / "logs"
    result: dict = {"tickers": tickers, "days": days, "rows": tickers * days}
    for stage in stages:
        stage_dir = workdir / stage
        stage_dir.mkdir(parents=True, exist_ok=True)
        progress(f"{label}: {stage}")
        log = logs / f"{label}_{stage}.log"
        if stage == "extract":
            result[stage] = in_child(
                "benchmarks.scale:extract_stage",
                log,
                tickers=tickers,
                days=days,
                workdir=str(stage_dir),
                per_row_rows=per_row_rows,
            )
        elif stage == "transform":
            result[stage] = in_child(
                "benchmarks.scale:transform_stage", log, tickers=tickers, days=days, workdir=str(stage_dir)
            )
        elif stage == "export":
            result[stage] = in_child(
                "benchmarks.scale:export_stage", log, tickers=tickers, days=days, workdir=str(stage_dir)
            )
        elif stage == "dagster":
            full = in_child(
                "benchmarks.orchestration:pipeline_run",
                log,
                workdir=str(stage_dir),
                tickers=tickers,
                days=days,
                which="full_refresh",
            )
            daily = (
                {"error": "not run: the full refresh failed"}
                if "error" in full
                else in_child(
                    "benchmarks.orchestration:pipeline_run",
                    log,
                    workdir=str(stage_dir),
                    tickers=tickers,
                    days=days,
                    which="daily",
                )
            )
            result[stage] = {"full_refresh": full, "daily": daily}
        shutil.rmtree(stage_dir, ignore_errors=True)  # GBs at the larger sizes
    return result


def measure_definitions(loads: int, base: Path, progress) -> dict:
    from benchmarks.orchestration import pipeline_env

    progress(f"definitions load x{loads}")
    env = pipeline_env(base / "definitions", 7, 1500)
    runs = [
        in_child("benchmarks.orchestration:definitions_load", base / "logs" / "definitions.log", env=env)
        for _ in range(loads)
    ]
    ok = [run for run in runs if "error" not in run]
    summary = {"runs": runs}
    if ok:
        summary["median_s"] = statistics.median(run["total_s"] for run in ok)
        for part in ("import_s", "build_s", "resolve_s"):
            summary[f"median_{part}"] = statistics.median(run[part] for run in ok)
    return summary


def run(
    sizes,
    stages,
    out: Path,
    per_row_rows: int = PER_ROW_ROWS,
    definition_loads: int = DEFINITION_LOADS,
    workdir: Path | None = None,
    keep: bool = False,
    progress=print,
) -> dict:
    from benchmarks.machine import machine

    started = time.perf_counter()
    base = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=workdir))
    (base / "logs").mkdir()
    progress(f"working in {base}")
    result: dict = {
        "machine": machine(),
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sizes": [f"{t}x{d}" for t, d in sizes],
        "stages": list(stages),
        "per_row_sample_rows": per_row_rows,
    }
    if "dagster" in stages:
        result["definitions_load"] = measure_definitions(definition_loads, base, progress)
    result["runs"] = [measure_size(t, d, stages, base, per_row_rows, progress) for t, d in sizes]
    result["elapsed_s"] = time.perf_counter() - started
    result["targets"] = targets(result)
    result["errors"] = errors(result)
    if not result["errors"] and not keep:
        shutil.rmtree(base, ignore_errors=True)
    else:
        result["workdir"] = str(base)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scale.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "scale.md").write_text(markdown(result))
    plot(result, out / "scale.png")
    return result


def errors(result: dict) -> list[str]:
    found = [
        f"definitions load: {r['error']}" for r in result.get("definitions_load", {}).get("runs", []) if "error" in r
    ]
    for run_ in result["runs"]:
        for stage in STAGES:
            parts = run_.get(stage, {})
            parts = parts.items() if stage == "dagster" else [("", parts)]
            for part, value in parts:
                if "error" in value:
                    found.append(
                        f"{run_['tickers']}x{run_['days']} {stage} {part}: {value['error']} ({value.get('log')})"
                    )
    return found


# --- targets --------------------------------------------------------------------------


def _ok(run_: dict, stage: str, part: str | None = None) -> dict | None:
    value = run_.get(stage)
    if value is not None and part:
        value = value.get(part)
    return value if value is not None and "error" not in value else None


def _target(met: bool | None, measured: str) -> dict:
    return {"met": met, "measured": measured}


NOT_MEASURED = _target(None, "not measured at these sizes")


def loglog_slope(points: list[tuple[float, float]]) -> float | None:
    """Slope of log(time) against log(rows) between the two largest sizes: 1 is linear."""
    points = sorted(p for p in points if p[0] > 0 and p[1] > 0)
    if len(points) < 2 or points[-1][0] == points[-2][0]:
        return None
    (r1, t1), (r2, t2) = points[-2], points[-1]
    return math.log(t2 / t1) / math.log(r2 / r1)


def targets(result: dict) -> dict:
    runs = result["runs"]
    out: dict = {}

    # Fixed costs dominate a small load: throughput is judged at 1M rows and up.
    judged = [(r, e) for r in runs if (e := _ok(r, "extract")) and e["rows"] >= 1_000_000]
    if judged:
        ratio = min(judged, key=lambda x: x[1]["bulk_vs_per_row"])
        rate = min(judged, key=lambda x: x[1]["bulk_rows_per_s"])
        out["bulk extract at least 20x the seed's per-row path"] = _target(
            ratio[1]["bulk_vs_per_row"] >= 20,
            f"{ratio[1]['bulk_vs_per_row']:.0f}x at {ratio[0]['tickers']}x{ratio[0]['days']}",
        )
        out["bulk extract at least 1M rows/s"] = _target(
            rate[1]["bulk_rows_per_s"] >= 1e6,
            f"{rate[1]['bulk_rows_per_s'] / 1e6:.2f}M rows/s at {rate[0]['tickers']}x{rate[0]['days']}",
        )
    else:
        out["bulk extract at least 20x the seed's per-row path"] = NOT_MEASURED
        out["bulk extract at least 1M rows/s"] = NOT_MEASURED

    for stage, key, name in (
        ("transform", "one_day_s", "one-day incremental transform"),
        ("export", "one_day_merge_s", "one-day export merge"),
    ):
        by_tickers: dict[int, list] = {}
        for r in runs:
            if value := _ok(r, stage):
                by_tickers.setdefault(r["tickers"], []).append((r["days"], value[key]))
        candidates = {t: sorted(v) for t, v in by_tickers.items() if len({d for d, _ in v}) > 1}
        title = f"{name} within 2x from shortest to longest history at {FLAT_TICKERS} tickers"
        if not candidates:
            out[title] = NOT_MEASURED
            continue
        tickers = FLAT_TICKERS if FLAT_TICKERS in candidates else max(candidates)
        (d1, t1), (d2, t2) = candidates[tickers][0], candidates[tickers][-1]
        out[title] = _target(
            t2 / t1 <= 2, f"{t2 / t1:.2f}x ({t1:.3f} s at {d1:,} days, {t2:.3f} s at {d2:,}; {tickers} tickers)"
        )

    for stage, part, key, cpu_key, rows_key, name in (
        ("extract", None, "bulk_s", "bulk_cpu_s", "bulk_rows", "extract (bulk)"),
        ("transform", None, "full_refresh_s", "full_refresh_cpu_s", "rows", "transform full refresh"),
        ("export", None, "full_refresh_s", "full_refresh_cpu_s", "rows", "export full refresh"),
        ("dagster", "full_refresh", "run_s", "run_cpu_s", None, "Dagster full-refresh run"),
    ):
        measured = [
            (value[rows_key] if rows_key else r["tickers"] * (r["days"] - 1), value)
            for r in runs
            if (value := _ok(r, stage, part))
        ]
        slope = loglog_slope([(rows, value[key]) for rows, value in measured])
        title = f"{name} scales no worse than linearly (log-log slope <= 1.1)"
        if slope is None:
            out[title] = NOT_MEASURED
            continue
        cpu_slope = loglog_slope([(rows, value[cpu_key]) for rows, value in measured])
        (r1, _), (r2, _) = sorted((rows, value[key]) for rows, value in measured)[-2:]
        out[title] = _target(slope <= 1.1, f"slope {slope:.2f} from {r1:,} to {r2:,} rows (CPU time: {cpu_slope:.2f})")

    loads = result.get("definitions_load", {})
    out["definitions load under 3 s"] = (
        _target(loads["median_s"] < 3, f"{loads['median_s']:.2f} s (median of {len(loads['runs'])})")
        if "median_s" in loads
        else NOT_MEASURED
    )

    dailies = [(r, d) for r in runs if (d := _ok(r, "dagster", "daily"))]
    if dailies:
        worst = max(dailies, key=lambda x: x[1]["overhead_s"])
        out["daily run's Dagster overhead under 5 s"] = _target(
            worst[1]["overhead_s"] < 5,
            f"{worst[1]['overhead_s']:.2f} s at {worst[0]['tickers']}x{worst[0]['days']} (the worst size)",
        )
    else:
        out["daily run's Dagster overhead under 5 s"] = NOT_MEASURED

    title = "Dagster full-refresh run at most 1.5x its data work at 500 x 6,500 (persistent SQLite DAGSTER_HOME)"
    full = [f for r in runs if (r["tickers"], r["days"]) == RSS_SIZE and (f := _ok(r, "dagster", "full_refresh"))]
    out[title] = (
        _target(
            full[0]["run_vs_data_work"] <= 1.5,
            f"{full[0]['run_vs_data_work']:.2f} ({_s(full[0]['run_s'])} run, {_s(full[0]['data_work_s'])} data work, "
            f"{full[0]['dagster_home_growth_mb']:.1f} MB of DAGSTER_HOME)",
        )
        if full
        else NOT_MEASURED
    )

    rss = full
    out["peak RSS of the 500 x 6,500 full refresh under 4 GiB"] = (
        _target(rss[0]["peak_rss_bytes"] < 4 * GIB, f"{rss[0]['peak_rss_bytes'] / GIB:.2f} GiB")
        if rss
        else NOT_MEASURED
    )
    return out


# --- report ---------------------------------------------------------------------------


def _s(value: float) -> str:
    return f"{value:.3f} s" if value < 1 else f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def _rate(rows: float, seconds: float) -> str:
    rate = rows / seconds
    return f"{rate / 1e6:.2f}M rows/s" if rate >= 1e6 else f"{rate / 1e3:.0f}k rows/s"


def _gib(value: dict | None) -> str:
    return f"{value['peak_rss_bytes'] / GIB:.2f}" if value else "–"


def markdown(result: dict) -> str:
    minutes = result["elapsed_s"] / 60
    lines = [
        f"Scale benchmarks, {result['started']}, on {result['machine']}; harness runtime {minutes:.1f} min.",
        "",
        "| tickers × days | rows | extract: bulk | extract: seed per-row | bulk ÷ per-row "
        "| transform: full refresh | transform: one day | export: full refresh | export: one-day merge "
        "| Dagster: full-refresh run | Dagster: full-refresh run ÷ data work | Dagster: daily run "
        "| daily run: Dagster overhead |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        e, t, x = _ok(r, "extract"), _ok(r, "transform"), _ok(r, "export")
        full, daily = _ok(r, "dagster", "full_refresh"), _ok(r, "dagster", "daily")
        cells = [
            f"{r['tickers']:,} × {r['days']:,}",
            f"{r['rows']:,}",
            f"{_s(e['bulk_s'])}, {_rate(e['bulk_rows'], e['bulk_s'])}" if e else "–",
            f"{_s(e['per_row_s'])} for {e['per_row_rows']:,} rows, {_rate(e['per_row_rows'], e['per_row_s'])}"
            if e
            else "–",
            f"{e['bulk_vs_per_row']:.0f}×" if e else "–",
            _s(t["full_refresh_s"]) if t else "–",
            _s(t["one_day_s"]) if t else "–",
            f"{_s(x['full_refresh_s'])}, {_rate(x['rows'], x['full_refresh_s'])}" if x else "–",
            _s(x["one_day_merge_s"]) if x else "–",
            f"{_s(full['run_s'])} ({full['partitions']} partitions)" if full else "–",
            f"{full['run_vs_data_work']:.2f} ({_s(full['data_work_s'])} data work)" if full else "–",
            _s(daily["run_s"]) if daily else "–",
            _s(daily["overhead_s"]) if daily else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Peak RSS (GiB) of each measurement's own process:",
        "",
        "| tickers × days | extract | transform | export | Dagster full-refresh run | Dagster daily run "
        "| machine load (1-min average, highest) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        measured = [_ok(r, s) for s in ("extract", "transform", "export")]
        measured += [_ok(r, "dagster", "full_refresh"), _ok(r, "dagster", "daily")]
        loads = [x for m in measured if m for x in m["load_average"]]
        cells = [_gib(m) for m in measured] + [f"{max(loads):.1f}" if loads else "–"]
        lines.append(f"| {r['tickers']:,} × {r['days']:,} | " + " | ".join(cells) + " |")
    loads = result.get("definitions_load", {})
    if "median_s" in loads:
        lines += [
            "",
            f"Definitions load (fresh process, median of {len(loads['runs'])}): {loads['median_s']:.2f} s = "
            f"import {loads['median_import_s']:.2f} s + build {loads['median_build_s']:.2f} s "
            f"+ resolve {loads['median_resolve_s']:.2f} s.",
        ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    verdict = {True: "met", False: "MISSED", None: "–"}
    lines += [f"| {name} | {t['measured']} | {verdict[t['met']]} |" for name, t in result["targets"].items()]
    if result.get("errors"):
        lines += ["", "Errors:", *[f"- {e}" for e in result["errors"]]]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    """Time against rows, log-log, one panel per stage; a dashed line of slope 1 through
    each full-refresh series' largest point shows where linear would be."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {
        "extract": [("bulk (project)", "extract", None, "bulk_s", "bulk_rows")],
        "transform": [
            ("full refresh", "transform", None, "full_refresh_s", "rows"),
            ("one day on top", "transform", None, "one_day_s", "rows"),
        ],
        "export (DuckDB stand-in)": [
            ("full refresh", "export", None, "full_refresh_s", "rows"),
            ("one-day merge on top", "export", None, "one_day_merge_s", "rows"),
        ],
        "Dagster (whole graph, in process)": [
            ("full-refresh run", "dagster", "full_refresh", "run_s", None),
            ("daily run on top", "dagster", "daily", "run_s", None),
            ("daily run: Dagster overhead", "dagster", "daily", "overhead_s", None),
        ],
    }
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    for ax, (title, lines) in zip(axes.flat, series.items(), strict=True):
        for label, stage, part, key, rows_key in lines:
            points = sorted(
                (value[rows_key] if rows_key else r["tickers"] * (r["days"] - 1), value[key])
                for r in result["runs"]
                if (value := _ok(r, stage, part))
            )
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, marker="o", label=label)
            if label in ("bulk (project)", "full refresh", "full-refresh run") and len(points) > 1:
                ax.plot([xs[0], xs[-1]], [ys[-1] * xs[0] / xs[-1], ys[-1]], ls="--", lw=0.8, color=line.get_color())
        if title == "extract":
            # The seed's path runs on a sample: its time there, and the whole frame at its rate.
            measured = [
                (e["per_row_rows"], e["per_row_s"], e["rows"]) for r in result["runs"] if (e := _ok(r, "extract"))
            ]
            if measured:
                samples, seconds, rows = zip(*sorted(measured, key=lambda m: m[2]), strict=True)
                (line,) = ax.plot(samples, seconds, "o", label="per-row (seed), measured on its sample")
                ax.plot(
                    rows,
                    [s / n * total for s, n, total in zip(seconds, samples, rows, strict=True)],
                    ls=":",
                    color=line.get_color(),
                    label="per-row (seed), whole frame at the sample's rate",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("rows (history rows for the one-day series)")
        ax.set_ylabel("seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Scale benchmarks (dashed: linear), {result['machine']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
