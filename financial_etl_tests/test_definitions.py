"""The graph as an operator sees it: one lineage raw -> mart -> export, shared partitions.

Snapshot-style: a change to keys, groups, kinds or dependencies shows up here in review.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetKey, Definitions

from financial_etl.definitions import DAILY_JOB, build_definitions
from financial_etl.settings import REPO_ROOT, load_settings

RAW = AssetKey(["raw", "eod_prices_raw"])
MART = AssetKey(["marts", "stock_metrics"])
EXPORT = AssetKey(["dbo", "Dim_Stock_Metrics"])


def _specs(workdir):
    defs = build_definitions(load_settings())
    return defs, {spec.key: spec for spec in defs.resolve_all_asset_specs()}


def test_the_three_assets_form_one_lineage_graph(workdir):
    _, specs = _specs(workdir)
    assert set(specs) == {RAW, MART, EXPORT}
    assert [d.asset_key for d in specs[RAW].deps] == []
    assert [d.asset_key for d in specs[MART].deps] == [RAW]
    assert [d.asset_key for d in specs[EXPORT].deps] == [MART]


def test_groups_and_kinds(workdir):
    _, specs = _specs(workdir)
    assert {k: s.group_name for k, s in specs.items()} == {RAW: "extract", MART: "transform", EXPORT: "export"}
    assert specs[RAW].kinds == {"dlt", "duckdb"}
    assert specs[MART].kinds == {"sqlmesh", "duckdb"}
    assert specs[EXPORT].kinds == {"dlt", "duckdb"}
    assert all(s.description for s in specs.values())


def test_export_kind_is_mssql_when_a_server_is_configured(workdir, monkeypatch):
    monkeypatch.setenv("FINANCIAL_ETL_MSSQL_HOST", "sql.example.internal")
    monkeypatch.setenv("FINANCIAL_ETL_MSSQL_USERNAME", "etl")
    monkeypatch.setenv("FINANCIAL_ETL_MSSQL_PASSWORD", "not-shown")
    _, specs = _specs(workdir)
    assert specs[EXPORT].kinds == {"dlt", "mssql"}


def test_all_assets_share_one_yearly_partitioning_from_the_start_year(workdir, clean_env):
    clean_env.setenv("FINANCIAL_ETL_START_DATE", "2004-08-19")
    defs, specs = _specs(workdir)
    partitions = {key: spec.partitions_def for key, spec in specs.items()}
    assert partitions[RAW] == partitions[MART] == partitions[EXPORT]
    keys = partitions[RAW].get_partition_keys(current_time=__import__("datetime").datetime(2013, 3, 1))
    # The start date's year is the first partition; the current year's partition exists.
    assert keys == [str(year) for year in range(2004, 2014)]
    window = partitions[RAW].time_window_for_partition_key("2008")
    assert (window.start.date().isoformat(), window.end.date().isoformat()) == ("2008-01-01", "2009-01-01")
    for key in (RAW, MART, EXPORT):  # a backfill of a range runs as one run
        assert defs.resolve_assets_def(key).backfill_policy.max_partitions_per_run is None
    job = defs.resolve_job_def(DAILY_JOB)
    assert set(job.asset_layer.executable_asset_keys) >= {RAW, MART, EXPORT}


@pytest.mark.slow
def test_dagster_definitions_validate_passes(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr


# Variables the stages set when they use dlt or SQLMesh (this test process has): the
# subprocesses start without them, as a fresh process would.
_SET_BY_THE_PROJECT = ("RUNTIME__", "NORMALIZE__", "MAX_FORK_WORKERS", "DLT_")


def _python(code: str, env: dict[str, str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _refused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("warehouse", ["duckdb", "postgres"])
def test_loading_the_definitions_creates_no_file_folder_lock_or_database(tmp_path, warehouse):
    """A fresh process loads the code location as Dagster's tools do, with DAGSTER_HOME, the
    warehouse and HOME (dlt's global folder, ~/.dlt) all under tmp_path, none existing yet:
    nothing appears there, so no pipeline folder, lock file or DuckDB file was created. A
    PostgreSQL warehouse on a port nobody listens on: loading never connects to it."""
    fresh = _SET_BY_THE_PROJECT + ("FINANCIAL_ETL_", "DAGSTER_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(fresh)}
    env.update(
        HOME=str(tmp_path / "home"),
        DAGSTER_HOME=str(tmp_path / "dagster_home"),
        FINANCIAL_ETL_DUCKDB_PATH=str(tmp_path / "data" / "financial_etl.duckdb"),
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])),
    )
    if warehouse == "postgres":
        env["FINANCIAL_ETL_WAREHOUSE"] = f"postgresql://etl:not-shown@127.0.0.1:{_refused_port()}/warehouse"
    out = _python(
        "from financial_etl.definitions import defs\nspecs = defs().resolve_all_asset_specs()\n"
        "import dlt\nprint(len(specs), dlt.config['runtime.dlthub_telemetry'])",
        env,
    )
    assert out.split() == ["3", "False"]  # the definitions loaded, dlt's usage reporting off from the start
    # SQLMesh records an anonymous user id when it loads a project, even with its analytics
    # off (sqlmesh.core.analytics.collector): once per home folder, not the pipeline's.
    assert _files(tmp_path) == ["home", "home/.sqlmesh", "home/.sqlmesh/user.yaml"]


def test_importing_the_package_leaves_the_environment_unchanged():
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SET_BY_THE_PROJECT)}
    code = (
        "import json, os\nbefore = dict(os.environ)\nimport financial_etl\n"
        "print(json.dumps({k: v for k, v in os.environ.items() if before.get(k) != v}))"
    )
    assert json.loads(_python(code, env)) == {}


SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def definitions_snapshot(defs: Definitions) -> dict:
    """What an operator sees of the graph: assets, checks, partitions, freshness, jobs, schedules, sensors."""
    assets = {}
    for spec in defs.resolve_all_asset_specs():
        assets_def = defs.resolve_assets_def(spec.key)
        retry = assets_def.op.retry_policy
        assets[spec.key.to_user_string()] = {
            "group": spec.group_name,
            "kinds": sorted(spec.kinds),
            "owners": list(spec.owners),
            "deps": sorted(d.asset_key.to_user_string() for d in spec.deps),
            "partitions": repr(spec.partitions_def) if spec.partitions_def else None,
            "backfill_policy": repr(assets_def.backfill_policy),
            "retry_policy": repr(retry) if retry else None,
            "freshness_policy": repr(spec.freshness_policy) if spec.freshness_policy else None,
        }
    graph = defs.resolve_asset_graph()
    checks = {}
    for key in graph.asset_check_keys:
        check = graph.get_check_spec(key)
        checks[f"{check.asset_key.to_user_string()}:{check.name}"] = {
            "blocking": check.blocking,
            "partitioned": check.partitions_def is not None,
        }
    return {
        "assets": assets,
        "checks": checks,
        "jobs": sorted(j.name for j in defs.resolve_all_job_defs() if not j.name.startswith("__")),
        "schedules": {
            s.name: {
                "cron": s.cron_schedule,
                "timezone": s.execution_timezone,
                "job": s.job_name,
                "default_status": str(s.default_status),
            }
            for s in defs.schedules or []
        },
        "sensors": {
            s.name: {
                "type": type(s).__name__,
                "min_interval": s.minimum_interval_seconds,
                "default_status": str(s.default_status),
            }
            for s in defs.sensors or []
        },
    }


def test_the_definitions_match_the_reviewed_snapshot(workdir):
    """A change to keys, checks, partitions, jobs, schedules or sensors must show in review:
    regenerate the snapshot on purpose (`python -m financial_etl_tests.test_definitions`)."""
    got = json.loads(json.dumps(definitions_snapshot(build_definitions(load_settings())), sort_keys=True))
    assert got == json.loads(SNAPSHOT.read_text())


if __name__ == "__main__":  # regenerate the snapshot after a reviewed change
    import os
    import tempfile

    os.environ["FINANCIAL_ETL_DUCKDB_PATH"] = str(Path(tempfile.mkdtemp()) / "financial_etl.duckdb")
    SNAPSHOT.write_text(
        json.dumps(definitions_snapshot(build_definitions(load_settings())), indent=2, sort_keys=True) + "\n"
    )
