"""The cost of landing a model change: `python -m benchmarks change --tickers 500 --days 6500`.

Three `financial-etl run` processes on one warehouse, as an operator runs them: the whole
history but its last two sessions with the export replaced (the plain full refresh), the
next session with no model change (the ordinary daily run), then a model edit (one new
column, a breaking change for the export's table) and the last session: SQLMesh rebuilds
the mart and the export re-sends it into a rebuilt table. The console's per-stage lines
give each stage's rows and seconds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from financial_etl.settings import SQLMESH_PROJECT_DIR

STAGE = re.compile(r"^  (extract|transform|export)\s+\S+\s+(\d+) rows\s+([\d.]+) s", re.M)
NEW_COLUMN = "  (close_price * 2)::DOUBLE AS benchmark_double_close,\n"


def _run(env: dict, *args: str) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "financial_etl.cli", "run", *args], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"financial-etl run {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    stages = {m.group(1): {"rows": int(m.group(2)), "s": float(m.group(3))} for m in STAGE.finditer(proc.stdout)}
    return {"wall_s": wall, "stages": stages}


def add_column(project: Path) -> None:
    model = project / "models" / "marts" / "stock_metrics.sql"
    text = model.read_text()
    marker = "FROM finals\n"
    assert marker in text
    model.write_text(
        text.replace(marker, NEW_COLUMN.rstrip("\n").rstrip(",") + "\n" + marker, 1).replace(
            "AS wilder_avg_loss_14\n  (close", "AS wilder_avg_loss_14,\n  (close"
        )
    )


def measure(tickers: int, days: int, workdir: Path | None = None, progress=print) -> dict:
    from benchmarks.universe import sessions

    all_sessions = sessions(days)
    with tempfile.TemporaryDirectory(dir=workdir, prefix="change-") as tmp:
        root = Path(tmp)
        project = root / "sqlmesh_project"
        shutil.copytree(SQLMESH_PROJECT_DIR, project, ignore=shutil.ignore_patterns("logs", ".cache", "__pycache__"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
        env.update(
            {
                "FINANCIAL_ETL_TICKERS": ",".join(f"T{i:04d}" for i in range(tickers)),
                "FINANCIAL_ETL_START_DATE": all_sessions[0].isoformat(),
                "FINANCIAL_ETL_DUCKDB_PATH": str(root / "data" / "financial_etl.duckdb"),
                "FINANCIAL_ETL_SQLMESH_PROJECT": str(project),
            }
        )
        progress(f"full refresh: {all_sessions[0]} to {all_sessions[-3]}")
        full = _run(
            env, "--start", all_sessions[0].isoformat(), "--end", all_sessions[-3].isoformat(), "--full-refresh"
        )
        progress(f"daily run, no model change: {all_sessions[-2]}")
        daily = _run(env, "--start", all_sessions[-2].isoformat(), "--end", all_sessions[-2].isoformat())
        add_column(project)
        progress(f"model changed (a new column); daily run: {all_sessions[-1]}")
        change = _run(env, "--start", all_sessions[-1].isoformat(), "--end", all_sessions[-1].isoformat())
    rate = lambda run, stage: run["stages"][stage]["rows"] / max(run["stages"][stage]["s"], 1e-9)  # noqa: E731
    return {
        "full_refresh": full,
        "daily": daily,
        "model_change": change,
        "rebuild_rows_per_s": rate(change, "transform"),
        "resend_rows_per_s": rate(change, "export"),
        "full_refresh_export_rows_per_s": rate(full, "export"),
        "change_vs_full_refresh": change["wall_s"] / full["wall_s"],
        "daily_vs_full_refresh": daily["wall_s"] / full["wall_s"],
    }


def markdown(result: dict) -> str:
    def line(name, run):
        stages = ", ".join(f"{s} {v['rows']:,} rows in {v['s']:.1f} s" for s, v in run["stages"].items())
        return f"| {name} | {run['wall_s']:.1f} s | {stages} |"

    return (
        "\n".join(
            [
                f"Landing a model change, {result['tickers']} tickers x {result['days']:,} days, "
                f"on {result['machine']}",
                "",
                "| run | wall | stages |",
                "|---|---|---|",
                line("plain full refresh (export replaced)", result["full_refresh"]),
                line("daily run, no model change", result["daily"]),
                line(
                    "daily run after a new column (mart rebuilt, export re-sent into a rebuilt table)",
                    result["model_change"],
                ),
                "",
                f"- mart rebuild: {result['rebuild_rows_per_s']:,.0f} rows/s; "
                f"export re-send: {result['resend_rows_per_s']:,.0f} rows/s "
                f"(the plain full refresh's export: {result['full_refresh_export_rows_per_s']:,.0f} rows/s)",
                f"- landing the change took {result['change_vs_full_refresh']:.2f}x the plain full refresh; "
                f"the daily run {100 * result['daily_vs_full_refresh']:.1f}% of it",
            ]
        )
        + "\n"
    )
