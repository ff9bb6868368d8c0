"""The Dagster UI end to end: `dagster dev` on the project's workspace.yaml, checked through
the webserver's GraphQL API, then looked at in headless Chromium with Selenium.

One `dagster dev` serves the whole module (starting it takes ~40 s). It runs on a free
127.0.0.1 port with DAGSTER_HOME, the warehouse and the alert log in a temporary
directory, a start date 60 days back and the synthetic source, so nothing outside the
temporary directory is written. Screenshots go to financial_etl_tests/artifacts/.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from financial_etl.calendar import is_session
from financial_etl.chart import HEIGHT_PX, WIDTH_PX
from financial_etl.settings import REPO_ROOT, load_settings

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage")
WINDOW = (1600, 1000)

STARTUP_TIMEOUT_S = 240
RUN_TIMEOUT_S = 300
PAGE_TIMEOUT_S = 90

DAILY_JOB = "daily_stock_metrics"
# asset key -> group
ASSETS = {"raw/eod_prices_raw": "extract", "marts/stock_metrics": "transform", "dbo/Dim_Stock_Metrics": "export"}
MART_CHECKS = {
    "not_null", "unique_combination_of_columns", "valid_rsi_range",
    "valid_ohlc_prices", "positive_volume", "valid_atr",
}
SCHEDULES = {"daily_after_close"}
SENSORS = {"new_ticker_backfill", "restated_history_backfill", "run_failure_alerts"}


# --- dagster dev -----------------------------------------------------------------------


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


def dagster_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINANCIAL_ETL_") and k != "DAGSTER_HOME"}
    start = dt.date.today() - dt.timedelta(days=60)
    env.update({
        "DAGSTER_HOME": str(root / "home"),
        "FINANCIAL_ETL_DUCKDB_PATH": str(root / "data" / "financial_etl.duckdb"),
        "FINANCIAL_ETL_START_DATE": start.isoformat(),
    })
    return env


def wait_until(what: str, check: Callable[[], object], timeout: float, server: DagsterDev, every: float = 2.0):
    """Poll `check` until it returns something truthy; fail with the server log if the
    server died or the time ran out."""
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            pytest.fail(f"dagster dev exited ({server.process.returncode}) while waiting for {what}:\n{server.log_tail()}")
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


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    root = tmp_path_factory.mktemp("dagster_ui")
    (root / "home").mkdir()
    (root / "home" / "dagster.yaml").write_text(instance_yaml(root / "home"))
    port = free_port()
    log = root / "dagster-dev.log"
    env = dagster_env(root)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(REPO_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    server = DagsterDev(f"http://127.0.0.1:{port}", log, env, process)
    try:
        wait_until("the code location to load", lambda: loaded_location(server), STARTUP_TIMEOUT_S, server)
        yield server
    finally:
        stop(process)


# --- GraphQL ---------------------------------------------------------------------------

DEFINITIONS = """{
  assetNodes { assetKey { path } groupName dependencyKeys { path } partitionKeys
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } } }
  repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
    schedules { name scheduleState { status } } sensors { name sensorState { status } } } } }
}"""

LAUNCH_RUN = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on Error { message } } }"""

RUN_STATUS = """query Status($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run { status } } }"""

RUN_ERRORS = """query Errors($runId: ID!) { logsForRun(runId: $runId, limit: 5000) { __typename
  ... on EventConnection { events { __typename
    ... on ExecutionStepFailureEvent { stepKey error { message } }
    ... on RunFailureEvent { message } } } } }"""

MART_RESULTS = """{
  assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId partition } }
  assetNodeOrError(assetKey: {path: ["marts", "stock_metrics"]}) { __typename ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name
      executionForLatestMaterialization { runId status evaluation { success } } } } }
    assetMaterializations(limit: 1) { runId partition metadataEntries { __typename label
      ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr } } } } }
}"""

TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def key(path: Sequence[str]) -> str:
    return "/".join(path)


@dataclass(frozen=True)
class Materialized:
    run_id: str
    partition: str
    expected_rows: int


@pytest.fixture(scope="module")
def definitions(dagster_dev: DagsterDev) -> dict:
    return dagster_dev.graphql(DEFINITIONS)


@pytest.fixture(scope="module")
def materialized(dagster_dev: DagsterDev, definitions: dict) -> Materialized:
    """Launches job daily_stock_metrics for the latest partition that is an NYSE session
    and waits for the daemon to dequeue and finish it."""
    (repo,) = definitions["repositoriesOrError"]["nodes"]
    mart = next(n for n in definitions["assetNodes"] if key(n["assetKey"]["path"]) == "marts/stock_metrics")
    partition = next(p for p in reversed(mart["partitionKeys"]) if is_session(dt.date.fromisoformat(p)))
    launched = dagster_dev.graphql(LAUNCH_RUN, {"params": {
        "selector": {"repositoryLocationName": repo["location"]["name"], "repositoryName": repo["name"], "jobName": DAILY_JOB},
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "runConfigData": {},
    }})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]

    def finished() -> str | None:
        status = dagster_dev.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
        return status if status in TERMINAL else None

    status = wait_until(f"run {run_id} to finish", finished, RUN_TIMEOUT_S, dagster_dev, every=3)
    if status != "SUCCESS":
        events = dagster_dev.graphql(RUN_ERRORS, {"runId": run_id})["logsForRun"].get("events", [])
        errors = [e.get("message") or f"{e.get('stepKey')}: {e['error']['message']}" for e in events if len(e) > 1]
        pytest.fail(f"run {run_id} for {partition} ended {status}: {errors}\n{dagster_dev.log_tail()}")
    # Only this one session is loaded: one row per ticker of the universe.
    tickers = load_settings(dagster_dev.env).tickers
    return Materialized(run_id, partition, expected_rows=len(tickers))


def test_graphql_shows_three_assets_in_lineage_with_the_mart_checks_schedule_and_sensors(definitions):
    nodes = {key(n["assetKey"]["path"]): n for n in definitions["assetNodes"]}
    assert set(nodes) == set(ASSETS)
    assert {k: n["groupName"] for k, n in nodes.items()} == ASSETS
    assert [key(d["path"]) for d in nodes["raw/eod_prices_raw"]["dependencyKeys"]] == []
    assert [key(d["path"]) for d in nodes["marts/stock_metrics"]["dependencyKeys"]] == ["raw/eod_prices_raw"]
    assert [key(d["path"]) for d in nodes["dbo/Dim_Stock_Metrics"]["dependencyKeys"]] == ["marts/stock_metrics"]
    checks = nodes["marts/stock_metrics"]["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks"
    assert {c["name"] for c in checks["checks"]} == MART_CHECKS

    (repo,) = definitions["repositoriesOrError"]["nodes"]
    assert {s["name"] for s in repo["schedules"]} == SCHEDULES
    assert {s["name"] for s in repo["sensors"]} == SENSORS
    # All on by default, so `dagster dev` alone runs the automation.
    assert {s["scheduleState"]["status"] for s in repo["schedules"]} == {"RUNNING"}
    assert {s["sensorState"]["status"] for s in repo["sensors"]} == {"RUNNING"}


def test_materializing_the_latest_session_records_check_results_row_counts_and_the_chart(dagster_dev, materialized):
    data = dagster_dev.graphql(MART_RESULTS)
    latest = {key(n["assetKey"]["path"]): n["assetMaterializations"] for n in data["assetNodes"]}
    for asset in ASSETS:
        assert [(m["runId"], m["partition"]) for m in latest[asset]] == [(materialized.run_id, materialized.partition)], asset

    mart = data["assetNodeOrError"]
    executions = {c["name"]: c["executionForLatestMaterialization"] for c in mart["assetChecksOrError"]["checks"]}
    assert set(executions) == MART_CHECKS
    for name, execution in executions.items():
        assert execution is not None, f"{name} never ran"
        assert (execution["status"], execution["runId"]) == ("SUCCEEDED", materialized.run_id), name
        assert execution["evaluation"]["success"] is True, name

    (materialization,) = mart["assetMaterializations"]
    entries = {e["label"]: e for e in materialization["metadataEntries"]}
    assert entries["dagster/row_count"]["intValue"] == materialized.expected_rows > 0
    assert entries["dagster/partition_row_count"]["intValue"] == materialized.expected_rows
    assert entries["chart"]["__typename"] == "MarkdownMetadataEntry"
    assert "](data:image/png;base64," in entries["chart"]["mdStr"]


# --- the browser -----------------------------------------------------------------------


def require_chromium() -> None:
    """Skip on a developer machine without Chromium; in CI (CI set) a missing browser is a
    failure, because .ci/run installs it."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set but {reason}")
    pytest.skip(reason)


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_missing_chromium_skips_on_a_developer_machine_and_fails_in_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setattr(sys.modules[__name__], "CHROMIUM", tmp_path / "no-chromium")
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no-chromium not installed"):
        require_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        options.add_argument(f"--user-data-dir={profile}")
        # The system driver, given explicitly: Selenium Manager never downloads one.
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            # The viewport itself, not the window with its frame, is WINDOW.
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": WINDOW[0], "height": WINDOW[1], "deviceScaleFactor": 1, "mobile": False,
            })
            yield driver
        finally:
            driver.quit()


SHOWN_TEXT = """return [document.body.innerText].concat(
  Array.from(document.querySelectorAll('[title]')).filter(e => e.offsetParent !== null).map(e => e.title)
).join('\\n');"""


def open_and_wait(driver: webdriver.Chrome, url: str, texts: Sequence[str], shot: str) -> str:
    """Open `url`, wait until every text is shown (visible text, or the title of a visible
    element the UI truncates), save the screenshot; on a timeout save it anyway and fail
    naming what never appeared."""
    ARTIFACTS.mkdir(exist_ok=True)
    driver.get(url)
    missing: list[str] = list(texts)

    def all_shown(d) -> bool:
        shown = d.execute_script(SHOWN_TEXT)
        missing[:] = [t for t in texts if t not in shown]
        return not missing

    try:
        WebDriverWait(driver, PAGE_TIMEOUT_S, poll_frequency=0.5).until(all_shown)
    except TimeoutException:
        driver.save_screenshot(str(ARTIFACTS / f"FAILED-{shot}"))
        pytest.fail(f"{url}: never showed {missing} (screenshot {ARTIFACTS / ('FAILED-' + shot)})")
    time.sleep(1.5)  # let the graph finish its zoom-to-fit before the picture
    assert driver.save_screenshot(str(ARTIFACTS / shot))
    return driver.execute_script(SHOWN_TEXT)


def lineage_url(base_url: str) -> str:
    """/asset-groups is "Global asset lineage"; `expanded` opens the three groups so the
    asset nodes, not just the group boxes, are drawn."""
    groups = ",".join(f"global@global:{group}" for group in ASSETS.values())
    return f"{base_url}/asset-groups?{urllib.parse.urlencode({'expanded': groups})}"


def test_the_lineage_page_draws_the_three_assets_in_their_groups(dagster_dev, materialized, browser):
    names = [a.split("/")[-1] for a in ASSETS]
    shown = open_and_wait(
        browser, lineage_url(dagster_dev.base_url),
        ["Global asset lineage", *ASSETS.values(), *names, "6 / 6 Passed"], "asset-graph.png",
    )
    assert "Materialize all" in shown


def test_the_stock_metrics_page_shows_its_latest_materialization_and_checks(dagster_dev, materialized, browser):
    base = f"{dagster_dev.base_url}/assets/marts/stock_metrics"
    open_and_wait(browser, base, ["stock_metrics", "Latest materialization", materialized.partition,
                                  "Row count", "Checks", "close_price"], "stock-metrics.png")
    shown = open_and_wait(browser, f"{base}?view=checks", [f"Checks ({len(MART_CHECKS)})", *sorted(MART_CHECKS)],
                          "stock-metrics-checks.png")
    assert shown.count("Succeeded") >= len(MART_CHECKS)


def test_the_chart_opens_as_an_image_from_the_materialization_metadata(dagster_dev, materialized, browser):
    open_and_wait(browser, f"{dagster_dev.base_url}/assets/marts/stock_metrics?view=events",
                  ["chart", "Show Markdown", materialized.partition], "stock-metrics-events.png")
    link = browser.find_element(By.XPATH, "//tr[td[normalize-space()='chart']]//*[contains(text(), 'Show Markdown')]")
    link.click()
    image = WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda d: next((i for i in d.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png;base64,']")
                        if d.execute_script("return arguments[0].naturalWidth", i)), None)
    )
    # The browser decoded the PNG at its real size.
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image) == [WIDTH_PX, HEIGHT_PX]
    time.sleep(1)  # the dialog fades in
    assert browser.save_screenshot(str(ARTIFACTS / "stock-metrics-chart.png"))
