"""The graph as an operator sees it: one lineage raw -> mart -> export, shared partitions.

Snapshot-style: a change to keys, groups, kinds or dependencies shows up here in review.
"""

import subprocess
import sys

from dagster import AssetKey

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


def test_dagster_definitions_validate_passes(workdir):
    proc = subprocess.run(
        [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All code locations passed validation" in proc.stdout + proc.stderr
