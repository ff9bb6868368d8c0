"""`dg dev` (the README's UI command) for end-to-end tests: the project on a free 127.0.0.1
port, with DAGSTER_HOME, the warehouse and every file it writes in a temporary directory, and
the whole process group stopped afterwards."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from financial_etl.settings import REPO_ROOT

STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300
DAILY_JOB = "daily_stock_metrics"
DG = Path(sys.executable).with_name("dg")  # dagster-dg-cli's command, beside this Python


@dataclass
class DagsterDev:
    base_url: str
    log: Path
    env: dict[str, str]
    process: subprocess.Popen

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        """POST to /graphql; any GraphQL error fails the test with the server's message."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            f"{self.base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            payload = json.load(response)
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def instance_yaml(home: Path) -> str:
    """The repository's dagster.yaml with its relative data/dagster paths made absolute
    under `home` (relative ones would land in the repository), and the first-visit
    newsletter dialog off so it does not cover the screenshots."""
    text = (REPO_ROOT / "dagster.yaml").read_text()
    text = re.sub(r"(base_dir:\s*)data/dagster", lambda m: f"{m.group(1)}{home / 'data' / 'dagster'}", text)
    assert "base_dir: data/" not in text, text
    return text + "nux:\n  enabled: false\n"


def dagster_env(root: Path, settings: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
    # Two year partitions: December of last year and this year so far.
    start = dt.date(dt.date.today().year - 1, 12, 1)
    env.update(
        {
            "DAGSTER_HOME": str(root / "home"),
            "FINANCIAL_ETL_DUCKDB_PATH": str(root / "data" / "financial_etl.duckdb"),
            "FINANCIAL_ETL_START_DATE": start.isoformat(),
            **(settings or {}),
        }
    )
    return env


def wait_until(what: str, check: Callable[[], object], timeout: float, server: DagsterDev, every: float = 2.0):
    """Poll `check` until it returns something truthy; fail with the server log if the
    server died or the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"dg dev exited ({server.process.returncode}) while waiting for {what}:\n{server.log_tail()}")
        try:
            if result := check():
                return result
        except OSError:  # the webserver is not listening yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{server.log_tail()}")
        time.sleep(every)


LOCATION_STATUS = """{ workspaceOrError { __typename ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def loaded_location(server: DagsterDev) -> str | None:
    data = server.graphql(LOCATION_STATUS)["workspaceOrError"]
    entries = data.get("locationEntries") or []
    for entry in entries:
        error = entry["locationOrLoadError"]
        if error and error["__typename"] == "PythonError":
            pytest.fail(f"code location {entry['name']} failed to load: {error['message']}")
    if entries and all(e["loadStatus"] == "LOADED" and e["locationOrLoadError"] for e in entries):
        return entries[0]["name"]
    return None


def stop(process: subprocess.Popen) -> None:
    """Ask the whole process group to stop, then kill what is left of it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=20)


@contextmanager
def running_dagster_dev(root: Path, settings: Mapping[str, str] | None = None) -> Iterator[DagsterDev]:
    """Start `dg dev` under `root` (FINANCIAL_ETL_* `settings` on top of the defaults), yield
    it once its code location has loaded, and always stop its process group (webserver,
    daemon, code server, run workers)."""
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").write_text(instance_yaml(root / "home"))
    port = free_port()
    log = root / "dagster-dev.log"
    env = dagster_env(root, settings)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(DG), "dev", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = DagsterDev(f"http://127.0.0.1:{port}", log, env, process)
    try:
        wait_until("the code location to load", lambda: loaded_location(server), STARTUP_TIMEOUT_S, server)
        yield server
    finally:
        stop(process)


# --- runs through GraphQL ---------------------------------------------------------------

LAUNCH_RUN = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""

RUN_STATUS = """query Status($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""

RUN_ERRORS = """query Errors($runId: ID!) { logsForRun(runId: $runId, limit: 5000) { __typename
  ... on EventConnection { events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message cause { message } } }
    ... on RunFailureEvent { message } } } } }"""

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def launch_and_wait(
    dagster_dev: DagsterDev, definitions: dict, tags: dict[str, str], timeout: float = RUN_TIMEOUT_S
) -> tuple[str, str]:
    """Launches job daily_stock_metrics with these run tags and waits for the daemon to
    dequeue and finish it: (run id, final status)."""
    run_id = launch(dagster_dev, definitions, tags)
    return run_id, wait_for_run(dagster_dev, run_id, timeout)


def launch(dagster_dev: DagsterDev, definitions: dict, tags: dict[str, str]) -> str:
    """Launches job daily_stock_metrics with these run tags, as the UI's Materialize does: its run id."""
    (repo,) = definitions["repositoriesOrError"]["nodes"]
    launched = dagster_dev.graphql(
        LAUNCH_RUN,
        {
            "params": {
                "selector": {
                    "repositoryLocationName": repo["location"]["name"],
                    "repositoryName": repo["name"],
                    "jobName": DAILY_JOB,
                },
                "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in tags.items()]},
                "runConfigData": {},
            }
        },
    )["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


def wait_for_run(dagster_dev: DagsterDev, run_id: str, timeout: float = RUN_TIMEOUT_S) -> str:
    """The run's final status, once it has one."""

    def finished() -> str | None:
        status = dagster_dev.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        return status if status in TERMINAL else None

    return wait_until(f"run {run_id} to finish", finished, timeout, dagster_dev, every=3)


def run_errors(dagster_dev: DagsterDev, run_id: str) -> list[str]:
    events = dagster_dev.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"].get("events", [])
    return [
        e.get("message")
        or f"{e.get('stepKey')}: {e['error']['message']} {(e['error'].get('cause') or {}).get('message', '')}"
        for e in events
        if len(e) > 1
    ]
