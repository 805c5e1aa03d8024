"""Calibration bins and scores, temperature scaling, bootstrap CIs, seed aggregation."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as skm
from sklearn.calibration import calibration_curve

from pneumo_core.evaluation.bootstrap import bootstrap_binary, mean_std, stratified_indices
from pneumo_core.evaluation.calibration import (
    apply_temperature,
    binary_reliability,
    brier,
    calibration_summary,
    class_reliability,
    fit_temperature,
    logits_from_probs,
    nll,
    reliability,
    temperature_scale_probs,
    top_label_reliability,
)


def _binary(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    y = (rng.uniform(0, 1, n) < p ** 1.5).astype(int)  # miscalibrated on purpose
    return y, p


def test_uniform_bins_match_sklearn_calibration_curve():
    y, p = _binary()
    rel = binary_reliability(y, p, 10)
    frac, mean = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose(rel.frequency, frac)
    np.testing.assert_allclose(rel.confidence, mean)
    assert rel.n == len(y)


def test_probability_one_falls_in_the_last_bin_and_empty_bins_drop():
    rel = reliability(np.array([1.0, 1.0, 0.0]), np.array([1, 1, 0]), n_bins=15)
    assert rel.upper[-1] == 1.0 and rel.count[-1] == 2 and rel.lower[-1] == pytest.approx(14 / 15)
    assert len(rel.count) == 2  # only two non-empty bins
    assert rel.ece == 0.0 and rel.mce == 0.0


def test_hand_worked_ece_mce():
    # bin [0.8, 1]: conf .9,.9 hits 1,0 -> |.5-.9| = .4 ; bin [0, .2): conf .1 hit 0 -> .1
    rel = reliability(np.array([0.9, 0.9, 0.1]), np.array([1, 0, 0]), n_bins=5)
    assert rel.ece == pytest.approx((2 * 0.4 + 1 * 0.1) / 3)
    assert rel.mce == pytest.approx(0.4)


def test_equal_mass_bins_hold_equal_counts():
    y, p = _binary(1500)
    rel = binary_reliability(y, p, 15, "quantile")
    assert len(rel.count) == 15 and rel.count.min() >= 99 and rel.count.max() <= 101
    frac, mean = calibration_curve(y, p, n_bins=15, strategy="quantile")
    np.testing.assert_allclose(rel.frequency, frac, atol=0.02)


def test_brier_and_nll_match_sklearn():
    y, p = _binary()
    assert brier(y, p) == pytest.approx(skm.brier_score_loss(y, p))
    assert nll(y, p) == pytest.approx(skm.log_loss(y, p))
    rng = np.random.default_rng(1)
    probs = softmax(rng.normal(size=(300, 3)), axis=1)
    yy = rng.integers(0, 3, 300)
    assert nll(yy, probs) == pytest.approx(skm.log_loss(yy, probs))
    assert brier(yy, probs) == pytest.approx(np.mean(np.sum((probs - np.eye(3)[yy]) ** 2, 1)))
    # p exactly 0 and 1 stay finite
    assert math.isfinite(nll(np.array([1, 0]), np.array([0.0, 1.0])))


def test_multiclass_top_label_and_per_class():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 3, 600)
    probs = softmax(rng.normal(size=(600, 3)) + 2 * np.eye(3)[y], axis=1)
    top = top_label_reliability(y, probs, 10)
    manual = reliability(probs.max(1), probs.argmax(1) == y, 10)
    np.testing.assert_allclose(top.frequency, manual.frequency)
    frac, mean = calibration_curve(y == 2, probs[:, 2], n_bins=10)
    np.testing.assert_allclose(class_reliability(y, probs, 2, 10).frequency, frac)
    s = calibration_summary(y, probs)
    assert set(s) >= {"ece", "mce", "brier", "nll", "bins"} and s["n_bins"] == 15


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(4)
    n, k = 5000, 3
    true_logits = rng.normal(size=(n, k)) * 2
    y = np.array([rng.choice(k, p=row) for row in softmax(true_logits, axis=1)])
    overconfident = true_logits * 2.5  # a model 2.5x too sharp
    t = fit_temperature(overconfident, y)
    assert t == pytest.approx(2.5, rel=0.1)
    before = nll(y, softmax(overconfident, axis=1))
    after = nll(y, apply_temperature(overconfident, t))
    assert after < before
    # from stored probabilities (log p): the same T
    t2, scaled = temperature_scale_probs(softmax(overconfident, 1), y, softmax(overconfident, 1))
    assert t2 == pytest.approx(t, rel=0.02) and np.allclose(scaled.sum(1), 1)
    # a single binary logit column works too; a calibrated model keeps T near 1
    z = rng.normal(size=4000) * 2
    yb = (rng.uniform(size=4000) < 1 / (1 + np.exp(-z))).astype(int)
    assert fit_temperature(z[:, None], yb) == pytest.approx(1.0, abs=0.15)
    # never worse than T = 1, even on one sample
    assert fit_temperature(np.array([[0.0, 5.0]]), np.array([1])) > 0


def test_logits_from_probs_reproduce_probs():
    probs = np.array([[0.2, 0.8], [1.0, 0.0]])
    np.testing.assert_allclose(apply_temperature(logits_from_probs(probs), 1.0), probs, atol=1e-6)


def test_stratified_bootstrap_keeps_class_counts_and_is_seeded():
    y = np.array([0] * 30 + [1] * 70)
    idx = stratified_indices(y, 50, seed=3)
    assert idx.shape == (50, 100)
    assert (y[idx].sum(1) == 70).all()
    np.testing.assert_array_equal(idx, stratified_indices(y, 50, seed=3))
    assert not np.array_equal(idx, stratified_indices(y, 50, seed=4))


def test_bootstrap_statistics_equal_sklearn_on_the_same_resamples():
    rng = np.random.default_rng(0)
    y = np.array([0] * 234 + [1] * 390)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)  # ties
    n_boot = 40
    ci = bootstrap_binary(y, p, 0.5, n_boot=n_boot, seed=9)
    idx = stratified_indices(y, n_boot, seed=9)
    aucs = np.array([skm.roc_auc_score(y[i], p[i]) for i in idx])
    sens = np.array([skm.recall_score(y[i], p[i] >= 0.5) for i in idx])
    lo, hi = np.quantile(aucs, [0.025, 0.975])
    assert ci["auroc"]["low"] == pytest.approx(lo) and ci["auroc"]["high"] == pytest.approx(hi)
    assert ci["sensitivity"]["low"] == pytest.approx(np.quantile(sens, 0.025))
    assert ci["auroc"]["value"] == pytest.approx(skm.roc_auc_score(y, p))
    eces = [binary_reliability(y[i], p[i]).ece for i in idx]
    assert ci["ece"]["high"] == pytest.approx(np.quantile(eces, 0.975))
    assert ci["auroc"]["low"] <= ci["auroc"]["value"] <= ci["auroc"]["high"]


def test_bootstrap_one_class_gives_nan_auroc_not_an_error():
    ci = bootstrap_binary(np.ones(10, int), np.linspace(0, 1, 10), n_boot=20)
    assert math.isnan(ci["auroc"]["low"]) and ci["sensitivity"]["value"] == pytest.approx(0.5)


def test_mean_std_over_seeds():
    out = mean_std([{"auroc": 0.9, "f1": 0.8, "name": "a"}, {"auroc": 0.95, "f1": 0.7}, {"auroc": 0.85, "f1": 0.9}])
    assert out["auroc"]["mean"] == pytest.approx(0.9) and out["auroc"]["std"] == pytest.approx(0.05)
    assert out["f1"]["n"] == 3 and "name" not in out
    assert mean_std([{"auroc": 0.9}])["auroc"]["std"] == 0.0
