"""Thresholds page (#28): the PR dot at the slider's prevalence, a cost ratio both ways, a confusion cell chosen
next to the matrix, a preset that lands where the slider is says so; and the pneumo_core functions behind them,
on the committed prediction files."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, precision_recall_curve, precision_score
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.metrics import roc_curve
from pneumo_core.evaluation.thresholds import (CELLS, PRESETS, ThresholdSweep, cell_mask, choose, parse_rule,
                                               pr_curve_at_prevalence, precision_at_prevalence, preset_note,
                                               preset_rule)
from pneumo_core.files import ASSETS
from pneumo_core.visualize.charts import pr_figure
from tests.app_utils import run_app
from tests.checkpoint_utils import folder_with_a_bad_model

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


@pytest.fixture(scope="module")
def sets():
    """The validation and test sets the Thresholds page opens on."""
    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]
    return selection.load_choice(ASSETS, *opt, "val"), selection.load_choice(ASSETS, *opt, "test")


# ---------------------------------------------------------------- pneumo_core

def test_precision_at_the_test_sets_own_prevalence_is_sklearns_precision(sets):
    _, test = sets
    y, p = test.y_binary, test.p_positive
    for t in (0.2, 0.5, 0.9):
        m = ThresholdSweep(y, p).at(t)
        assert precision_at_prevalence(m["sensitivity"], m["specificity"], y.mean()) == pytest.approx(
            precision_score(y, p >= t))
    # the whole curve, too: every ROC point lands on sklearn's PR curve
    roc = roc_curve(y, p)
    curve = pr_curve_at_prevalence(roc["fpr"], roc["tpr"], y.mean())
    prec, rec, _ = precision_recall_curve(y, p)
    on_sklearn = {(round(r, 9), round(q, 9)) for r, q in zip(rec, prec)}
    assert all((round(r, 9), round(q, 9)) in on_sklearn for r, q in zip(curve["recall"], curve["precision"]))


def test_precision_falls_with_prevalence(sets):
    _, test = sets
    m = ThresholdSweep(test.y_binary, test.p_positive).at(0.5)
    ppv = [precision_at_prevalence(m["sensitivity"], m["specificity"], pi) for pi in (0.05, 0.2, 0.5, 0.9)]
    assert ppv == sorted(ppv) and ppv[0] < 0.5 < ppv[-1]


def test_cell_masks_partition_the_set_as_sklearns_confusion_matrix(sets):
    _, test = sets
    y, p, t = test.y_binary, test.p_positive, 0.4
    masks = {c: cell_mask(y, p, t, c) for c in CELLS}
    assert (sum(m.astype(int) for m in masks.values()) == 1).all()
    (tn, fp), (fn, tp) = confusion_matrix(y, p >= t, labels=[0, 1])
    assert {c: int(m.sum()) for c, m in masks.items()} == {"TP": tp, "FP": fp, "TN": tn, "FN": fn}
    with pytest.raises(ValueError, match="unknown confusion cell"):
        cell_mask(y, p, t, "XX")


def test_preset_grammar_and_the_cost_ratio_both_ways(sets):
    val, _ = sets
    assert preset_rule("Youden's J") == "youden" and preset_rule("max F1") == "max-f1"
    assert preset_rule("sensitivity ≥", 0.9) == "sens=0.9"
    cost = PRESETS["minimum cost c·FP + FN"]
    assert cost.low <= 0.1 and cost.high >= 10
    assert preset_rule("minimum cost c·FP + FN", 10) == "cost=10"
    # a false alarm dearer than a miss moves the threshold up, a miss dearer moves it down
    up = choose(val.y_binary, val.p_positive, preset_rule("minimum cost c·FP + FN", 10)).threshold
    down = choose(val.y_binary, val.p_positive, preset_rule("minimum cost c·FP + FN", 0.1)).threshold
    assert down < up
    for bad in (("minimum cost c·FP + FN", 20), ("sensitivity ≥", 1.5), ("no such rule", None)):
        with pytest.raises(ValueError):
            preset_rule(*bad)
    for bad in ("sens=1.5", "cost=0"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_preset_note_says_when_the_slider_is_already_there(sets):
    val, _ = sets
    op = choose(val.y_binary, val.p_positive, "youden")
    assert "already at this threshold" in preset_note(op, 0.9, 0.8, round(op.threshold, 3))
    assert "already" not in preset_note(op, 0.9, 0.8, op.threshold + 0.1)


def test_pr_figure_draws_the_point_and_the_curve_at_another_prevalence(sets):
    _, test = sets
    roc = roc_curve(test.y_binary, test.p_positive)
    curve = pr_curve_at_prevalence(roc["fpr"], roc["tpr"], 0.1)
    fig = pr_figure(np.array([0, 1]), np.array([1, 0.5]), 0.9, (0.8, 0.3), (curve["recall"], curve["precision"], 0.1))
    names = [tr.name for tr in fig.data]
    assert "at prevalence 0.10" in names
    dot = fig.data[names.index("current threshold")]
    assert (dot.x[0], dot.y[0]) == (0.8, 0.3)


# ---------------------------------------------------------------- the page

def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/thresholds.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def _pr_dot(at: AppTest) -> tuple[float, float]:
    chart = next(c for c in at.get("plotly_chart") if "Precision-recall" in c.proto.spec)
    trace = next(tr for tr in json.loads(chart.proto.spec)["data"] if tr.get("name") == "current threshold")
    return trace["x"][0], trace["y"][0]


def _table_value(at: AppTest, prefix: str) -> float:
    table = next(d.value for d in [*at.table, *at.dataframe] if "metric" in d.value.columns)
    return table.loc[table.metric.str.startswith(prefix), "value"].iloc[0]


def test_pr_dot_sits_at_the_tables_ppv_for_the_sliders_prevalence(sets):
    at = _page()
    at.slider(key="threshold").set_value(0.5).run()
    for prevalence in (0.1, 0.5):
        at.slider(key="prevalence").set_value(prevalence).run()
        assert not at.exception
        x, y = _pr_dot(at)
        assert y == pytest.approx(_table_value(at, "PPV (prevalence"), abs=1e-4)
        assert x == pytest.approx(_table_value(at, "Sensitivity"), abs=1e-4)
    assert y > 0.5 > _pr_dot(at.slider(key="prevalence").set_value(0.1).run())[1]


def test_cost_ratio_goes_above_one_and_a_cell_lists_its_images(sets):
    _, test = sets
    at = _page()
    at.selectbox(key="preset_rule").set_value("minimum cost c·FP + FN").run()
    box = at.number_input(key="preset_x_minimum cost c·FP + FN")
    assert box.max >= 10 and box.min <= 0.1
    box.set_value(4.0).run()
    at.button(key="apply_preset").click().run()
    assert not at.exception
    assert "cost=4 on validation → threshold" in " ".join(c.value for c in at.caption).replace("\\", "")
    t = at.slider(key="threshold").value
    cells = at.button_group(key="cell")
    fn = int(cell_mask(test.y_binary, test.p_positive, t, "FN").sum())
    assert any(o.startswith("FN") and f"({fn})" in o for o in cells.options)  # the count, next to the matrix
    cells.set_value("FN").run()
    assert not at.exception
    listed = next(d.value for d in at.dataframe if "p_pneumonia" in d.value.columns)
    mask = cell_mask(test.y_binary, test.p_positive, t, "FN")
    assert sorted(listed["image_id"]) == sorted(test.frame.loc[mask, "image_id"])


def test_a_preset_at_the_current_threshold_says_so(sets):
    at = _page()  # the page opens at the validation threshold, chosen by Youden's J
    assert selection.THRESHOLD_RULE == "youden"
    at.selectbox(key="preset_rule").set_value("Youden's J").run()
    at.button(key="apply_preset").click().run()
    assert not at.exception
    assert "already at this threshold" in " ".join(c.value for c in at.caption).replace("\\", "")


def test_thresholds_and_errors_skip_a_bad_model(tmp_path, data_dir):
    folder = folder_with_a_bad_model(tmp_path)
    at = run_app(timeout=300, source_kind="Local checkpoints folder", local_dir=str(folder), data_dir=str(data_dir))
    at.switch_page("pages/thresholds.py").run()
    sel = at.selectbox(key="thr_model")
    bad = next(o for o in sel.options if o.startswith("binary · resnet18 · computed"))
    sel.set_value(bad).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    sel = at.selectbox(key="thr_model")
    assert bad not in sel.options and sel.value == sel.options[0]  # the page goes on with the best set
    assert 0 <= at.slider(key="threshold").value <= 1

    # Errors on the bundled resnet18's prediction files: the local folder's (bad) resnet18 did not make them, so
    # no CAM is offered from it (a CAM comes only from the predictions' own models)
    at.switch_page("pages/errors.py").run()
    sel = at.selectbox(key="err_model")
    sel.set_value(next(o for o in sel.options if o.startswith("binary · resnet18 · seed"))).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [t for t in at.toggle if t.key == "err_cam"]  # no CAM offered
    assert len(at.get("image")) >= 1  # the X-rays are still shown
