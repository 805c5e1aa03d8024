"""The Lesson page (class mode, #28): the sentences' numbers are the computed ones (pure tests of
pneumo_core.explain.conclusions), every step renders, guess-then-reveal marks ✓ / ✗ against the true label,
no sample file name reaches the page, the trade-off counts equal sklearn's, and in a real browser at 1440 x 1000
the X-ray and its heatmap are each at least 600 px wide."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.mistakes import decisions, mistakes
from pneumo_core.explain import conclusions as cc
from pneumo_core.explain.audit import lung_focus
from pneumo_core.files import ASSETS

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ASSETS / "examples").glob("*.jpeg"))
bundled = pytest.mark.skipif(prediction_index(ASSETS).empty or not SAMPLES,
                             reason="no bundled prediction files or samples in assets/")


def _numbers(sentence: str) -> list[float]:
    return [float(x) for x in re.findall(r"\d+(?:\.\d+)?", sentence)]


@pytest.fixture(scope="module")
def best_sets():
    best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    load = lambda split: selection.load_choice(ASSETS, "binary", best.arch, best.seed, split)  # noqa: E731
    return best, selection.model_threshold(ASSETS, best), load("val"), load("test")


# ---------------------------------------------------------------- the sentences (pure)

def test_true_label_and_a_mixed_order():
    assert cc.true_label("person10_virus_35.jpeg") == "PNEUMONIA"
    assert cc.true_label("test/PNEUMONIA/person78_bacteria_378.jpeg") == "PNEUMONIA"
    assert cc.true_label("IM-0001-0001.jpeg") == cc.true_label("NORMAL2-IM-0196-0001.jpeg") == "NORMAL"
    assert cc.true_label("cat.png") is None
    names = [p.name for p in SAMPLES]
    order = cc.lesson_order(names)
    assert sorted(order) == list(range(len(names))) and order == cc.lesson_order(names)
    labels = [cc.true_label(names[i]) for i in order]
    if len(set(labels)) == 2:  # not the sorted-by-class order that gives the answers away
        assert labels != sorted(labels) and labels != sorted(labels, reverse=True)


@pytest.mark.parametrize("vote,p,truth,marks", [
    ("PNEUMONIA", 0.93, "PNEUMONIA", ("✓", "✓")), ("NORMAL", 0.93, "PNEUMONIA", ("✗", "✓")),
    ("NORMAL", 0.30, "PNEUMONIA", ("✗", "✗")), ("NORMAL", 0.30, "NORMAL", ("✓", "✓")),
])
def test_reveal_marks_the_vote_and_the_model_against_the_truth(vote, p, truth, marks):
    r = cc.reveal(vote, p, 0.64, truth, "ResNet18")
    assert r.model_label == ("PNEUMONIA" if p >= 0.64 else "NORMAL")
    assert (r.class_right, r.model_right) == (marks[0] == "✓", marks[1] == "✓")
    assert f"The class said {vote} {marks[0]}" in r.sentence
    assert f"the model said {r.model_label} {marks[1]}" in r.sentence
    assert f"{round(100 * p)} %" in r.sentence and "64 %" in r.sentence and r.sentence.endswith(f"is {truth}.")


def test_reveal_decides_as_every_page_does():
    from pneumo_core.inference.verdicts import decide

    for p in (0.64, np.nextafter(0.64, 0), 0.0, 1.0):  # at the cut-off itself: PNEUMONIA, as in Predict's table
        assert cc.reveal(None, p, 0.64, "NORMAL", "m").model_label == decide([1 - p, p], cc.LABELS, 0.64)[0]
    assert cc.reveal(None, 0.64, 0.64, "NORMAL", "m").model_label == "PNEUMONIA"


def test_lung_focus_sentence_numbers_and_wording():
    lungs = np.zeros((100, 100), bool)
    lungs[30:80, 10:45] = lungs[30:80, 55:90] = True  # 35 % of the image
    even = lung_focus(np.ones((7, 7)), lungs)  # heat spread evenly: the lungs' area
    s = cc.lung_focus_sentence("ResNet18", even.lung_share, even.lung_area, even.border_share)
    assert s.startswith(f"ResNet18 puts {round(100 * even.lung_share)} % of its heat on the lungs")
    assert f"({round(100 * even.lung_area)} %)" in s and "it is not looking at the lungs" in s
    on = np.zeros((100, 100))
    on[40:70, 20:40] = 1.0  # all the heat inside the left lung
    f = lung_focus(on, lungs)
    s = cc.lung_focus_sentence("DenseNet121", f.lung_share, f.lung_area, f.border_share)
    assert "puts 100 % of its heat" in s and "it is looking at the lungs" in s and "edges" not in s
    edge = np.zeros((100, 100))
    edge[:6, :] = 1.0  # a marker on the top border
    f = lung_focus(edge, lungs)
    s = cc.lung_focus_sentence("EfficientNet-Lite0", f.lung_share, f.lung_area, f.border_share)
    assert "puts 0 % of its heat" in s and "looking away from the lungs" in s
    assert f"{round(100 * f.border_share)} % lies on the image's edges" in s
    assert "cannot be placed" in cc.lung_focus_sentence("X", float("nan"), 0.3)


@bundled
def test_tradeoff_counts_equal_sklearn_and_the_ends_mean_what_they_say(best_sets):
    _, thr, _, test = best_sets
    y, p = test.y_binary, test.p_positive
    cuts = cc.tradeoff_thresholds(y, p, include=thr)
    assert np.all(np.diff(cuts) > 0) and thr in cuts
    for t in [*cuts[[0, 5, -1]], thr]:
        tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
        r = cc.tradeoff(y, p, t)
        assert (r.sent_home_sick, r.treated_needlessly) == (fn, fp)
        assert (r.sick, r.healthy) == (tp + fn, tn + fp)
        assert f"Of these {tp + fn} sick and {tn + fp} healthy children" in r.sentence
    assert cc.tradeoff(y, p, cuts[0]).sent_home_sick == 0  # "miss no pneumonia"
    assert cc.tradeoff(y, p, np.nextafter(cuts[0], 1)).sent_home_sick > 0  # ... and the highest such cut-off
    assert cc.tradeoff(y, p, cuts[-1]).treated_needlessly == 0  # "no false alarms"
    assert cc.tradeoff(y, p, np.nextafter(cuts[-1], 0)).treated_needlessly > 0


@bundled
def test_trust_and_validation_vs_test_sentences(best_sets):
    _, thr, val, test = best_sets
    y, p = test.y_binary, test.p_positive
    r = cc.trust(y, p, 0.9)
    sure = (p >= 0.9) | (p <= 0.1)
    said = (p[sure] >= 0.5).astype(int)
    right = int((said == y[sure]).sum())
    conf = np.where(said == 1, p[sure], 1 - p[sure]).mean()
    assert (r.confident, r.right) == (int(sure.sum()), right) and r.confidence == pytest.approx(conf)
    assert _numbers(r.sentence)[:4] == [90, sure.sum(), round(100 * conf), round(100 * right / sure.sum())]
    vt = cc.val_vs_test(val.y_binary, val.p_positive, y, p, thr)
    acc_val = accuracy_score(val.y_binary, (val.p_positive >= thr).astype(int))
    acc_test = accuracy_score(y, (p >= thr).astype(int))
    assert (vt.val_accuracy, vt.test_accuracy) == (pytest.approx(acc_val), pytest.approx(acc_test))
    assert _numbers(vt.sentence)[:4] == [round(100 * acc_val), len(val.frame), round(100 * acc_test), len(test.frame)]
    assert "fairer exam" in vt.sentence  # the bundled model: 99 % on validation, 83 % on test


@bundled
def test_hardest_false_alarms_are_the_errors_pages_mistakes(best_sets):
    _, thr, _, test = best_sets
    worst = cc.hardest_false_alarms(test.frame["image_id"], test.y_binary, test.p_positive, thr, n=6)
    ref = mistakes(test, decisions(test, thr), "NORMAL", "PNEUMONIA").head(6)
    assert list(worst["image_id"]) == list(ref["image_id"])
    assert np.allclose(worst["p_pneumonia"], ref["confidence"])
    s = cc.false_alarm_sentence(test.y_binary, test.p_positive, thr, worst)
    n_fp = int(((test.p_positive >= thr) & (test.y_binary == 0)).sum())
    assert _numbers(s)[:3] == [n_fp, int((test.y_binary == 0).sum()), 6]
    assert f"{math.floor(100 * worst['p_pneumonia'].min())} % or more" in s


# ---------------------------------------------------------------- the page (AppTest)

def _lesson(step: str | None = None, timeout: int = 240) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.session_state["data_dir"] = ""  # the bundled samples only (a teacher's $PNEUMO_DATA adds more)
    if step is not None:
        at.query_params["step"] = step
    at.run()
    at.switch_page("pages/lesson.py")
    at.run()
    return at


def _all_text(node) -> str:
    """Every element's content on the page: markdown, captions, labels, options, image captions."""
    out = []
    for child in getattr(node, "children", {}).values():
        out.append(str(getattr(child, "proto", "")))
        out.append(_all_text(child))
    return "\n".join(out)


def _step_param(at: AppTest) -> str:
    v = at.query_params["step"]
    return v[0] if isinstance(v, list) else v


def _no_file_names(at: AppTest) -> None:
    text = _all_text(at.main) + _all_text(at.sidebar)
    for p in SAMPLES:
        assert p.stem not in text, p.name


@bundled
@pytest.mark.parametrize("step", ["1", "2", "3", "4", "5"])
def test_every_step_renders(step):
    at = _lesson(step)
    assert not at.exception, [e.message for e in at.exception]
    assert any("not for clinical use" in c.value.lower() for c in at.caption)
    assert f"## Step {step} of 5" in at.markdown[0].value
    assert _step_param(at) == step
    _no_file_names(at)


@bundled
def test_next_and_previous_move_through_the_steps_and_a_bad_step_opens_the_first():
    at = _lesson("abc")
    assert not at.exception and _step_param(at) == "1" and at.button(key="lesson_prev").disabled
    at.button(key="lesson_next").click().run()
    assert _step_param(at) == "2" and "## Step 2 of 5" in at.markdown[0].value
    at = _lesson("9")  # past the end: the last step
    assert _step_param(at) == "5" and at.button(key="lesson_next").disabled
    at.button(key="lesson_prev").click().run()
    assert _step_param(at) == "4"


@bundled
def test_guess_then_reveal():
    at = _lesson("1")
    images = [p for p in SAMPLES if cc.true_label(p.name)]
    truth = cc.true_label(images[cc.lesson_order([str(p) for p in images])[0]].name)  # X-ray 1
    assert len(at.get("image")) == 1  # the X-ray alone: no heatmap, no verdict before the vote
    assert not any("the model said" in m.value for m in at.markdown)
    at.button(key="vote_PNEUMONIA").click().run()
    assert not at.exception, [e.message for e in at.exception]
    reveal = next(m.value for m in at.markdown if "the model said" in m.value)
    assert f"The class said PNEUMONIA {'✓' if truth == 'PNEUMONIA' else '✗'}" in reveal
    said = re.search(r"the model said (NORMAL|PNEUMONIA) ([✓✗])", reveal)
    assert said.group(2) == ("✓" if said.group(1) == truth else "✗")
    assert reveal.endswith(f"the X-ray is {truth}.")
    assert len(at.get("image")) == 2  # the X-ray and its heatmap
    _no_file_names(at)
    at.button(key="lesson_hide").click().run()
    assert len(at.get("image")) == 1 and at.button(key="vote_NORMAL")


@bundled
def test_the_trade_off_step_counts_equal_sklearn(best_sets):
    _, thr, _, test = best_sets
    y, p = test.y_binary, test.p_positive
    cuts = cc.tradeoff_thresholds(y, p, include=thr)
    at = _lesson("3")
    for k in (None, 0, 7, len(cuts) - 1):
        if k is not None:
            at.select_slider(key="lesson_cut").set_value(k).run()
        t = thr if k is None else cuts[k]  # the slider opens at the model's own cut-off
        tn, fp, fn, tp = confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
        shown = {m.label: int(m.value) for m in at.metric}
        assert shown == {"Sick children sent home": fn, "Healthy children treated needlessly": fp}


# ---------------------------------------------------------------- a real browser

def test_images_are_at_least_600_px_wide_at_1440(tmp_path):
    from tests.browser_utils import CHROMIUM, DRIVER, app_server, button, chrome, until, wait_idle

    if not (CHROMIUM and DRIVER) or prediction_index(ASSETS).empty:
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them with apt-get)")
    from selenium.webdriver.common.by import By

    with app_server(env={"PNEUMO_DATA": ""}) as (url, _):
        driver = chrome(1440, 1000)
        try:
            driver.get(f"{url}/lesson?step=1")
            button(driver, "PNEUMONIA", 180).click()
            until(driver, 180).until(
                lambda d: (i := d.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')) and len(i) == 2 and i)
            until(driver, 120).until(  # the reveal's sentence: the rerun has drawn the step
                lambda d: "the model said" in d.find_element(By.TAG_NAME, "body").text)
            wait_idle(driver)
            def widths() -> list[int]:
                return [i.size["width"] for i in driver.find_elements(By.CSS_SELECTOR, '[data-testid="stImage"] img')]

            def sidebar() -> int:
                return driver.find_element(By.CSS_SELECTOR, '[data-testid="stSidebar"]').size["width"]

            driver.save_screenshot(str(tmp_path / "lesson_step1.png"))
            shown = widths()
            assert len(shown) == 2 and min(shown) >= 600 and shown[0] == shown[1], (shown, sidebar())
            assert sidebar() == 0  # collapsed, after the vote's rerun too (each run sends one sidebar state)
            assert "the model said" in driver.find_element(By.TAG_NAME, "body").text
            # the sidebar opened (a visitor's click, or a browser that remembers it open): it lies over the page,
            # the images keep their width
            driver.find_element(By.CSS_SELECTOR, '[data-testid="stExpandSidebarButton"]').click()
            until(driver, 30).until(lambda d: sidebar() >= 200)
            assert widths() == shown, (widths(), shown)
        finally:
            driver.quit()


def test_the_glossary_explains_the_words_kept_off_the_screen():
    words = " ".join(cc.GLOSSARY).lower()
    for w in ("auroc", "sensitivity", "specificity", "threshold", "heatmap", "grad-cam", "calibration", "validation"):
        assert w in words


@bundled
def test_with_a_dataset_folder_more_x_rays_and_the_false_alarms_shown(data_dir):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=240)
    at.session_state["data_dir"] = str(data_dir)
    at.query_params["step"] = "1"
    at.run()
    at.switch_page("pages/lesson.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    options = at.selectbox(key="lesson_xray").options
    assert len(options) == len(SAMPLES) + 12 and options[-1] == f"X-ray {len(options)}"
    text = _all_text(at.main)
    assert "chest_xray" not in text and not re.search(r"person\d+_|IM-\d{4}", text)
    at.selectbox(key="lesson_xray").set_value(len(options) - 1).run()
    at.session_state["data_dir"] = ""  # the folder cleared: back to the samples, without an error
    at.run()
    assert not at.exception and at.selectbox(key="lesson_xray").value == 0
    at.session_state["data_dir"] = str(data_dir)
    at.run()
    at.button(key="lesson_next").click().run()
    at.button(key="lesson_next").click().run()
    at.button(key="lesson_next").click().run()
    at.button(key="lesson_next").click().run()
    assert _step_param(at) == "5" and not at.exception
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert len(captions) == 6 and all(c.startswith("Healthy · pneumonia score") for c in captions)
    assert not re.search(r"person\d+_|IM-\d{4}", _all_text(at.main))


JARGON = ("auroc", "grad-cam", "gradcam", "threshold", "calibration", "sensitivity", "specificity", "ece",
          "probability")


def _text_outside_the_glossary(node) -> str:
    out = []
    for child in getattr(node, "children", {}).values():
        if type(child).__name__ != "Expander":
            out += [str(getattr(child, "proto", "")), _text_outside_the_glossary(child)]
    return "\n".join(out)


@bundled
@pytest.mark.parametrize("step", ["1", "4"])
def test_no_jargon_outside_the_glossary(step):
    at = _lesson(step)
    if step == "1":
        at.button(key="vote_NORMAL").click().run()  # the reveal's sentence and heatmap too
    text = _text_outside_the_glossary(at.main).lower()
    if step == "4":
        assert "really showed pneumonia" in text  # the chart's caption is read too (its words are in the picture)
    assert not [w for w in JARGON if re.search(rf"\b{re.escape(w)}\b", text)]


def _blue(pic: np.ndarray) -> np.ndarray:
    """Where a picture shows the model's curve and dots (matplotlib's first colour)."""
    return np.abs(pic.astype(int) - (31, 119, 180)).sum(axis=2) < 30


def test_the_reliability_picture_puts_each_bin_where_its_numbers_say():
    from pneumo_core.evaluation.calibration import Reliability
    from pneumo_core.visualize.pictures import reliability_picture

    def one_bin(confidence: float, frequency: float) -> np.ndarray:
        return reliability_picture(Reliability(np.array([confidence - 0.05]), np.array([confidence + 0.05]),
                                               np.array([40]), np.array([confidence]), np.array([frequency])),
                                   size=(800, 600), model_name="x")

    a, b = one_bin(0.2, 0.8), one_bin(0.8, 0.2)
    assert a.shape == (600, 800, 3) and a.dtype == np.uint8
    only_a, only_b = _blue(a) & ~_blue(b), _blue(b) & ~_blue(a)  # the dots (the legend's sample is in both)
    assert only_a.sum() > 50 and only_b.sum() > 50
    (ya, xa), (yb, xb) = (np.argwhere(m).mean(axis=0) for m in (only_a, only_b))
    assert xb - xa > 0.6 * 800 * 0.8  # a higher score: further right (0.6 of the x axis, ~0.87 of the width)
    assert yb - ya > 0.6 * 600 * 0.5  # a lower frequency: lower down (0.6 of the upper panel's ~0.6 height)


@bundled
def test_step_4_charts_the_test_set_and_prints_the_chart(best_sets):
    from pneumo_core.evaluation.calibration import binary_reliability
    from pneumo_core.visualize.handout import panel
    from pneumo_core.visualize.pictures import reliability_picture

    _, _, val, test = best_sets
    at = _lesson("4")
    assert not at.exception, [e.message for e in at.exception]
    assert len(at.get("image")) == 1 and not at.get("plotly_chart")  # a picture: nothing for the browser to lay out
    printed = at.session_state["lesson_sheet"].panels
    assert len(printed) == 1
    words = dict(x_title="the model's pneumonia score", y_title="really pneumonia", model_name="the model",
                 ideal_name="a model to be taken at its word", count_title="X-rays")
    title = "How sure the model is, against how often pneumonia is really there"
    on_test = panel(reliability_picture(binary_reliability(test.y_binary, test.p_positive, 10), title, **words))
    on_val = panel(reliability_picture(binary_reliability(val.y_binary, val.p_positive, 10), title, **words))
    assert np.array_equal(printed[0].image, on_test.image) and not np.array_equal(printed[0].image, on_val.image)


# ---------------------------------------------------------------- the printed handout

def _sheet_png(sheet) -> np.ndarray:
    import io

    from PIL import Image

    from pneumo_core.visualize.handout import PAGE, handout_png

    img = Image.open(io.BytesIO(handout_png(sheet)))
    assert img.format == "PNG" and img.size == PAGE
    return np.asarray(img.convert("L"), dtype=np.float32)


def test_the_handout_is_one_a4_page_with_its_pictures_where_the_boxes_say():
    from pneumo_core.data.images import load_grayscale
    from pneumo_core.visualize.handout import PAGE, Panel, Sheet, panel_boxes

    gray = load_grayscale(SAMPLES[0])
    black = np.zeros((224, 224, 3), np.uint8)
    sheet = Sheet("Step 1 of 5", ("A sentence.",), (("Sick children sent home", "12"),),
                  (Panel(gray, "X-ray 1"), Panel(black, "all black")))
    page = _sheet_png(sheet)
    blank = _sheet_png(Sheet("Step 1 of 5", ("A sentence.",), (("Sick children sent home", "12"),)))
    w = PAGE[0]
    boxes = panel_boxes(2, 0.7)
    assert boxes[0][1] == boxes[1][1] and boxes[0][0] < 0.5 < boxes[1][0]  # side by side, the first on the left
    # where the text ends decides the boxes' height on the page: find the pictures as its non-white band
    rows = np.where((page < 250).mean(axis=1) > 0.3)[0]  # rows mostly covered by the two pictures
    cols = np.where((page[rows] < 250).mean(axis=0) > 0.9)[0]
    assert len(rows) > 300 and len(cols) > 2 * 300, (len(rows), len(cols))  # two pictures >= 300 px each
    left, right = cols[cols < w / 2], cols[cols >= w / 2]
    assert page[np.ix_(rows, right)].mean() < 5  # the black picture, black
    xray = page[np.ix_(rows, left)]
    assert xray.std() > 20 and 40 < xray.mean() < 220  # the X-ray: a picture, not a blank
    assert (blank[rows] > 250).mean() > 0.99  # without pictures that band is white


def test_the_handout_prints_names_as_written_and_shrinks_large_pictures():
    from pneumo_core.visualize.handout import Sheet, panel

    odd = "x$_{2}$ and $\\frac{"  # an uploaded file's name: mathtext would fail on it, or typeset it
    page = _sheet_png(Sheet(odd, (odd,), ((odd, "1"),), (panel(np.zeros((2048, 1024)), odd),)))
    assert (page < 128).mean() > 0.05
    small = panel(np.zeros((2048, 1024, 3), np.uint8))
    assert small.image.shape == (600, 300, 3) and small.image.dtype == np.uint8


def test_the_handout_refuses_more_pictures_than_a_page_holds():
    from pneumo_core.visualize.handout import MAX_PANELS, Panel, Sheet, handout_png

    with pytest.raises(ValueError, match="at most"):
        handout_png(Sheet("t", panels=tuple(Panel(np.zeros((8, 8))) for _ in range(MAX_PANELS + 1))))


@bundled
@pytest.mark.parametrize("step", ["1", "2", "3", "4", "5"])
def test_each_step_prints_what_it_shows(step):
    at = _lesson(step)
    if step == "1":
        at.button(key="vote_PNEUMONIA").click().run()
    assert not at.exception, [e.message for e in at.exception]
    sheet = at.session_state["lesson_sheet"]
    assert sheet.title.startswith(f"Step {step} of 5 · ")
    shown = _all_text(at.main)
    for sentence in sheet.sentences:  # every printed sentence is one the page shows
        assert sentence.replace("“", "").replace("”", "")[:60] in shown.replace("“", "").replace("”", "")
    assert len(sheet.panels) == min(len(at.get("image")), 6)
    if step == "3":
        shown_numbers = {m.label: str(m.value) for m in at.metric}
        assert {k: v for k, v in sheet.numbers if k in shown_numbers} == shown_numbers
    import dataclasses

    ink = (_sheet_png(sheet) < 250).mean()
    assert ink > 0.001  # the text
    if sheet.panels:  # and the pictures (X-rays, or step 4's chart: mostly white)
        assert ink > (_sheet_png(dataclasses.replace(sheet, panels=())) < 250).mean() + 0.02
    assert at.get("download_button") or "lesson_print" in str(at.main)


# ---------------------------------------------------------------- the cat: not an X-ray, answered anyway

def test_the_cat_is_no_sample_x_ray():
    from pages._shared.images import non_xray_images, sample_images

    cats = non_xray_images()
    assert [p.name for p in cats] == ["chelsea_cat.jpg"] and cats[0].stat().st_size < 60_000
    assert not set(cats) & set(sample_images()) and all(cc.true_label(p.name) is None for p in cats)
    assert "chelsea_cat.jpg" in (ASSETS / "examples" / "README.md").read_text()  # credited


def test_the_not_an_xray_sentence():
    said = [("ResNet18", "PNEUMONIA", 0.944), ("DenseNet121", "PNEUMONIA", 0.849)]
    s = cc.not_an_xray_sentence(True, said)
    assert "says this is not a chest X-ray" in s and "ResNet18 says PNEUMONIA (pneumonia score 94 %)" in s
    assert "DenseNet121 says PNEUMONIA (pneumonia score 85 %)" in s
    assert "was fooled" in cc.not_an_xray_sentence(False, said)
    assert "No checker" in cc.not_an_xray_sentence(None, said)


@bundled
def test_step_2_shows_the_cat_flagged_yet_answered():
    from pneumo_core.data.images import load_grayscale
    from pneumo_core.explain.ood import default_gate
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import bundled_source

    at = _lesson("2")
    assert not at.exception, [e.message for e in at.exception]
    sentence = next(m.value for m in at.markdown if "not a chest X-ray" in m.value)
    gray = load_grayscale(ASSETS / "examples" / "not_xray" / "chelsea_cat.jpg")
    gate = default_gate()
    assert gate.flagged(float(gate.score([gray])[0]))  # the checker does say so
    members = {m.key: m for m in selection.best_of_each(ASSETS, "binary", with_checkpoint=True)}
    for key in ("binary/resnet18", "binary/densenet121"):
        p = Predictor(bundled_source().load(key)).predict_grays([gray])[0][1]
        label = "PNEUMONIA" if p >= selection.model_threshold(ASSETS, members[key]) else "NORMAL"
        assert f"{cc.display_name(key)} says {label} (pneumonia score {round(100 * p)} %)" in sentence
    captions = [i.proto.imgs[0].caption for i in at.get("image")]
    assert sum("on a cat" in c for c in captions) == 2
