"""Threshold sweeps (built once, any threshold in O(log n)) and operating points chosen on one set.

A prediction is positive when ``p >= threshold``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from pneumo_core.data.datasets import subtype_of
from pneumo_core.evaluation.metrics import (auroc, average_precision, by_group, pr_curve, prevalence_adjusted, rates,
                                            roc_curve)


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
    """The rule in its canonical spelling; ValueError for an unknown rule or a target out of range."""
    rule = rule.strip().lower().replace("_", "-")
    m = _RULE.match(rule)
    if not m:
        raise ValueError(f"unknown operating point {rule!r}; use youden, max-f1, sens=0.95, spec=0.90 or cost=0.25")
    sens, spec, cost = (float(g) if g else None for g in m.groups()[1:])
    if any(x is not None and not 0 <= x <= 1 for x in (sens, spec)):
        raise ValueError(f"{rule}: a sensitivity or specificity target is between 0 and 1")
    if cost is not None and cost <= 0:
        raise ValueError(f"{rule}: the cost ratio c must be above 0")
    return rule


@dataclass(frozen=True)
class Preset:
    """A named rule as the app offers it: the rule prefix and, for rules with a target, its input's range."""

    label: str
    rule: str  # "youden", "max-f1", or a prefix "sens" / "spec" / "cost" completed by the target
    target: str | None = None  # the target's label
    default: float = 0.0
    low: float = 0.0
    high: float = 1.0
    step: float = 0.01
    help: str = ""


#: the Thresholds page's presets; c runs both ways: below 1 a missed pneumonia costs more than a false alarm
PRESETS: dict[str, Preset] = {p.label: p for p in (
    Preset("Youden's J", "youden"),
    Preset("max F1", "max-f1"),
    Preset("sensitivity ≥", "sens", "target", 0.95),
    Preset("specificity ≥", "spec", "target", 0.90),
    Preset("minimum cost c·FP + FN", "cost", "cost ratio c", 0.25, 0.1, 10.0, 0.05,
           "What a false alarm costs, a missed pneumonia costing 1: c = 0.25 counts a miss as 4 false alarms, "
           "c = 4 a false alarm as 4 misses."),
)}


def preset_rule(label: str, target: float | None = None) -> str:
    """The rule string (``choose``'s grammar) of a preset and its target: ("sensitivity ≥", 0.95) -> "sens=0.95"."""
    if label not in PRESETS:
        raise ValueError(f"unknown preset {label!r}; use one of {', '.join(PRESETS)}")
    preset = PRESETS[label]
    if preset.target is None:
        return preset.rule
    x = preset.default if target is None else float(target)
    if not preset.low <= x <= preset.high:
        raise ValueError(f"{preset.target} {x:g} is outside {preset.low:g}..{preset.high:g}")
    return parse_rule(f"{preset.rule}={x:g}")


def preset_note(op: OperatingPoint, sensitivity: float, specificity: float, current: float,
                decimals: int = 3) -> str:
    """One line on an applied preset: the threshold it picked and its validation rates, and whether the
    slider (at ``current``) was already there, so that an Apply that moves nothing says why."""
    where = (f"{op.rule} on {op.chosen_on} → threshold {op.threshold:.{decimals}f} ({op.chosen_on} sensitivity "
             f"{sensitivity:.3f}, specificity {specificity:.3f})")
    if round(op.threshold, decimals) == round(float(current), decimals):
        return f"{where}: already at this threshold, nothing to move."
    return where


CELLS = ("TP", "FP", "TN", "FN")
CELL_NAMES = {"TP": "pneumonia found", "FP": "false alarm", "TN": "normal cleared", "FN": "pneumonia missed"}


def cell_mask(y: np.ndarray, p: np.ndarray, threshold: float, cell: str) -> np.ndarray:
    """The images in one confusion cell (TP, FP, TN or FN) at ``threshold`` (positive when ``p >= threshold``)."""
    if cell not in CELLS:
        raise ValueError(f"unknown confusion cell {cell!r}; use one of {', '.join(CELLS)}")
    y = np.asarray(y).astype(bool)
    pred = np.asarray(p, dtype=np.float64) >= threshold
    return {"TP": pred & y, "FP": pred & ~y, "TN": ~pred & ~y, "FN": ~pred & y}[cell]


def precision_at_prevalence(sensitivity: float | np.ndarray, specificity: float | np.ndarray,
                            prevalence: float) -> float | np.ndarray:
    """Precision (PPV) where pneumonia has this prevalence, from sensitivity and specificity (Bayes' rule);
    NaN where nothing is called positive."""
    return prevalence_adjusted(sensitivity, specificity, prevalence)["ppv"]


def pr_curve_at_prevalence(fpr: np.ndarray, tpr: np.ndarray, prevalence: float) -> dict[str, np.ndarray]:
    """The precision-recall curve at another prevalence, from the ROC curve's points (those with a
    positive call: where FPR = TPR = 0 precision is undefined and left out)."""
    fpr, tpr = np.asarray(fpr, dtype=np.float64), np.asarray(tpr, dtype=np.float64)
    precision = np.asarray(precision_at_prevalence(tpr, 1 - fpr, prevalence), dtype=np.float64)
    keep = ~np.isnan(precision)
    return {"recall": tpr[keep], "precision": precision[keep]}


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


def cell_of(true_positive: bool, called_positive: bool) -> str:
    """The confusion cell of an image: its true class and the call (TP, FP, TN or FN)."""
    return ("TP" if true_positive else "FP") if called_positive else ("FN" if true_positive else "TN")


def clicked_cell(points: Sequence[Mapping], labels: Sequence[str] = ("NORMAL", "PNEUMONIA")) -> str | None:
    """The cell a click on :func:`~pneumo_core.visualize.charts.confusion_figure` chose: the last point of a
    plotly selection (``x`` "pred <label>", ``y`` "true <label>"); None for no point or one off the matrix."""
    for point in reversed(list(points)):
        x, y = str(point.get("x", "")), str(point.get("y", ""))
        called, truth = x.removeprefix("pred "), y.removeprefix("true ")
        if called in labels[:2] and truth in labels[:2] and x != called and y != truth:
            return cell_of(truth == labels[1], called == labels[1])
    return None


def cell_images(image_ids: Sequence[str], y: np.ndarray, p: np.ndarray, threshold: float, cell: str) -> pd.DataFrame:
    """The images of one confusion cell at ``threshold``: image_id and p_pneumonia, lowest probability first."""
    mask = cell_mask(y, p, threshold, cell)
    return (pd.DataFrame({"image_id": np.asarray(image_ids)[mask], "p_pneumonia": np.asarray(p, dtype=float)[mask]})
            .sort_values(["p_pneumonia", "image_id"]).reset_index(drop=True))


@dataclass(frozen=True)
class Curves:
    """A test set's ROC and PR curves with their areas, and each image's pneumonia subtype ("" for NORMAL)."""

    roc: dict[str, np.ndarray]
    pr: dict[str, np.ndarray]
    auroc: float
    average_precision: float
    subtypes: np.ndarray


def curves(y: np.ndarray, p: np.ndarray, image_ids: Sequence[str]) -> Curves:
    """What the Thresholds page draws whatever the threshold (computed once per prediction set)."""
    return Curves(roc_curve(y, p), pr_curve(y, p), auroc(y, p), average_precision(y, p),
                  np.array([subtype_of(i) for i in image_ids]))


#: the operating table's rows: (label, key of ThresholdSweep.at); PPV and NPV at the chosen prevalence
TABLE = (("Sensitivity", "sensitivity"), ("Specificity", "specificity"), ("PPV", "precision"), ("NPV", "npv"),
         ("F1", "f1"), ("Accuracy", "accuracy"))
AT_PREVALENCE = ("precision", "npv")


def at_prevalence(figures: Mapping[str, float], prevalence: float) -> dict[str, float]:
    """A sweep's figures at one threshold (:meth:`ThresholdSweep.at`) with PPV (``precision``) and NPV where
    pneumonia has this prevalence (Bayes' rule from sensitivity and specificity)."""
    adj = prevalence_adjusted(figures["sensitivity"], figures["specificity"], prevalence)
    return {**figures, "precision": adj["ppv"], "npv": adj["npv"], "prevalence": float(prevalence)}


def operating_rows(figures: Mapping[str, float], ci: Mapping[str, Mapping[str, float]] | None = None) -> list[dict]:
    """The operating table: metric, value (None for an undefined one) and its 95 % interval where ``ci`` has one
    (none for PPV and NPV: they are at a prevalence the bootstrap does not resample)."""
    rows = []
    for label, k in TABLE:
        v = float(figures[k])
        if k in AT_PREVALENCE:
            label = f"{label} (prevalence {figures.get('prevalence', float('nan')):.2f})"
        interval = "" if not ci or k in AT_PREVALENCE or k not in ci else f"{ci[k]['low']:.3f} – {ci[k]['high']:.3f}"
        rows.append({"metric": label, "value": None if np.isnan(v) else round(v, 4), "95 % CI": interval})
    return rows


def pr_point(figures: Mapping[str, float]) -> tuple[float, float]:
    """The PR chart's operating point: (sensitivity, PPV at the chosen prevalence); PPV 1 where nothing is
    called positive (the curve's left end)."""
    ppv = float(figures["precision"])
    return float(figures["sensitivity"]), 1.0 if np.isnan(ppv) else ppv


def curve_at_other_prevalence(c: Curves, prevalence: float, own: float) -> tuple[np.ndarray, np.ndarray, float] | None:
    """(recall, precision, prevalence) of the PR curve at the chosen prevalence when it differs from the set's
    own (``own``) at two decimals, as the slider shows them; None when they agree."""
    if round(float(prevalence), 2) == round(float(own), 2):
        return None
    curve = pr_curve_at_prevalence(c.roc["fpr"], c.roc["tpr"], prevalence)
    return curve["recall"], curve["precision"], float(prevalence)


def subtype_recall(y: np.ndarray, p: np.ndarray, threshold: float, subtypes: Sequence[str]) -> dict[str, float]:
    """Recall on BACTERIA and on VIRUS images at ``threshold`` (those present)."""
    groups = by_group(y, p, threshold, subtypes)
    return {g: float(v["sensitivity"]) for g, v in groups.items() if g in ("BACTERIA", "VIRUS")}


def threshold_from_link(text: str) -> float | None:
    """A link's ``?threshold=``: the number when it is one in [0, 1], else None."""
    try:
        t = float(text)
    except (TypeError, ValueError):
        return None
    return t if 0 <= t <= 1 else None


def apply_preset(y: np.ndarray, p: np.ndarray, label: str, target: float | None, current: float,
                 chosen_on: str = "validation") -> tuple[float | None, str]:
    """A preset applied on (y, p): the threshold it picks and :func:`preset_note`'s line, or None and the reason
    when the preset cannot be met there (or its target is out of range)."""
    try:
        op = choose(y, p, preset_rule(label, target), chosen_on=chosen_on)
    except ValueError as exc:
        return None, f"{label}: {exc}"
    at = ThresholdSweep(y, p).at(op.threshold)
    return op.threshold, preset_note(op, at["sensitivity"], at["specificity"], current)
