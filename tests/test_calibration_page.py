"""Calibration page (#28): the two bin controls say what each does; ECE, MCE, Brier and NLL are explained."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.calibration import BIN_HELP, EXPLANATIONS
from pneumo_core.files import ASSETS

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


def test_every_score_has_one_plain_sentence():
    assert set(EXPLANATIONS) == {"ECE", "MCE", "Brier", "NLL"}
    for text in [*EXPLANATIONS.values(), *BIN_HELP.values()]:
        assert 20 < len(text) < 250 and text.endswith(".")


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
