"""The Errors page's numbers: decisions at the model's rule, the confusion matrix and the mistakes; which
checkpoint may explain them; the page's large image and thumbnails."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.mistakes import (HeatmapChoice, confusion, decision_text, decisions, heatmap_choice,
                                              mistake_noun, mistakes)
from pneumo_core.files import ASSETS
from tests.app_utils import run_app


def test_three_class_virus_errors_match_sklearn():
    test = artifacts.load_set(ASSETS, "three_class", "densenet121", 0, "test")
    d = decisions(test, None)
    cm = confusion(test, d)
    np.testing.assert_array_equal(cm, confusion_matrix(test.y_true, test.probs.argmax(1), labels=[0, 1, 2]))
    virus = mistakes(test, d, "VIRUS")
    assert len(virus) == sum(cm[2]) - cm[2][2]  # every VIRUS error, not just the first page
    assert virus["confidence"].is_monotonic_decreasing
    as_normal = mistakes(test, d, "VIRUS", "NORMAL")
    assert len(as_normal) == cm[2][0] and set(as_normal.predicted) <= {"NORMAL"}


def test_binary_decisions_use_the_validation_threshold():
    m = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    val, test = (artifacts.load_set(ASSETS, "binary", m.arch, m.seed, s) for s in ("val", "test"))
    t = selection.threshold_on(val)
    d = decisions(test, t)
    cm = confusion(test, d)
    fn = mistakes(test, d, "PNEUMONIA")
    assert len(fn) == cm[1][0] == int(((test.p_positive < t) & (test.y_true == 1)).sum())


def test_decision_text_and_mistake_nouns_follow_the_sets_rule():
    m = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    val, test = (artifacts.load_set(ASSETS, "binary", m.arch, m.seed, s) for s in ("val", "test"))
    t = selection.threshold_on(val)
    assert decision_text(test, t) == f"Decision: P(PNEUMONIA) ≥ {t:.3f} ({selection.THRESHOLD_RULE_TEXT})."
    assert mistake_noun(test, "PNEUMONIA") == "false negatives" and mistake_noun(test, "NORMAL") == "false positives"
    three = artifacts.load_set(ASSETS, "three_class", "densenet121", 0, "test")
    assert decision_text(three, None) == "Decision: the class of largest probability."
    assert mistake_noun(three, "VIRUS") == "errors"


def test_a_heatmap_only_from_the_checkpoint_that_made_the_predictions():
    keys = {"binary/resnet18", "binary/densenet121"}

    def choose(arch="resnet18", seed=2, combined=False, own=True, source_seed=2):
        return heatmap_choice(arch, seed, f"binary/{arch}", combined=combined, own=own, source_keys=keys,
                              source_seed=source_seed)

    assert choose() == HeatmapChoice("binary/resnet18")
    assert choose(combined=True).key is None and "ensemble" in choose(combined=True).reason
    assert choose(own=False).reason == "these predictions are not from the sidebar source's models"
    assert choose(seed=0).reason == "no checkpoint of resnet18 seed 0 is loaded (the source holds seed 2)"
    assert choose(arch="custom_cnn").reason.endswith("(the source holds no binary/custom_cnn)")


def test_errors_page_shows_one_error_large_and_enlarges_a_thumbnail(data_dir, monkeypatch):
    import streamlit

    widths = []  # AppTest drops an image's width: st.image is watched instead
    real = streamlit.image
    monkeypatch.setattr(streamlit, "image", lambda *a, **kw: (widths.append(kw.get("width")), real(*a, **kw))[1])
    at = run_app("pages/errors.py", timeout=300, data_dir=str(data_dir))
    assert not at.exception, [e.message for e in at.exception]
    listed = next(d.value for d in at.dataframe if "confidence" in d.value.columns)
    big = at.selectbox(key="err_big")
    assert big.value == listed["image_id"].iloc[0]  # the most confident mistake, large
    assert sorted(widths)[-1] >= 500 and widths.count(sorted(widths)[-1]) == 1  # one large X-ray (no heatmap yet)
    assert len(widths) == 1 + min(12, len(listed)) and min(widths) >= 300  # and the thumbnails
    at.button(key="err_big_3").click().run()
    assert not at.exception and at.selectbox(key="err_big").value == listed["image_id"].iloc[3]
