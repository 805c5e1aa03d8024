"""The Errors page's numbers: decisions at the model's rule, the confusion matrix and the mistakes."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.mistakes import confusion, decisions, mistakes
from pneumo_core.files import ASSETS


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
