"""One real-browser test: `streamlit run app.py` on localhost, Debian's Chromium headless through
chromedriver, the Thresholds page opened with a threshold in the URL. The screenshot is saved under
test-output/."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.evaluation.thresholds import ThresholdSweep
from pneumo_core.training.zoo import ASSETS, prediction_index

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture()
def server():
    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.headless", "true",
                             "--server.port", str(port), "--server.address", "127.0.0.1",
                             "--browser.gatherUsageStats", "false"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("streamlit did not start within 60 s")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_thresholds_page_in_chromium(server):
    if not (CHROMIUM and DRIVER):
        pytest.fail("Debian's chromium and chromium-driver are needed (.ci/run installs them with apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    idx = prediction_index(ASSETS)
    first = idx[(idx.task == "binary") & (idx.seed >= 0) & (idx.split == "test")].iloc[0]
    test = read_predictions(first.path)
    m = ThresholdSweep(test.y_binary, test.p_positive).at(0.3)

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1400,2000"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=opts)
    try:
        driver.get(f"{server}/thresholds?threshold=0.3")
        expected = f"TP {m['tp']} · FP {m['fp']} · TN {m['tn']} · FN {m['fn']}"
        # the page's numbers and app.py's sidebar (proof the page ran through app.py's navigation)
        WebDriverWait(driver, 120).until(
            lambda d: expected in (t := d.find_element(By.TAG_NAME, "body").text) and "Models from" in t)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "not for clinical use" in body.lower()
        assert "Thresholds" in body
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 3)
        time.sleep(3)  # let the charts and tables finish drawing before the picture
        OUT.mkdir(exist_ok=True)
        driver.save_screenshot(str(OUT / "thresholds.png"))
        assert (OUT / "thresholds.png").stat().st_size > 10_000
    finally:
        driver.quit()
