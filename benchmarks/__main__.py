"""Benchmark harness: `python -m benchmarks scale` (every stage at every size), one
stage at one size: `python -m benchmarks transform --tickers 500 --days 6500`, or
`python -m benchmarks history` (one ticker's 8.5 years through `financial-etl run`) and
`python -m benchmarks partitions` (Dagster's bookkeeping alone, per partition granularity)
and `python -m benchmarks engines` (the warehouse on DuckDB, PostgreSQL and Spark) and
`python -m benchmarks change` (landing a model change: mart rebuild and export re-send) and
`python -m benchmarks memory` (peak RSS and wall time of `financial-etl run` at 5,000 tickers).

Each stage is measured in one process; results go to benchmarks/results/ as JSON and a
markdown table (and, for `scale`, a PNG plot). Targets are reported as met or missed
with the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks.machine import machine

RESULTS = Path(__file__).resolve().parent / "results"


def transform(args) -> dict:
    from benchmarks.transform import measure
    from benchmarks.universe import universe

    started = time.perf_counter()
    frame = universe(args.tickers, args.days)
    result = measure(frame)
    targets = {
        "full refresh within 2x of a bare DuckDB window query": (
            result["full_vs_bare"] <= 2.0,
            f"{result['full_vs_bare']:.2f}x",
        ),
        "one-day incremental run at most 5% of the full refresh": (
            result["one_day_vs_full"] <= 0.05,
            f"{100 * result['one_day_vs_full']:.1f}%",
        ),
    }
    return {
        "stage": "transform",
        "tickers": args.tickers,
        "days": args.days,
        "machine": machine(),
        "elapsed_s": time.perf_counter() - started,
        **result,
        "targets": {name: {"met": met, "measured": figure} for name, (met, figure) in targets.items()},
    }


def export(args) -> dict:
    from benchmarks.export import measure
    from benchmarks.universe import universe
    from financial_etl_tests.servers import start_postgres

    server = start_postgres()
    try:
        started = time.perf_counter()
        result = measure(universe(args.tickers, args.days), server.url())
    finally:
        server.stop()
    return {
        "stage": "export",
        "tickers": args.tickers,
        "days": args.days,
        "machine": machine(),
        "elapsed_s": time.perf_counter() - started,
        **result,
        "targets": {
            "one-day merge under 5% of the full refresh": {
                "met": result["one_day_vs_full"] < 0.05,
                "measured": f"{100 * result['one_day_vs_full']:.1f}%",
            },
        },
    }


def engines(args) -> dict:
    from benchmarks.engines import measure
    from benchmarks.universe import universe
    from financial_etl_tests.servers import start_postgres

    server = start_postgres()
    try:
        started = time.perf_counter()
        result = measure(
            universe(args.tickers, args.days),
            server,
            engines=args.engines,
            progress=lambda msg: print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True),
        )
    finally:
        server.stop()
    return {
        "stage": "engines",
        "tickers": args.tickers,
        "days": args.days,
        "machine": machine(),
        "elapsed_s": time.perf_counter() - started,
        **result,
    }


def change(args) -> int:
    from benchmarks.change import markdown, measure

    started = time.perf_counter()
    result = measure(
        args.tickers,
        args.days,
        progress=lambda msg: print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True),
    )
    result = {
        "stage": "change",
        "tickers": args.tickers,
        "days": args.days,
        "machine": machine(),
        "elapsed_s": time.perf_counter() - started,
        **result,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"change_{args.tickers}x{args.days}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{name}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def export_markdown(result: dict) -> str:
    lines = [
        f"Export to PostgreSQL, {result['tickers']} tickers x {result['days']:,} days, on {result['machine']}",
        "",
        "| measure | value |",
        "|---|---|",
        f"| full refresh (atomic replace) | {result['rows']:,} rows in {result['full_refresh_s']:.1f} s, "
        f"{result['rows_per_s']:,.0f} rows/s |",
        f"| one-day merge on top (median of {len(result['one_day_merge_runs_s'])} days) | "
        f"{result['one_day_rows']} rows in {result['one_day_merge_s']:.2f} s "
        f"({100 * result['one_day_vs_full']:.1f}% of full) |",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {t['measured']} | {'met' if t['met'] else 'MISSED'} |" for name, t in result["targets"].items()
    ]
    return "\n".join(lines) + "\n"


def _runs(seconds: list[float]) -> str:
    return "runs: " + ", ".join(f"{s:.2f}" for s in seconds)


def markdown(result: dict) -> str:
    rows = [
        ("rows", f"{result['rows']:,}"),
        (
            "bare DuckDB window query (median)",
            f"{result['bare_duckdb_s']:.2f} s ({_runs(result['bare_duckdb_runs_s'])})",
        ),
        (
            "SQLMesh full refresh, plan and audits included (median)",
            f"{result['full_refresh_s']:.2f} s, {result['full_vs_bare']:.2f}x bare "
            f"({_runs(result['full_refresh_runs_s'])})",
        ),
        (
            "one-day incremental run (restatement of the new day)",
            f"{result['one_day_s']:.3f} s ({100 * result['one_day_vs_full']:.1f}% of full)",
        ),
        (
            "pipeline's daily transform (prod check + incremental run)",
            f"{result['daily_step_s']:.3f} s ({100 * result['daily_step_vs_full']:.1f}% of full)",
        ),
    ]
    lines = [
        f"Transform, {result['tickers']} tickers x {result['days']:,} days, on {result['machine']}",
        "",
        "| measure | value |",
        "|---|---|",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {name} | {t['measured']} | {'met' if t['met'] else 'MISSED'} |" for name, t in result["targets"].items()
    ]
    return "\n".join(lines) + "\n"


def scale(args) -> int:
    from benchmarks.scale import run

    started = time.perf_counter()
    result = run(
        args.sizes,
        args.stages,
        args.out,
        per_row_rows=args.per_row_rows,
        definition_loads=args.definition_loads,
        workdir=args.workdir,
        keep=args.keep,
        progress=lambda msg: print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True),
    )
    print((args.out / "scale.md").read_text())
    return 1 if result["errors"] else 0


def memory(args) -> int:
    from benchmarks.memory import run

    started = time.perf_counter()
    result = run(
        args.tickers,
        args.histories,
        args.out,
        workdir=args.workdir,
        cap_bytes=int(args.cap_gib * 2**30),
        progress=lambda msg: print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True),
    )
    print((args.out / "memory.md").read_text())
    return (
        0
        if all(
            r["full_refresh"]["exit_code"] == 0 and r["daily"] and r["daily"]["exit_code"] == 0 for r in result["runs"]
        )
        else 1
    )


def history(args) -> int:
    from benchmarks.history import run

    started = time.perf_counter()
    result = run(
        args.before, args.out, progress=lambda msg: print(f"[{time.perf_counter() - started:7.1f} s] {msg}", flush=True)
    )
    print((args.out / "history.md").read_text())
    latest = list(result["versions"].values())[-1]
    return 0 if latest["wall_met"] and latest["growth_met"] else 1


def partitions(args) -> int:
    from benchmarks.partition_cost import markdown, run

    rows = run(progress=lambda msg: print(f"partition cost: {msg}", flush=True))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "partition_cost.json").write_text(json.dumps({"machine": machine(), "runs": rows}, indent=2))
    table = markdown(rows)
    (args.out / "partition_cost.md").write_text(f"On {machine()}:\n\n{table}")
    print(table)
    return 0


def main(argv=None) -> int:
    from benchmarks import memory as memory_module
    from benchmarks import scale as scale_module

    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="stage", required=True)
    s = sub.add_parser("scale", help="every stage at every size: scale.json, scale.md, scale.png")
    s.add_argument(
        "--sizes",
        type=scale_module.parse_sizes,
        default=list(scale_module.SIZES),
        help="tickers x trading days, comma-separated (default: "
        + ",".join(f"{t}x{d}" for t, d in scale_module.SIZES)
        + ")",
    )
    s.add_argument(
        "--stages",
        type=lambda text: [x.strip() for x in text.split(",")],
        default=list(scale_module.STAGES),
        help="default: " + ",".join(scale_module.STAGES),
    )
    s.add_argument("--out", type=Path, default=RESULTS)
    s.add_argument(
        "--per-row-rows",
        type=int,
        default=scale_module.PER_ROW_ROWS,
        help="the seed's per-row path loads whole tickers covering at least this many rows",
    )
    s.add_argument(
        "--definition-loads",
        type=int,
        default=scale_module.DEFINITION_LOADS,
        help="fresh processes timing the definitions load (the median is reported)",
    )
    s.add_argument("--workdir", type=Path, default=None, help="where the temporary warehouses go (default: /tmp)")
    s.add_argument("--keep", action="store_true", help="keep the working directory and the children's logs")
    h = sub.add_parser(
        "history",
        help="one ticker's 8.5-year history through `financial-etl run`: wall time, data work, DAGSTER_HOME growth",
    )
    h.add_argument("--before", metavar="REV", help="also measure this git revision (in a temporary worktree)")
    h.add_argument("--out", type=Path, default=RESULTS)
    p = sub.add_parser("partitions", help="Dagster's bookkeeping alone per partition granularity (no-op assets)")
    p.add_argument("--out", type=Path, default=RESULTS)
    t = sub.add_parser("transform", help="SQLMesh full refresh and one-day run vs bare DuckDB")
    t.add_argument("--tickers", type=int, default=500)
    t.add_argument("--days", type=int, default=6500)
    t.add_argument("--out", type=Path, default=RESULTS)
    e = sub.add_parser("export", help="full refresh and one-day merge to a PostgreSQL server it starts")
    e.add_argument("--tickers", type=int, default=500)
    e.add_argument("--days", type=int, default=2500)
    e.add_argument("--out", type=Path, default=RESULTS)
    w = sub.add_parser(
        "engines",
        help="transform on DuckDB, PostgreSQL, Spark local[2] and a Spark cluster; export to PostgreSQL per format",
    )
    w.add_argument("--tickers", type=int, default=100)
    w.add_argument("--days", type=int, default=2500)
    w.add_argument(
        "--engines",
        type=lambda text: [x.strip() for x in text.split(",")],
        default=["duckdb", "postgres", "spark", "spark-cluster"],
    )
    w.add_argument("--out", type=Path, default=RESULTS)
    c = sub.add_parser("change", help="landing a model change: mart rebuild and export re-send beside a full refresh")
    c.add_argument("--tickers", type=int, default=500)
    c.add_argument("--days", type=int, default=6500)
    c.add_argument("--out", type=Path, default=RESULTS)
    m = sub.add_parser(
        "memory",
        help="peak RSS and wall time of `financial-etl run`: full refresh, then a daily run on top, per history length",
    )
    m.add_argument("--tickers", type=int, default=memory_module.TICKERS)
    m.add_argument(
        "--histories",
        type=lambda text: [int(x) for x in text.split(",")],
        default=list(memory_module.HISTORIES),
        help="sessions of history, comma-separated (default: " + ",".join(map(str, memory_module.HISTORIES)) + ")",
    )
    m.add_argument(
        "--cap-gib",
        type=float,
        default=memory_module.CAP_BYTES / 2**30,
        help="kill a run whose RSS passes this (the machine is shared)",
    )
    m.add_argument("--workdir", type=Path, default=None, help="where the warehouses go (default: /tmp)")
    m.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.stage == "memory":
        return memory(args)
    if args.stage == "change":
        return change(args)
    if args.stage == "scale":
        unknown = set(args.stages) - set(scale_module.STAGES)
        if unknown:
            parser.error(f"unknown stage(s) {', '.join(sorted(unknown))}; choose from {', '.join(scale_module.STAGES)}")
        return scale(args)
    if args.stage == "history":
        return history(args)
    if args.stage == "partitions":
        return partitions(args)
    if args.stage == "engines":
        from benchmarks.engines import markdown as engines_markdown

        result, render = engines(args), engines_markdown
    else:
        result = transform(args) if args.stage == "transform" else export(args)
        render = markdown if args.stage == "transform" else export_markdown
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.stage}_{args.tickers}x{args.days}"
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=2, default=str))
    table = render(result)
    (args.out / f"{name}.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
