"""Regenerates docs/screenshot.png, the README's picture: the Predict page after "Try a sample", 1440 x 1000.

Run from the repository root with the project's venv: `python -m bench.screenshot`.
Needs Debian's `chromium` and `chromedriver` (as the browser tests do). The page is drawn at 90 % (1600 CSS px wide)
and scrolled to the sample's verdicts, so the verdict table and its Grad-CAM fit in one picture; Streamlit's
toolbar is hidden. The PNG is reduced to 256 colours so it stays small (under 400 KB).
"""
from __future__ import annotations

import time
from pathlib import Path

from tests.browser_utils import app_server, body_text, chrome

ROOT = Path(__file__).resolve().parent.parent

OUT = ROOT / "docs" / "screenshot.png"
WIDTH, HEIGHT = 1440, 1000
SCALE = 0.9  # device pixels per CSS pixel: the page is laid out 1600 CSS px wide

# Scroll the page's scrolling container so that `el` sits `margin` CSS px below its top.
SCROLL_TO = """
const el = arguments[0], margin = arguments[1];
let box = el.parentElement;
while (box && !(box.scrollHeight > box.clientHeight && /(auto|scroll)/.test(getComputedStyle(box).overflowY))) {
  box = box.parentElement;
}
box = box || document.scrollingElement;
box.scrollTop += el.getBoundingClientRect().top - box.getBoundingClientRect().top - margin;
"""


def take(out: Path = OUT) -> Path:
    from PIL import Image
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with app_server(timeout=120, env={"STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal"}) as (url, _):
        driver = chrome(WIDTH, HEIGHT)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": round(WIDTH / SCALE), "height": round(HEIGHT / SCALE) + 1, "deviceScaleFactor": SCALE,
                "mobile": False})
            driver.get(url)
            button = WebDriverWait(driver, 180, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: next((b for b in d.find_elements(By.TAG_NAME, "button") if b.text == "Try a sample"), None))
            button.click()
            WebDriverWait(driver, 300).until(lambda d: "OOD score" in body_text(d) and "Grad-CAM for" in body_text(d))
            time.sleep(5)  # let the table, the heatmap and the images finish drawing
            # the mouse off the button (no tooltip), the sample's name and verdicts at the top
            driver.execute_cdp_cmd("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": 100, "y": 1050})
            name = driver.find_element(By.XPATH, "//*[contains(text(), 'OOD score')]")
            driver.execute_script(SCROLL_TO, name, 48)
            time.sleep(2)
            raw = out.with_suffix(".raw.png")
            driver.save_screenshot(str(raw))
        finally:
            driver.quit()
    img = Image.open(raw).convert("RGB").crop((0, 0, WIDTH, HEIGHT))
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(out, optimize=True)
    raw.unlink()
    return out


if __name__ == "__main__":
    path = take()
    print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")
