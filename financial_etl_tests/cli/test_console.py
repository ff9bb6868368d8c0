"""What `financial-etl run` prints by default: a handful of readable lines, no object dumps."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys

import pytest

from financial_etl.calendar import trading_sessions
from financial_etl.errors import EXIT_CONNECTION
from financial_etl.settings import REPO_ROOT

REPR = re.compile(r"<\w+[ :]|\{'|EvaluatablePlan|Snapshot<|object at 0x")


def _run(tmp_path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    extra = env or {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
    env["FINANCIAL_ETL_DUCKDB_PATH"] = str(tmp_path / "data" / "financial_etl.duckdb")
    env.update(extra)
    return subprocess.run(
        [sys.executable, "-m", "financial_etl.cli", "run", "--start", "2024-01-02", "--end", "2024-03-28", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_default_run_prints_a_line_per_stage_and_a_summary_and_no_object_reprs(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    assert len(lines) <= 15, "\n".join(lines)
    assert not [line for line in lines if REPR.search(line)]
    stages = [line.split() for line in proc.stdout.splitlines() if line.startswith("  ") and " rows " in line]
    # extract, transform and export each on one line, with the rows of the range and seconds
    assert [(s[0], s[1], s[3], s[-1]) for s in stages] == [
        ("extract", "raw.eod_prices_raw", "rows", "s"),
        ("transform", "marts.stock_metrics", "rows", "s"),
        ("export", "dbo.Dim_Stock_Metrics", "rows", "s"),
    ]
    sessions = trading_sessions(dt.date(2024, 1, 2), dt.date(2024, 3, 28))
    assert {int(s[2]) for s in stages} == {7 * len(sessions)}  # the seed's 7 tickers, every session
    assert re.search(r"^financial-etl: run \w{8} succeeded in [\d.]+ s$", proc.stdout, re.M)


def test_verbose_adds_dagsters_event_log_and_sqlmeshs_plan_details(tmp_path):
    proc = _run(tmp_path, "--verbose")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "extracting 7 tickers from the synthetic source" in proc.stderr
    assert "PlanBuilt" in proc.stderr  # SQLMesh's events, at DEBUG
    assert len((proc.stdout + proc.stderr).splitlines()) > 15


@pytest.mark.slow
def test_a_stage_that_fails_before_reporting_rows_prints_a_failed_line(tmp_path):
    """The export to a closed port fails (exit 4) after extract and transform succeeded."""
    proc = _run(tmp_path, env={"FINANCIAL_ETL_EXPORT_URL": "postgresql://etl:secret@127.0.0.1:9/mart"})
    assert proc.returncode == EXIT_CONNECTION, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert [line.split()[0] for line in lines if " rows " in line] == ["extract", "transform"]
    failed = [line for line in lines if line.endswith("FAILED")]
    assert len(failed) == 1 and failed[0].split()[0] == "dbo__Dim_Stock_Metrics", proc.stdout
    assert "secret" not in proc.stdout + proc.stderr
