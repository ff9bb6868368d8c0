"""What Dagster's partition bookkeeping alone costs: three chained assets that do no work,
one range run over 2004-08 to 2013-03 (the history benchmark's span), on a persistent
SQLite DAGSTER_HOME, per partition granularity. Each variant runs in a fresh process.

This is how the project chose year partitions (README, "Partitions: why years"): the
cost is per partition and asset, so only fewer partitions make a long history cheap.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.orchestration import tree_bytes

CRONS = {"daily": "0 0 * * 1-5", "weekly": "0 0 * * 1", "monthly": "0 0 1 * *", "yearly": "0 0 1 1 *"}
FMTS = {"daily": "%Y-%m-%d", "weekly": "%Y-%m-%d", "monthly": "%Y-%m-%d", "yearly": "%Y"}
STARTS = {"daily": "2004-08-19", "weekly": "2004-08-16", "monthly": "2004-08-01", "yearly": "2004"}
# Exclusive: the last partition is the one holding 2013-03-01.
ENDS = {"daily": "2013-03-02", "weekly": "2013-03-04", "monthly": "2013-04-01", "yearly": "2014"}


def variant(granularity: str, planned_subset: bool) -> dict:
    """Runs in a child: one range run of three no-op assets over every partition."""
    if planned_subset:
        os.environ["DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"] = "1"
    home = Path(tempfile.mkdtemp(prefix="partition_cost_"))
    (home / "dagster.yaml").write_text(
        f"storage:\n  sqlite:\n    base_dir: {home}/storage\ntelemetry:\n  enabled: false\n"
    )
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import (
        BackfillPolicy,
        DagsterInstance,
        Definitions,
        MaterializeResult,
        TimeWindowPartitionsDefinition,
        asset,
        define_asset_job,
    )

    partitions = TimeWindowPartitionsDefinition(
        cron_schedule=CRONS[granularity],
        start=STARTS[granularity],
        end=ENDS[granularity],
        fmt=FMTS[granularity],
        timezone="America/New_York",
    )
    policy = BackfillPolicy.single_run()

    @asset(partitions_def=partitions, backfill_policy=policy)
    def first():
        return MaterializeResult(metadata={"rows": 1})

    @asset(partitions_def=partitions, backfill_policy=policy, deps=[first])
    def second():
        return MaterializeResult(metadata={"rows": 1})

    @asset(partitions_def=partitions, backfill_policy=policy, deps=[second])
    def third():
        return MaterializeResult(metadata={"rows": 1})

    job = Definitions(assets=[first, second, third], jobs=[define_asset_job("j", partitions_def=partitions)])
    keys = partitions.get_partition_keys()
    with DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = job.resolve_job_def("j").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        )
        wall = time.perf_counter() - started
    assert result.success
    return {"partitions": len(keys), "wall_s": wall, "dagster_home_mb": tree_bytes(home) / 1e6}


def run(progress=print) -> list[dict]:
    rows = []
    for granularity, subset in (
        ("daily", False),
        ("daily", True),
        ("weekly", False),
        ("monthly", False),
        ("yearly", False),
    ):
        progress(f"{granularity}{' (one planned event per asset)' if subset else ''}")
        code = (
            "import json; from benchmarks.partition_cost import variant; "
            f"print(json.dumps(variant({granularity!r}, {subset})))"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        import json

        rows.append({"granularity": granularity, "planned_subset": subset, **json.loads(proc.stdout.splitlines()[-1])})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| partitions | range run of 3 no-op assets | DAGSTER_HOME | per partition and asset |",
        "|---|---|---|---|",
    ]
    for r in rows:
        name = f"{r['granularity']}, {r['partitions']:,}" + (
            " (`DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1`)" if r["planned_subset"] else ""
        )
        lines.append(
            f"| {name} | {r['wall_s']:.1f} s | {r['dagster_home_mb']:.1f} MB | "
            f"{1000 * r['wall_s'] / (3 * r['partitions']):.0f} ms |"
        )
    return "\n".join(lines) + "\n"
