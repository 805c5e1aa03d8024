"""Metrics, threshold sweeps and operating points against sklearn and hand-worked examples."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from pneumo_core.evaluation.metrics import (
    auroc,
    binary_at,
    binary_summary,
    by_group,
    multiclass_summary,
    prevalence_adjusted,
    rates,
)
from pneumo_core.evaluation.thresholds import ThresholdSweep, choose, parse_rule


def _random(n=500, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(rng.normal(0.35 + 0.3 * y, 0.2), 0, 1)
    if ties:
        p = np.round(p, 1)
    p[:3] = [0.0, 1.0, 0.5]
    return y, p


def _sk(y, p, t):
    tn, fp, fn, tp = skm.confusion_matrix(y, (p >= t).astype(int), labels=[0, 1]).ravel()
    return tp, fp, tn, fn


@pytest.mark.parametrize("ties", [False, True])
def test_binary_metrics_match_sklearn(ties):
    y, p = _random(ties=ties)
    for t in (0.0, 0.3, 0.5, 0.5000001, 0.9, 1.0):
        m = binary_at(y, p, t)
        tp, fp, tn, fn = _sk(y, p, t)
        assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
        pred = (p >= t).astype(int)
        assert m["sensitivity"] == pytest.approx(skm.recall_score(y, pred))
        assert m["specificity"] == pytest.approx(skm.recall_score(1 - y, 1 - pred))
        if tp + fp:
            assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
        assert m["f1"] == pytest.approx(skm.f1_score(y, pred, zero_division=0) if tp + fp + fn else m["f1"])
        assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
        assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, pred))
    s = binary_summary(y, p)
    assert s["auroc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert s["average_precision"] == pytest.approx(skm.average_precision_score(y, p))


def test_hand_worked_example():
    y = np.array([1, 1, 1, 0, 0])
    p = np.array([0.9, 0.6, 0.2, 0.6, 0.1])
    m = binary_at(y, p, 0.5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == 0.5
    assert m["precision"] == pytest.approx(2 / 3) and m["npv"] == 0.5
    assert m["f1"] == pytest.approx(2 / 3)
    # AUROC: pairs (pos, neg): 0.9>0.6, 0.9>0.1, 0.6=0.6 (half), 0.6>0.1, 0.2<0.6, 0.2>0.1 -> 4.5/6
    assert auroc(y, p) == pytest.approx(4.5 / 6)


def test_edge_cases_all_one_class_and_n1():
    y = np.ones(4, int)
    p = np.array([0.1, 0.5, 0.9, 1.0])
    m = binary_summary(y, p)
    assert math.isnan(m["auroc"]) and math.isnan(m["specificity"]) and m["sensitivity"] == 0.75
    m0 = binary_summary(np.zeros(3, int), np.array([0.0, 0.2, 0.7]))
    assert (math.isnan(m0["sensitivity"]) and math.isnan(m0["average_precision"])
            and m0["specificity"] == pytest.approx(2 / 3))
    one = binary_summary(np.array([1]), np.array([0.7]))
    assert one["tp"] == 1 and one["accuracy"] == 1.0 and math.isnan(one["auroc"])
    r = rates(0, 0, 0, 0)
    assert all(math.isnan(v) for v in r.values())


def test_prevalence_adjusted_ppv_npv():
    # at the sample's own prevalence the adjusted values equal the observed PPV/NPV
    y, p = _random()
    m = binary_at(y, p, 0.5)
    adj = prevalence_adjusted(m["sensitivity"], m["specificity"], y.mean())
    assert adj["ppv"] == pytest.approx(m["precision"]) and adj["npv"] == pytest.approx(m["npv"])
    # hand-worked: sens .9, spec .8, prevalence .1 -> PPV .09/(.09+.18) = 1/3
    assert prevalence_adjusted(0.9, 0.8, 0.1)["ppv"] == pytest.approx(1 / 3)


def test_by_group_recall():
    y = np.array([1, 1, 1, 1, 0])
    p = np.array([0.9, 0.8, 0.2, 0.1, 0.3])
    g = ["BACTERIA", "BACTERIA", "VIRUS", "VIRUS", "NORMAL"]
    out = by_group(y, p, 0.5, g)
    assert out["BACTERIA"]["sensitivity"] == 1.0 and out["VIRUS"]["sensitivity"] == 0.0
    assert out["NORMAL"]["specificity"] == 1.0 and out["VIRUS"]["n"] == 2


def test_multiclass_matches_sklearn():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3)) + 1.5 * np.eye(3)[y]
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    s = multiclass_summary(y, probs, ["NORMAL", "BACTERIA", "VIRUS"])
    pred = probs.argmax(1)
    assert s["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert s["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"))
    assert s["confusion_matrix"] == skm.confusion_matrix(y, pred).tolist()
    f1s = skm.f1_score(y, pred, average=None)
    for k, c in enumerate(["NORMAL", "BACTERIA", "VIRUS"]):
        assert s["per_class"][c]["f1"] == pytest.approx(f1s[k])
        assert s["per_class"][c]["auroc"] == pytest.approx(skm.roc_auc_score(y == k, probs[:, k]))
    assert s["auroc_macro"] == pytest.approx(skm.roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    # a class absent from y: its AUROC is undefined, not an exception
    s2 = multiclass_summary(np.array([0, 1, 1]), probs[:3], ["A", "B", "C"])
    assert math.isnan(s2["per_class"]["C"]["auroc"]) and s2["per_class"]["C"]["support"] == 0


@pytest.mark.parametrize("ties", [False, True])
def test_sweep_equals_direct_counts_everywhere(ties):
    y, p = _random(ties=ties, n=300, seed=5)
    sweep = ThresholdSweep(y, p)
    for t in np.concatenate([np.unique(p), [-1.0, 0.0, 0.25, 1.0, 1.5]]):
        d = binary_at(y, p, t)
        s = sweep.at(t)
        assert {k: s[k] for k in ("tp", "fp", "tn", "fn")} == {k: d[k] for k in ("tp", "fp", "tn", "fn")}
    curve = sweep.curve()
    fpr, tpr, _ = skm.roc_curve(y, p)
    # the sweep's ROC points contain sklearn's (sklearn drops collinear points)
    pts = set(zip(np.round(1 - curve["specificity"], 12), np.round(curve["sensitivity"], 12)))
    assert set(zip(np.round(fpr, 12), np.round(tpr, 12))) <= pts


def test_operating_points():
    y, p = _random(n=400, seed=7)
    curve = ThresholdSweep(y, p).curve()
    j = curve["sensitivity"] + curve["specificity"] - 1
    op = choose(y, p, "youden")
    assert op.value == pytest.approx(np.nanmax(j[:-1]))
    assert op.chosen_on == "validation"
    f = choose(y, p, "max-f1")
    assert f.value == pytest.approx(max(skm.f1_score(y, p >= t) for t in np.unique(p)))
    s = choose(y, p, "sens=0.95")
    assert binary_at(y, p, s.threshold)["sensitivity"] >= 0.95
    # the highest such threshold: one step up falls below the target
    higher = np.unique(p)[np.unique(p) > s.threshold]
    assert binary_at(y, p, higher[0])["sensitivity"] < 0.95
    sp = choose(y, p, "spec=0.9")
    assert binary_at(y, p, sp.threshold)["specificity"] >= 0.9
    lower = np.unique(p)[np.unique(p) < sp.threshold]
    assert binary_at(y, p, lower[-1])["specificity"] < 0.9
    c = choose(y, p, "cost=0.25")
    costs = [0.25 * binary_at(y, p, t)["fp"] + binary_at(y, p, t)["fn"] for t in np.unique(p)]
    assert c.value == pytest.approx(min(costs))
    with pytest.raises(ValueError, match="unknown operating point"):
        parse_rule("best")
    with pytest.raises(ValueError, match="no threshold satisfies"):
        choose(np.zeros(5, int), np.linspace(0, 1, 5), "sens=0.9")


def test_operating_point_applied_to_another_set():
    yv, pv = _random(n=300, seed=1)
    yt, pt = _random(n=300, seed=2)
    op = choose(yv, pv, "youden", chosen_on="val.csv")
    m = binary_at(yt, pt, op.threshold)
    tn, fp, fn, tp = skm.confusion_matrix(yt, (pt >= op.threshold).astype(int), labels=[0, 1]).ravel()
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (tp, fp, tn, fn)
    # the threshold chosen on validation is Youden's optimum there, not on the set it is applied to
    fpr, tpr, _ = skm.roc_curve(yv, pv)
    assert op.value == pytest.approx(np.max(tpr - fpr))
    assert op.to_dict()["chosen_on"] == "val.csv"
