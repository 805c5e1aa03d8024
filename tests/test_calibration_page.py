"""Calibration page (#28): the two bin controls say what each does; ECE, MCE, Brier and NLL are explained; and
the pneumo_core functions behind its charts and table (#27), on the committed prediction files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation import artifacts
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.calibration import (BIN_HELP, EXPLANATIONS, confidence_name, reliability_of, score_rows,
                                                temperature_on_splits)
from pneumo_core.files import ASSETS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


def test_every_score_has_one_plain_sentence():
    assert set(EXPLANATIONS) == {"ECE", "MCE", "Brier", "NLL"}
    for text in [*EXPLANATIONS.values(), *BIN_HELP.values()]:
        assert 20 < len(text) < 250 and text.endswith(".")


def test_a_binary_sets_reliability_is_sklearns_calibration_curve():
    test = artifacts.load_set(ASSETS, "binary", "resnet18", artifacts.seeds_of(ASSETS, "binary", "resnet18")[0], "test")
    rel = reliability_of(test.y_true, test.probs, 10, "uniform")
    frequency, confidence = calibration_curve(test.y_true, test.probs[:, 1], n_bins=10, strategy="uniform")
    np.testing.assert_allclose(rel.frequency, frequency, atol=1e-9)
    np.testing.assert_allclose(rel.confidence, confidence, atol=1e-9)
    assert confidence_name(2) == "P(pneumonia)"


def test_a_three_class_sets_reliability_is_on_the_top_label():
    test = artifacts.load_set(ASSETS, "three_class", "densenet121", 0, "test")
    rel = reliability_of(test.y_true, test.probs, 15, "quantile")
    top = test.probs.max(1)
    assert rel.n == len(top) and (rel.confidence >= 1 / 3 - 1e-9).all()
    assert rel.count @ rel.frequency == pytest.approx(int((test.probs.argmax(1) == test.y_true).sum()))
    assert confidence_name(3) == "top-label confidence"


def test_score_rows_as_trained_and_after_scaling():
    val, test = (artifacts.load_set(ASSETS, "binary", "resnet18", artifacts.seeds_of(ASSETS, "binary", "resnet18")[0],
                                    s) for s in ("val", "test"))
    temp = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs)
    rows = score_rows(test.y_true, test.probs, temp.test_scaled, temp.temperature)
    assert [r["set"] for r in rows] == ["as trained", f"temperature T = {temp.temperature:.3f}"]
    assert rows[0]["Brier"] == pytest.approx(brier_score_loss(test.y_true, test.probs[:, 1]))
    assert rows[0]["NLL"] == pytest.approx(log_loss(test.y_true, test.probs), abs=1e-6)
    assert rows[1]["NLL"] == pytest.approx(temp.scores["test"]["after"]["NLL"])
    assert len(score_rows(test.y_true, test.probs)) == 1


def test_bin_controls_are_distinct_and_scores_explained():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/calibration.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    count, strategy = at.slider(key="bins"), at.radio(key="strategy")
    assert count.label != strategy.label and "bins" in count.label.lower()
    assert count.help == BIN_HELP["count"] and strategy.help == BIN_HELP["strategy"]
    captions = " ".join(c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "ECE" in d.value.columns)
    for name, sentence in EXPLANATIONS.items():
        assert name in table.columns and sentence in captions
    at.toggle(key="temp").set_value(True).run()
    assert not at.exception and len(next(d.value for d in at.dataframe if "ECE" in d.value.columns)) == 2
