"""Regenerates docs/screenshot.png, the README's picture: the Predict page after "Try a sample", 1440 x 1000.

Run from the repository root with the project's venv: `python -m bench.screenshot`; with `--pages DIR`, every
view of Predict, Compare, Audit and the Lesson at 1440 x 1000 and 400 x 850 into DIR, printing each one's image
widths and anything cut off at the screen's edges.
Needs Debian's `chromium` and `chromedriver` (as the browser tests do). The page is drawn at 90 % (1600 CSS px wide)
and scrolled to the sample's verdicts, so the verdict table and its Grad-CAM fit in one picture; Streamlit's
toolbar is hidden. The PNG is reduced to 256 colours so it stays small (under 400 KB).
"""
from __future__ import annotations

import time
from pathlib import Path

from tests.browser_utils import app_server, body_text, button, chrome

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
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with app_server(timeout=120, env={"STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal"}) as (url, _):
        driver = chrome(WIDTH, HEIGHT)
        try:
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                "width": round(WIDTH / SCALE), "height": round(HEIGHT / SCALE) + 1, "deviceScaleFactor": SCALE,
                "mobile": False})
            driver.get(url)
            button(driver, "Try a sample", 180).click()
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


#: (name, path, what shows the page is drawn, a button to press first or None) for :func:`pages`
VIEWS = [
    ("predict", "/predict", "Grad-CAM for", "Try a sample"),
    ("compare", "/compare", "grid is", None),
    ("audit", "/audit", "Least lung focus", None),
    ("lesson1", "/lesson?step=1", "the model said", "PNEUMONIA"),
    ("lesson2", "/lesson?step=2", "not a chest X-ray", None),
    ("lesson3", "/lesson?step=3", "Sick children sent home", None),
    ("lesson4", "/lesson?step=4", "validation X-rays", None),
    ("lesson5", "/lesson?step=5", "most confident first", None),
]
SIZES = [(1440, 1000), (400, 850)]  # a laptop or projector; a phone

# Elements past the viewport's left or right edge (a table or chart scrolling inside its own box is not counted).
CUT_OFF = """
const out = [], w = window.innerWidth;
for (const el of document.querySelectorAll('[data-testid="stMain"] [data-testid]')) {
  const id = el.dataset.testid;
  if (el.closest('[data-testid="stDataFrame"], [data-testid="stPlotlyChart"], [data-testid="stTabs"] [role="tablist"]')
      && !['stDataFrame', 'stPlotlyChart'].includes(id)) continue;
  const r = el.getBoundingClientRect();
  if (r.width > 0 && (r.right > w + 1 || r.left < -1)) out.push(id + ': ' + (el.innerText || '').slice(0, 60));
}
return out;
"""
MAIN_HEIGHT = "const m = document.querySelector('[data-testid=\"stMain\"]'); return m ? m.scrollHeight : 0;"


def pages(out_dir: Path, views=VIEWS, sizes=SIZES) -> dict[str, dict]:
    """Each view at each size in headless Chromium: the widths of its images (CSS px), what is cut off at the
    viewport's edges, and a full-height screenshot ``out_dir/<view>_<width>.png``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from tests.browser_utils import wait_idle

    out_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, dict] = {}
    with app_server(timeout=120, env={"STREAMLIT_CLIENT_TOOLBAR_MODE": "minimal", "PNEUMO_DATA": ""}) as (url, _):
        driver = chrome(1440, 1000)
        try:
            for width, height in sizes:
                for name, path, ready, press in views:
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700})
                    driver.get(url + path)
                    if press:
                        button(driver, press, 300).click()
                    WebDriverWait(driver, 600).until(lambda d: ready in body_text(d))
                    wait_idle(driver)
                    time.sleep(1)
                    widths = [i.size["width"] for i in driver.find_elements(By.CSS_SELECTOR,
                                                                            '[data-testid="stImage"] img')]
                    cut = driver.execute_script(CUT_OFF)
                    full = max(height, int(driver.execute_script(MAIN_HEIGHT)) + 60)
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
                        "width": width, "height": min(full, 12000), "deviceScaleFactor": 1, "mobile": width < 700})
                    time.sleep(1.5)
                    shot = out_dir / f"{name}_{width}.png"
                    driver.save_screenshot(str(shot))
                    found[f"{name} at {width}x{height}"] = {"images": widths, "cut_off": cut, "png": str(shot)}
        finally:
            driver.quit()
    return found


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--pages", type=Path, default=None, help="instead of the README's picture: every view of "
                    "VIEWS at 1440x1000 and 400x850 into this folder, with image widths and what is cut off")
    a = ap.parse_args()
    if a.pages:
        for view, r in pages(a.pages).items():
            print(f"{view:<24} images {r['images']} cut off {r['cut_off'] or 'nothing'}")
    else:
        path = take()
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1024:.0f} KB")
