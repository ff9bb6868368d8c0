"""Headless Chromium for end-to-end tests, driven by Selenium through Debian's
chromedriver (never a driver downloaded by Selenium Manager)."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from financial_etl_tests.helpers import unavailable

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
)
WINDOW = (1600, 1000)
PAGE_TIMEOUT_S = 90


def require_chromium() -> None:
    """Skip on a developer machine without Chromium; in CI (CI set) a missing browser is a
    failure. (conftest.py already stops a run without them: this guards direct use.)"""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    unavailable(f"{', '.join(missing)} not installed (scripts/install-system-packages)")


@contextmanager
def chromium() -> Iterator[webdriver.Chrome]:
    """A headless Chromium with a fresh profile and a WINDOW-sized viewport."""
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
            driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": WINDOW[0],
                    "height": WINDOW[1],
                    "deviceScaleFactor": 1,
                    "mobile": False,
                },
            )
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
