"""The Dagster UI end to end: `dagster dev` on the project's workspace.yaml, checked through
the webserver's GraphQL API, then looked at in headless Chromium with Selenium.

One `dagster dev` serves the whole module (starting it takes ~40 s), with DAGSTER_HOME
and the warehouse in a temporary directory, a start date 60 days back and the synthetic
source (financial_etl_tests/dagster_dev.py). Screenshots go to
financial_etl_tests/artifacts/ (financial_etl_tests/browser.py).
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from financial_etl.calendar import is_session
from financial_etl.settings import load_settings
from financial_etl.transform.chart import HEIGHT_PX, WIDTH_PX
from financial_etl_tests import browser as browser_support
from financial_etl_tests.browser import ARTIFACTS, PAGE_TIMEOUT_S, chromium, open_and_wait, require_chromium
from financial_etl_tests.dagster_dev import DagsterDev, launch_and_wait, run_errors, running_dagster_dev

# asset key -> group
ASSETS = {"raw/eod_prices_raw": "extract", "marts/stock_metrics": "transform", "dbo/Dim_Stock_Metrics": "export"}
MART_CHECKS = {
    "not_null",
    "unique_combination_of_columns",
    "valid_rsi_range",
    "valid_ohlc_prices",
    "open_close_within_high_low",
    "positive_volume",
    "valid_atr",
    "valid_rsi_wilder_range",
    "valid_atr_wilder",
    "macd_histogram_identity",
    "finite_values",
}
SCHEDULES = {"daily_after_close"}
SENSORS = {"new_ticker_backfill", "restated_history_backfill", "run_failure_alerts"}


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    with running_dagster_dev(tmp_path_factory.mktemp("dagster_ui")) as server:
        yield server


# --- GraphQL ---------------------------------------------------------------------------

DEFINITIONS = """{
  assetNodes { assetKey { path } groupName dependencyKeys { path } partitionKeys
    assetChecksOrError { __typename ... on AssetChecks { checks { name } } } }
  repositoriesOrError { __typename ... on RepositoryConnection { nodes { name location { name }
    schedules { name scheduleState { status } } sensors { name sensorState { status } } } } }
}"""

MART_RESULTS = """{
  assetNodes { assetKey { path } assetMaterializations(limit: 1) { runId partition } }
  assetNodeOrError(assetKey: {path: ["marts", "stock_metrics"]}) { __typename ... on AssetNode {
    assetChecksOrError { ... on AssetChecks { checks { name
      executionForLatestMaterialization { runId status evaluation { success } } } } }
    assetMaterializations(limit: 1) { runId partition metadataEntries { __typename label
      ... on IntMetadataEntry { intValue } ... on MarkdownMetadataEntry { mdStr } } } } }
}"""


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
    """The latest NYSE session, as the evening schedule loads it: its year's partition,
    narrowed to that day by the run's financial_etl/start and financial_etl/end tags."""
    session = next(d for n in range(10) if is_session(d := dt.date.today() - dt.timedelta(days=n)))
    partition = str(session.year)
    run_id, status = launch_and_wait(
        dagster_dev,
        definitions,
        {
            "dagster/partition": partition,
            "financial_etl/start": session.isoformat(),
            "financial_etl/end": session.isoformat(),
        },
    )
    if status != "SUCCESS":
        pytest.fail(
            f"run {run_id} for {session} ended {status}: {run_errors(dagster_dev, run_id)}\n{dagster_dev.log_tail()}"
        )
    # Only this one session is loaded: one row per ticker of the universe.
    tickers = load_settings(dagster_dev.env).tickers
    return Materialized(run_id, partition, expected_rows=len(tickers))


@pytest.mark.slow
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


@pytest.mark.slow
def test_materializing_the_latest_session_records_check_results_row_counts_and_the_chart(dagster_dev, materialized):
    data = dagster_dev.graphql(MART_RESULTS)
    latest = {key(n["assetKey"]["path"]): n["assetMaterializations"] for n in data["assetNodes"]}
    for asset in ASSETS:
        assert [(m["runId"], m["partition"]) for m in latest[asset]] == [
            (materialized.run_id, materialized.partition)
        ], asset

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


@pytest.mark.parametrize("ci", [None, "true"])
def test_a_missing_chromium_skips_on_a_developer_machine_and_fails_in_ci(monkeypatch, tmp_path, ci):
    monkeypatch.setattr(browser_support, "CHROMIUM", tmp_path / "no-chromium")
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    expected = pytest.fail.Exception if ci else pytest.skip.Exception
    with pytest.raises(expected, match="no-chromium not installed"):
        require_chromium()


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with chromium() as driver:
        yield driver


def lineage_url(base_url: str) -> str:
    """/asset-groups is "Global asset lineage"; `expanded` opens the three groups so the
    asset nodes, not just the group boxes, are drawn."""
    groups = ",".join(f"global@global:{group}" for group in ASSETS.values())
    return f"{base_url}/asset-groups?{urllib.parse.urlencode({'expanded': groups})}"


@pytest.mark.slow
def test_the_lineage_page_draws_the_three_assets_in_their_groups(dagster_dev, materialized, browser):
    names = [a.split("/")[-1] for a in ASSETS]
    shown = open_and_wait(
        browser,
        lineage_url(dagster_dev.base_url),
        ["Global asset lineage", *ASSETS.values(), *names, f"{len(MART_CHECKS)} / {len(MART_CHECKS)} Passed"],
        "asset-graph.png",
    )
    assert "Materialize all" in shown


@pytest.mark.slow
def test_the_stock_metrics_page_shows_its_latest_materialization_and_checks(dagster_dev, materialized, browser):
    base = f"{dagster_dev.base_url}/assets/marts/stock_metrics"
    open_and_wait(
        browser,
        base,
        ["stock_metrics", "Latest materialization", materialized.partition, "Row count", "Checks", "close_price"],
        "stock-metrics.png",
    )
    shown = open_and_wait(
        browser,
        f"{base}?view=checks",
        [f"Checks ({len(MART_CHECKS)})", *sorted(MART_CHECKS)],
        "stock-metrics-checks.png",
    )
    assert shown.count("Succeeded") >= len(MART_CHECKS)


@pytest.mark.slow
def test_the_chart_opens_as_an_image_from_the_materialization_metadata(dagster_dev, materialized, browser):
    open_and_wait(
        browser,
        f"{dagster_dev.base_url}/assets/marts/stock_metrics?view=events",
        ["chart", "Show Markdown", materialized.partition],
        "stock-metrics-events.png",
    )
    link = browser.find_element(By.XPATH, "//tr[td[normalize-space()='chart']]//*[contains(text(), 'Show Markdown')]")
    link.click()
    image = WebDriverWait(browser, PAGE_TIMEOUT_S).until(
        lambda d: next(
            (
                i
                for i in d.find_elements(By.CSS_SELECTOR, "img[src^='data:image/png;base64,']")
                if d.execute_script("return arguments[0].naturalWidth", i)
            ),
            None,
        )
    )
    # The browser decoded the PNG at its real size.
    assert browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image) == [
        WIDTH_PX,
        HEIGHT_PX,
    ]
    time.sleep(1)  # the dialog fades in
    assert browser.save_screenshot(str(ARTIFACTS / "stock-metrics-chart.png"))


# --- partition status after a range run (last: it replaces the latest materializations) ---

PARTITION_STATUSES = """{ assetNodes { assetKey { path } partitionKeys assetPartitionStatuses { __typename
  ... on TimePartitionStatuses { ranges { status startKey endKey } } } } }"""


def partition_statuses(dagster_dev: DagsterDev) -> dict[str, dict[str, str]]:
    """Each asset's partitions and the status the UI shows for them (absent: never run)."""
    shown = {}
    for node in dagster_dev.graphql(PARTITION_STATUSES)["assetNodes"]:
        keys = node["partitionKeys"]
        statuses = {}
        for r in node["assetPartitionStatuses"]["ranges"]:
            for k in keys[keys.index(r["startKey"]) : keys.index(r["endKey"]) + 1]:
                statuses[k] = r["status"]
        shown[key(node["assetKey"]["path"])] = statuses
    return shown


@pytest.mark.slow
def test_a_range_run_shows_every_partition_materialized_and_a_failed_one_shows_them_failed(dagster_dev, definitions):
    mart = next(n for n in definitions["assetNodes"] if key(n["assetKey"]["path"]) == "marts/stock_metrics")
    keys = mart["partitionKeys"]
    assert len(keys) == 2  # December of last year, and this year
    whole = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]}
    run_id, status = launch_and_wait(dagster_dev, definitions, whole)
    assert status == "SUCCESS", run_errors(dagster_dev, run_id)
    assert partition_statuses(dagster_dev) == {asset: dict.fromkeys(keys, "MATERIALIZED") for asset in ASSETS}

    # The same range with a ticker the extract refuses: the run fails before writing.
    run_id, status = launch_and_wait(dagster_dev, definitions, {**whole, "financial_etl/tickers": "NOT A TICKER"})
    assert status == "FAILURE"
    assert any("NOT A TICKER" in e for e in run_errors(dagster_dev, run_id))
    assert partition_statuses(dagster_dev) == {asset: dict.fromkeys(keys, "FAILED") for asset in ASSETS}
