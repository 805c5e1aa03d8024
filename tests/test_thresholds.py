"""pneumo_core.evaluation.thresholds behind the Thresholds page, on the committed prediction files: the operating
table at a prevalence, a confusion cell's images and the cell a click on the matrix chooses."""
from __future__ import annotations

import pytest
from sklearn.metrics import average_precision_score, f1_score, precision_score, recall_score, roc_auc_score

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.thresholds import (CELL_NAMES, CELLS, ThresholdSweep, apply_preset, at_prevalence,
                                               cell_images, cell_mask, choose, clicked_cell, curve_at_other_prevalence,
                                               curves, operating_rows, pr_point, subtype_recall, threshold_from_link)
from pneumo_core.files import ASSETS
from pneumo_core.visualize.charts import confusion_figure
from tests.browser_utils import CHROMIUM, DRIVER, app_server, body_text, chrome, wait_idle

pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


@pytest.fixture(scope="module")
def test_set():
    """The test set the Thresholds page opens on (the best model of the first task)."""
    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]
    return selection.load_choice(ASSETS, *opt, "test")


def _value(rows: list[dict], prefix: str) -> float:
    return next(r["value"] for r in rows if r["metric"].startswith(prefix))


def test_operating_table_at_the_sets_own_prevalence_is_sklearns(test_set):
    y, p, t = test_set.y_binary, test_set.p_positive, 0.5
    rows = operating_rows(at_prevalence(ThresholdSweep(y, p).at(t), y.mean()))
    assert _value(rows, "Sensitivity") == pytest.approx(recall_score(y, p >= t), abs=1e-4)
    assert _value(rows, "Specificity") == pytest.approx(recall_score(1 - y, p < t), abs=1e-4)
    assert _value(rows, "PPV") == pytest.approx(precision_score(y, p >= t), abs=1e-4)
    assert _value(rows, "NPV") == pytest.approx(precision_score(1 - y, p < t), abs=1e-4)
    assert _value(rows, "F1") == pytest.approx(f1_score(y, p >= t), abs=1e-4)
    assert all(r["95 % CI"] == "" for r in rows)


def test_ppv_moves_with_prevalence_and_intervals_skip_it(test_set):
    y, p = test_set.y_binary, test_set.p_positive
    m = ThresholdSweep(y, p).at(0.5)
    low, high = (operating_rows(at_prevalence(m, pi)) for pi in (0.05, 0.9))
    assert _value(low, "PPV (prevalence 0.05)") < 0.5 < _value(high, "PPV (prevalence 0.90)")
    assert _value(low, "Sensitivity") == _value(high, "Sensitivity")  # sensitivity does not depend on it
    ci = {k: {"low": 0.1, "high": 0.2} for k in ("sensitivity", "precision", "npv")}
    rows = operating_rows(at_prevalence(m, 0.3), ci)
    assert [r["95 % CI"] for r in rows[:4]] == ["0.100 – 0.200", "", "", ""]
    assert pr_point(at_prevalence(m, 0.3)) == pytest.approx((m["sensitivity"], _value(rows, "PPV")), abs=1e-4)
    assert pr_point(at_prevalence(ThresholdSweep(y, p).at(1.01), 0.3))[1] == 1.0  # nothing called positive


def test_curves_and_the_curve_at_another_prevalence(test_set):
    y, p = test_set.y_binary, test_set.p_positive
    c = curves(y, p, test_set.frame["image_id"])
    assert c.auroc == pytest.approx(roc_auc_score(y, p)) and c.average_precision == pytest.approx(
        average_precision_score(y, p))
    assert set(c.subtypes[y == 1]) == {"BACTERIA", "VIRUS"} and set(c.subtypes[y == 0]) <= {"", "NORMAL"}
    assert curve_at_other_prevalence(c, round(y.mean(), 2), y.mean()) is None
    recall, precision, prevalence = curve_at_other_prevalence(c, 0.1, y.mean())
    assert prevalence == 0.1 and len(recall) == len(precision) > 10 and precision.max() <= 1


def test_subtype_recall_counts_each_subtype(test_set):
    y, p, t = test_set.y_binary, test_set.p_positive, 0.5
    subtypes = curves(y, p, test_set.frame["image_id"]).subtypes
    rec = subtype_recall(y, p, t, subtypes)
    for g in ("BACTERIA", "VIRUS"):
        assert rec[g] == pytest.approx(float((p[subtypes == g] >= t).mean()))


def test_a_cells_images_are_its_mask_lowest_probability_first(test_set):
    y, p, t = test_set.y_binary, test_set.p_positive, 0.4
    for cell in CELLS:
        rows = cell_images(test_set.frame["image_id"], y, p, t, cell)
        mask = cell_mask(y, p, t, cell)
        assert sorted(rows["image_id"]) == sorted(test_set.frame.loc[mask, "image_id"])
        assert rows["p_pneumonia"].is_monotonic_increasing


def test_a_click_on_the_matrix_chooses_its_cell(test_set):
    fig = confusion_figure([[10, 2], [3, 20]], ["NORMAL", "PNEUMONIA"], clickable=True)
    layer = fig.data[1]  # the clickable layer: one point per cell, where the heatmap draws it
    got = {clicked_cell([{"x": x, "y": y, "curve_number": 1, "point_index": i}])
           for i, (x, y) in enumerate(zip(layer.x, layer.y))}
    assert got == set(CELLS)
    assert clicked_cell([{"x": "pred PNEUMONIA", "y": "true NORMAL"}]) == "FP"
    assert clicked_cell([{"x": "pred NORMAL", "y": "true PNEUMONIA"}]) == "FN"
    assert clicked_cell([{"x": "pred NORMAL", "y": "true NORMAL"}, {"x": "pred PNEUMONIA", "y": "true PNEUMONIA"}]) \
        == "TP"  # the last point
    assert clicked_cell([]) is None and clicked_cell([{"x": 0.3, "y": 0.9}]) is None
    assert len(confusion_figure([[1, 2], [3, 4]], ["NORMAL", "PNEUMONIA"]).data) == 1  # not clickable: no layer


def test_a_preset_applied_on_validation(test_set):
    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]
    val = selection.load_choice(ASSETS, *opt, "val")
    y, p = val.y_binary, val.p_positive
    youden = choose(y, p, "youden").threshold
    assert youden == selection.pneumonia_threshold_on(val)
    t, note = apply_preset(y, p, "Youden's J", None, 0.5)
    at = ThresholdSweep(y, p).at(t)
    assert t == youden and note == (f"youden on validation → threshold {t:.3f} (validation sensitivity "
                                    f"{at['sensitivity']:.3f}, specificity {at['specificity']:.3f})")
    assert apply_preset(y, p, "Youden's J", None, round(t, 3))[1].endswith("already at this threshold, nothing "
                                                                           "to move.")
    t90, _ = apply_preset(y, p, "sensitivity ≥", 0.9, 0.5)
    assert ThresholdSweep(y, p).at(t90)["sensitivity"] >= 0.9
    assert apply_preset(y, p, "minimum cost c·FP + FN", 20, 0.5) == (
        None, "minimum cost c·FP + FN: cost ratio c 20 is outside 0.1..10")


def test_a_links_threshold():
    assert threshold_from_link("0.25") == 0.25 and threshold_from_link("1") == 1.0
    assert threshold_from_link("1.5") is None and threshold_from_link("abc") is None
    assert threshold_from_link("nan") is None


@pytest.mark.slow
@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_clicking_a_cell_in_chromium_lists_its_images(test_set):
    """The click itself: Streamlit's plotly selection on the matrix's clickable layer reaches the page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    y, p = test_set.y_binary, test_set.p_positive
    m = ThresholdSweep(y, p).at(0.3)
    with app_server() as (url, _):
        driver = chrome(1440, 1000)
        try:
            driver.get(f"{url}/thresholds?threshold=0.3")
            WebDriverWait(driver, 120).until(lambda d: f"TP {m['tp']} · FP {m['fp']}" in body_text(d))
            wait_idle(driver)
            # the confusion matrix's plot area (the page's first chart): true rows, predicted columns
            area = WebDriverWait(driver, 60).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, '[data-testid="stPlotlyChart"] .nsewdrag'))[0]
            w, h = area.size["width"], area.size["height"]
            for cell, (fx, fy) in {"FN": (0.25, 0.75), "FP": (0.75, 0.25)}.items():
                ActionChains(driver).move_to_element_with_offset(area, int((fx - 0.5) * w),
                                                                 int((fy - 0.5) * h)).click().perform()
                expected = f"{cell} · {CELL_NAMES[cell]}: {m[cell.lower()]} images"
                WebDriverWait(driver, 60).until(lambda d: expected in body_text(d))
        finally:
            driver.quit()


def test_the_pages_matrix_is_clickable_and_the_chooser_stays():
    """Without a browser: the matrix is drawn with its clickable layer and asks Streamlit for point selections;
    the keyboard's chooser is still there."""
    import json

    from tests.app_utils import run_app

    at = run_app("pages/thresholds.py")
    assert not at.exception, [e.message for e in at.exception]
    chart = next(c for c in at.get("plotly_chart") if "Confusion matrix" in c.proto.spec)
    assert list(chart.proto.selection_mode)  # on_select="rerun", selection_mode="points"
    assert [tr.get("name") for tr in json.loads(chart.proto.spec)["data"]][-1] == "cells"
    assert [o.split(" ")[0] for o in at.button_group(key="cell").options] == list(CELLS)
