"""`dg`, Dagster's project CLI, on the project as the README gives it: `dg check defs`
loads the definitions the way every Dagster tool does (CI runs it here), and `dg dev`
serves them, freshness policies included."""

import os
import subprocess

import pytest

from financial_etl.settings import REPO_ROOT
from financial_etl_tests.dagster_dev import DG, running_dagster_dev

DEADLINE = "FINANCIAL_ETL_FRESHNESS_DEADLINE_CRON"


def dg_check_defs(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(DG), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def dg_env(workdir) -> dict[str, str]:
    """The warehouse in a temporary folder; no DAGSTER_HOME, so an ephemeral instance."""
    return dict(os.environ)


@pytest.mark.slow
def test_dg_check_defs_passes(dg_env):
    proc = dg_check_defs(dg_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "All definitions loaded successfully." in proc.stdout


@pytest.mark.slow
def test_dg_check_defs_fails_on_a_bad_setting_and_names_it(dg_env):
    proc = dg_check_defs({**dg_env, "FINANCIAL_ETL_SOURCE": "bloomberg"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FINANCIAL_ETL_SOURCE='bloomberg' is not a known source" in proc.stdout + proc.stderr
    assert "All definitions loaded successfully." not in proc.stdout


FRESHNESS = """{ assetNodes { assetKey { path }
  internalFreshnessPolicy { __typename ... on CronFreshnessPolicy { deadlineCron lowerBoundDeltaSeconds timezone } }
  freshnessStatusInfo { freshnessStatus } } }"""


@pytest.mark.slow
def test_dg_dev_serves_the_freshness_deadline_that_the_setting_gives(tmp_path):
    with running_dagster_dev(tmp_path, {DEADLINE: "30 22 * * 1-5"}) as server:
        nodes = {"/".join(n["assetKey"]["path"]): n for n in server.graphql(FRESHNESS)["assetNodes"]}
    due = {
        "__typename": "CronFreshnessPolicy",
        "deadlineCron": "30 22 * * 1-5",
        "lowerBoundDeltaSeconds": 6 * 3600 + 30 * 60,
        "timezone": "America/New_York",
    }  # since the 16:00 close
    assert {key: n["internalFreshnessPolicy"] for key, n in nodes.items()} == {
        "raw/eod_prices_raw": None,
        "marts/stock_metrics": due,
        "dbo/Dim_Stock_Metrics": due,
    }
    # Nothing materialized yet: the UI can say neither on time nor late.
    assert nodes["marts/stock_metrics"]["freshnessStatusInfo"] == {"freshnessStatus": "UNKNOWN"}
    assert nodes["raw/eod_prices_raw"]["freshnessStatusInfo"] is None
