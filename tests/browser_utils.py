"""A real app in a real browser, for tests/test_browser.py and bench/app_bench.py: `streamlit run app.py`
on a free localhost port and Debian's Chromium headless through chromedriver."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def app_server(timeout: float = 60.0, env: dict | None = None) -> Iterator[tuple[str, float]]:
    """(url, seconds until the server answered its health check); the server is stopped on exit."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"),
                             "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                if time.perf_counter() - t0 > timeout:
                    raise RuntimeError(f"streamlit did not start within {timeout:.0f} s") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", time.perf_counter() - t0
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def chrome(width: int = 1400, height: int = 2000):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", f"--window-size={width},{height}"):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def body_text(driver) -> str:
    """The page's text ("" while the page swaps the body)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return driver.find_element(By.TAG_NAME, "body").text
    except StaleElementReferenceException:
        return ""


def until(driver, timeout: float = 120.0):
    """``WebDriverWait`` that looks again when a rerun redraws an element while the condition reads it."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))


def button(driver, label: str, timeout: float = 120.0):
    """The button labelled ``label``, once the page shows it (looked for again when a rerun redraws it)."""
    from selenium.webdriver.common.by import By

    return until(driver, timeout).until(
        lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text == label), None))


def wait_idle(driver, timeout: float = 120.0, settle: float = 0.25) -> None:
    """Until the app has finished its rerun: Streamlit's "running" indicator is gone for ``settle`` s."""
    from selenium.webdriver.common.by import By

    t0 = time.perf_counter()
    quiet_since = None
    while time.perf_counter() - t0 < timeout:
        running = driver.find_elements(By.CSS_SELECTOR, '[data-testid="stStatusWidget"]')
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.perf_counter()
        elif time.perf_counter() - quiet_since >= settle:
            return
        time.sleep(0.05)
    raise TimeoutError("the app kept running")


def widget(driver, testid: str, label: str):
    """The Streamlit widget (``stSelectbox``, ``stSlider``, ``stCheckbox``, ``stTextInput``) labelled ``label``."""
    from selenium.webdriver.common.by import By

    for w in driver.find_elements(By.CSS_SELECTOR, f'[data-testid="{testid}"]'):
        if w.text.split("\n")[0].strip() == label:
            return w
    raise LookupError(f"no {testid} labelled {label!r}")


def choose(driver, label: str, option: str) -> None:
    """Pick ``option`` in the selectbox labelled ``label``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = widget(driver, "stSelectbox", label).find_element(By.TAG_NAME, "input")
    box.click()
    box.send_keys(option)
    box.send_keys(Keys.ENTER)
