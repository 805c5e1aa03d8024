"""Classification metrics over arrays: binary at a threshold, curves (sklearn), multi-class.

Binary inputs are ``y`` in {0, 1} and ``p`` = P(positive). Ratios with an empty denominator are NaN.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np



def _skm():
    """sklearn.metrics, imported on first use (it costs ~1 s at the app's start)."""
    from sklearn import metrics

    return metrics

def _ratio(a, b):
    """a / b, NaN where b is 0: numbers give a float, arrays an array."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    out = np.divide(a, b, out=np.full(np.broadcast(a, b).shape, np.nan), where=b != 0)
    return float(out) if out.ndim == 0 else out


def confusion_at(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, int]:
    """TP/FP/TN/FN with positive meaning ``p >= threshold``."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p) >= threshold
    return {"tp": int((pred & y).sum()), "fp": int((pred & ~y).sum()),
            "tn": int((~pred & ~y).sum()), "fn": int((~pred & y).sum())}


def f1_from_counts(tp, fp, fn):
    """F1 = 2 TP / (2 TP + FP + FN); NaN with no positives predicted or present."""
    return _ratio(2 * np.asarray(tp), 2 * np.asarray(tp) + fp + fn)


def rates(tp, fp, tn, fn) -> dict:
    """Sensitivity, specificity, PPV, NPV, F1, accuracy, balanced accuracy from confusion counts: numbers
    give floats; arrays of counts (every threshold of a sweep, every bootstrap resample) give arrays."""
    tp, fp, tn, fn = (np.asarray(v, dtype=np.float64) for v in (tp, fp, tn, fn))
    sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    both = np.stack(np.broadcast_arrays(sens, spec))
    with np.errstate(invalid="ignore"):  # mean of the defined ones; NaN when neither is
        bal = np.where(np.isnan(both).all(0), np.nan, np.nansum(both, 0) / np.maximum((~np.isnan(both)).sum(0), 1))
    return {"sensitivity": sens, "specificity": spec, "precision": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn),
            "f1": f1_from_counts(tp, fp, fn), "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
            "balanced_accuracy": float(bal) if bal.ndim == 0 else bal}


def binary_at(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    c = confusion_at(y, p, threshold)
    return {**c, **rates(**c), "threshold": float(threshold)}


def auroc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(_skm().roc_auc_score(y, p))


def average_precision(y: np.ndarray, p: np.ndarray) -> float:
    y = np.asarray(y)
    if y.sum() == 0:
        return float("nan")
    return float(_skm().average_precision_score(y, p))


def roc_curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    fpr, tpr, thr = _skm().roc_curve(y, p, drop_intermediate=False)
    return {"fpr": fpr, "tpr": tpr, "thresholds": thr}


def pr_curve(y: np.ndarray, p: np.ndarray) -> dict[str, np.ndarray]:
    precision, recall, thr = _skm().precision_recall_curve(y, p)
    return {"precision": precision, "recall": recall, "thresholds": thr}


def binary_summary(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Everything at a threshold plus the threshold-free AUROC and average precision."""
    return {**binary_at(y, p, threshold), "auroc": auroc(y, p), "average_precision": average_precision(y, p)}


def prevalence_adjusted(sensitivity: float, specificity: float, prevalence: float) -> dict[str, float]:
    """PPV and NPV at another prevalence (Bayes' rule)."""
    tp, fp = sensitivity * prevalence, (1 - specificity) * (1 - prevalence)
    tn, fn = specificity * (1 - prevalence), (1 - sensitivity) * prevalence
    return {"ppv": _ratio(tp, tp + fp), "npv": _ratio(tn, tn + fn), "prevalence": float(prevalence)}


def multiclass_summary(y: np.ndarray, probs: np.ndarray, classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1, per-class P/R/F1, confusion matrix (rows = true), one-vs-rest AUROC."""
    y = np.asarray(y)
    probs = np.asarray(probs)
    k = len(classes)
    pred = probs.argmax(1)
    labels = list(range(k))
    p, r, f, s = _skm().precision_recall_fscore_support(y, pred, labels=labels, zero_division=np.nan)
    cm = _skm().confusion_matrix(y, pred, labels=labels)
    per_class = {}
    for i, c in enumerate(classes):
        per_class[c] = {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                        "support": int(s[i]), "auroc": auroc((y == i).astype(int), probs[:, i])}
    aucs = [v["auroc"] for v in per_class.values()]
    return {
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "macro_f1": float(_skm().f1_score(y, pred, labels=labels, average="macro", zero_division=0)),
        "per_class": per_class,
        "confusion_matrix": cm.tolist(),
        "classes": list(classes),
        "auroc_macro": float(np.mean(aucs)) if not np.isnan(aucs).any() else float("nan"),
    }


def log_loss(y: np.ndarray, probs: np.ndarray, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood of the true class; probs (N, K)."""
    probs = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0)
    return float(-np.mean(np.log(probs[np.arange(len(y)), np.asarray(y)])))


def by_group(y: np.ndarray, p: np.ndarray, threshold: float, groups: Sequence[str]) -> dict[str, dict[str, float]]:
    """Binary metrics at ``threshold`` within each group (e.g. recall on BACTERIA vs VIRUS images)."""
    y, p, groups = np.asarray(y), np.asarray(p), np.asarray(groups)
    return {str(g): {**binary_at(y[groups == g], p[groups == g], threshold), "n": int((groups == g).sum())}
            for g in sorted(set(groups.tolist())) if g != ""}
