"""Threshold sweeps (built once, any threshold in O(log n)) and operating points chosen on one set.

A prediction is positive when ``p >= threshold``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from pneumo_core.evaluation.metrics import rates


class ThresholdSweep:
    """Sorted scores with cumulative counts: confusion counts at any threshold by binary search."""

    def __init__(self, y: np.ndarray, p: np.ndarray) -> None:
        y = np.asarray(y).astype(bool)
        p = np.asarray(p, dtype=np.float64)
        if y.shape != p.shape:
            raise ValueError(f"y and p differ in length ({len(y)} vs {len(p)})")
        order = np.argsort(p, kind="stable")
        self.scores = p[order]
        ys = y[order]
        # pos_below[i] = positives among the i smallest scores
        self.pos_below = np.concatenate([[0], np.cumsum(ys)])
        self.n = len(p)
        self.n_pos = int(ys.sum())
        self.n_neg = self.n - self.n_pos
        # Unique candidate thresholds: each distinct score, plus +inf (nothing positive).
        self.candidates = np.append(np.unique(self.scores), np.inf)

    def counts(self, threshold: float | np.ndarray) -> dict[str, np.ndarray | int]:
        """TP/FP/TN/FN at one threshold or an array of thresholds."""
        below = np.searchsorted(self.scores, threshold, side="left")  # scores < threshold -> negative
        fn = self.pos_below[below]
        tn = below - fn
        tp = self.n_pos - fn
        fp = self.n_neg - tn
        if np.ndim(threshold) == 0:
            return {"tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn)}
        return {"tp": tp, "fp": fp, "tn": tn, "fn": fn}

    def at(self, threshold: float) -> dict[str, float]:
        c = self.counts(float(threshold))
        return {**c, **rates(**c), "threshold": float(threshold)}

    def curve(self) -> dict[str, np.ndarray]:
        """Counts and rates at every candidate threshold (vectorised)."""
        c = {k: v.astype(np.float64) for k, v in self.counts(self.candidates).items()}
        r = rates(**c)
        return {"threshold": self.candidates, **c, "sensitivity": r["sensitivity"], "specificity": r["specificity"],
                "f1": r["f1"]}


@dataclass(frozen=True)
class OperatingPoint:
    rule: str
    threshold: float
    chosen_on: str
    value: float  # the criterion's value where it was chosen

    def to_dict(self) -> dict:
        return {"rule": self.rule, "threshold": self.threshold, "chosen_on": self.chosen_on, "value": self.value}


_RULE = re.compile(r"^(youden|max-f1|sens=([0-9.]+)|spec=([0-9.]+)|cost=([0-9.]+))$")


def parse_rule(rule: str) -> str:
    rule = rule.strip().lower().replace("_", "-")
    if not _RULE.match(rule):
        raise ValueError(f"unknown operating point {rule!r}; use youden, max-f1, sens=0.95, spec=0.90 or cost=0.25")
    return rule


def choose(y: np.ndarray, p: np.ndarray, rule: str, chosen_on: str = "validation") -> OperatingPoint:
    """The threshold a rule picks on (y, p).

    youden: max sensitivity + specificity - 1; max-f1; sens=x: the highest threshold whose
    sensitivity >= x; spec=x: the lowest threshold whose specificity >= x; cost=c: minimum c*FP + FN.
    Ties go to the threshold nearest 0.5.
    """
    rule = parse_rule(rule)
    curve = ThresholdSweep(y, p).curve()
    thr = curve["threshold"]
    finite = np.isfinite(thr)
    if rule == "youden":
        score = curve["sensitivity"] + curve["specificity"] - 1
    elif rule == "max-f1":
        score = curve["f1"]
    elif rule.startswith("sens="):
        x = float(rule[5:])
        score = np.where(curve["sensitivity"] >= x - 1e-12, thr, -np.inf)  # highest such threshold
    elif rule.startswith("spec="):
        x = float(rule[5:])
        score = np.where(curve["specificity"] >= x - 1e-12, -thr, -np.inf)  # lowest such threshold
    else:
        c = float(rule[5:])
        score = -(c * curve["fp"] + curve["fn"])
    score = np.where(finite & ~np.isnan(score), score, -np.inf)
    best = np.max(score)
    if not np.isfinite(best):
        raise ValueError(f"no threshold satisfies {rule} on {chosen_on}")
    ties = np.flatnonzero(score == best)
    i = ties[np.argmin(np.abs(thr[ties] - 0.5))]
    value = {"youden": best, "max-f1": best}.get(rule, curve["sensitivity"][i] if rule.startswith("sens")
                                                 else curve["specificity"][i] if rule.startswith("spec")
                                                 else -best)
    return OperatingPoint(rule, float(thr[i]), chosen_on, float(value))
