"""Test-only: open an HTML file in headless Chromium (Debian's chromium and chromium-driver) and run scripts in it."""

import os
import shutil
from contextlib import contextmanager

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextmanager
def page(path, profile, logged=False):
    """A webdriver showing ``path``; skips (fails where BAGNET_KERAS_REQUIRE_BROWSER=1) without Chromium."""
    required = os.environ.get("BAGNET_KERAS_REQUIRE_BROWSER") == "1"
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        if required:
            pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are required (apt-get install chromium chromium-driver)")
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    if required:
        from selenium import webdriver
    else:
        webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=1200,900",
    ):
        options.add_argument(flag)
    if logged:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    try:
        driver.get(f"file://{path}")
        yield driver
    finally:
        driver.quit()


def screenshot(driver, path):
    """The whole page as a PNG (the window stretched to the page's height)."""
    height = driver.execute_script("return document.body.scrollHeight;")
    driver.set_window_size(1200, min(height + 100, 16000))
    driver.save_screenshot(str(path))
    return path


def logged_page(path, profile):
    """Like `page`, with the console (``driver.get_log('browser')``) and network (``get_log('performance')``) logged."""
    return page(path, profile, logged=True)


def requested_urls(driver):
    """``(document, url)`` of every request since the last call (the performance log's Network events)."""
    import json

    requests = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            params = message["params"]
            requests.append((params.get("documentURL", ""), params["request"]["url"]))
        elif message["method"] == "Network.webSocketCreated":
            requests.append(("", message["params"]["url"]))
    return requests


def full_screenshot(driver, path):
    """The whole page as a PNG, nothing cut off: the window is stretched by the browser's own bars too."""
    height, bars = driver.execute_script(
        "return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight];"
    )
    driver.set_window_size(1200, min(height + bars, 16000))
    driver.save_screenshot(str(path))
    return path
