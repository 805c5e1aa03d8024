"""Real-browser tests: one `streamlit run app.py` on localhost for the module, Debian's Chromium headless through
chromedriver: a deep link to the Thresholds page (a threshold in the URL) in a fresh browser session, the Predict
page's deep link, its sample button, an upload and one tweak, and a slow method (Score-CAM) stopped while it runs.
Screenshots go to a temporary folder."""
from __future__ import annotations


import pytest

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.thresholds import ThresholdSweep
from pneumo_core.files import ASSETS
from tests.browser_utils import CHROMIUM, DRIVER, app_server, body_text, button, choose, chrome, wait_idle

pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not "
                                "installed (.ci/run installs them with apt-get)")


@pytest.fixture(scope="module")
def server():
    """One ``streamlit run app.py`` for the module's tests (each opens its own browser session)."""
    with app_server(timeout=120) as (url, _):
        yield url


def test_deep_link_to_thresholds_in_chromium(server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]  # the page opens on the best model
    test = selection.load_choice(ASSETS, *opt, "test")
    m = ThresholdSweep(test.y_binary, test.p_positive).at(0.3)
    driver = chrome()
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
        wait_idle(driver)  # the charts and tables drawn before the picture
        driver.save_screenshot(str(tmp_path / "thresholds.png"))
        assert (tmp_path / "thresholds.png").stat().st_size > 10_000
    finally:
        driver.quit()


def test_predict_deep_link_and_sample_button_in_chromium(server, tmp_path):
    """``/predict`` opens the Predict page (it used to say "Page not found"); ``/`` goes on to it; there the
    sample button gives verdicts and a heatmap."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    upload_hint = "Upload one or more frontal chest X-rays"
    try:
        for url in (f"{server}/predict", f"{server}/"):
            driver.get(url)
            WebDriverWait(driver, 120).until(
                lambda d: upload_hint in (t := d.find_element(By.TAG_NAME, "body").text) and "Models from" in t)
            assert "Page not found" not in driver.find_element(By.TAG_NAME, "body").text
            assert driver.current_url.rstrip("/").endswith("/predict"), driver.current_url
        button(driver, "Try a sample").click()
        # the verdict table is drawn on a canvas: wait for the OOD line and the heatmap's caption
        WebDriverWait(driver, 180).until(lambda d: "OOD score" in d.find_element(By.TAG_NAME, "body").text
                                         and "Grad-CAM for" in d.find_element(By.TAG_NAME, "body").text)
        body = driver.find_element(By.TAG_NAME, "body").text
        assert "Download results (CSV)" in body and "not for clinical use" in body.lower()
        driver.save_screenshot(str(tmp_path / "predict.png"))
    finally:
        driver.quit()


def test_upload_and_one_tweak_on_predict_in_chromium(server, tmp_path, virus_image):
    """A dataset X-ray through the real file input, then "Class to explain" switched: the overlay is redrawn
    for the new class (from the cached CAM path), the verdicts stay."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome()
    try:
        driver.get(f"{server}/predict")
        upload = WebDriverWait(driver, 120).until(lambda d: d.find_element(By.CSS_SELECTOR, 'input[type="file"]'))
        upload.send_keys(str(virus_image))
        WebDriverWait(driver, 240).until(lambda d: virus_image.name in body_text(d) and "OOD score" in body_text(d)
                                         and "Grad-CAM for" in body_text(d))
        wait_idle(driver)
        before = body_text(driver)
        assert "Grad-CAM for NORMAL" not in before
        choose(driver, "Class to explain", "NORMAL")
        WebDriverWait(driver, 120).until(lambda d: "Grad-CAM for NORMAL" in body_text(d))
        wait_idle(driver)
        assert "OOD score" in body_text(driver) and virus_image.name in body_text(driver)
        driver.save_screenshot(str(tmp_path / "predict_upload.png"))
    finally:
        driver.quit()



@pytest.mark.slow
def test_a_slow_method_runs_in_the_background_and_stops_in_chromium(server, tmp_path):
    """Score-CAM on ResNet18 (~45 s here): its progress moves while the opacity slider still answers, and Stop ends
    it within a batch: the progress gone, "Stopped before it finished", the Run button offered again, no error."""
    from selenium.webdriver.common.by import By

    from bench.app_bench import slider_step
    from tests.browser_utils import until, widget

    def run_button(d):
        return next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text.startswith("Run Score-CAM")), None)

    def progress(d) -> str:
        bars = d.find_elements(By.CSS_SELECTOR, '[data-testid="stProgress"]')
        return bars[0].text if bars else ""

    driver = chrome(1440, 1000)
    try:
        driver.get(f"{server}/predict")
        button(driver, "Try a sample").click()
        until(driver, 240).until(lambda d: "Grad-CAM for" in body_text(d))
        wait_idle(driver)
        choose(driver, "Model", "binary/resnet18")
        until(driver, 60).until(lambda d: "resnet18 at" in body_text(d))
        wait_idle(driver)
        choose(driver, "Method", "Score-CAM")
        until(driver, 120).until(run_button).click()
        until(driver, 60).until(lambda d: "Score-CAM: " in progress(d) and button(d, "Stop Score-CAM", 1))
        first = progress(driver)
        until(driver, 30).until(lambda d: progress(d) not in ("", first))  # it moves on its own, once a second
        slider_step(driver, "Opacity")  # another widget answers meanwhile
        until(driver, 10).until(lambda d: "0.50" in widget(d, "stSlider", "Opacity").text)
        assert progress(driver) and not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        button(driver, "Stop Score-CAM", 10).click()
        until(driver, 60).until(lambda d: "Stopped before it finished" in body_text(d))
        wait_idle(driver)
        driver.save_screenshot(str(tmp_path / "predict_stopped.png"))
        assert not progress(driver) and run_button(driver) is not None
        assert not driver.find_elements(By.CSS_SELECTOR, '[data-testid="stException"]')
        assert "Score-CAM for" not in body_text(driver)  # no map: it did not finish
    finally:
        driver.quit()
