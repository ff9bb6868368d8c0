"""`dg`, Dagster's project CLI, on the project as the README gives it: `dg check defs`
loads the definitions the way every Dagster tool does (CI runs it here)."""

import os
import subprocess

import pytest

from financial_etl.settings import REPO_ROOT
from financial_etl_tests.dagster_dev import DG


def dg_check_defs(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(DG), "check", "defs"], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


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

