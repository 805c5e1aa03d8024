"""Reports of prediction files: one set, or several (each + mean ± std + ensemble)."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pneumo_core.evaluation.bootstrap import bootstrap_binary, mean_std, patient_groups
from pneumo_core.evaluation.calibration import calibration_summary, class_reliability
from pneumo_core.data.datasets import subtype_of
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.metrics import binary_summary, by_group, multiclass_summary
from pneumo_core.evaluation.predictions import Predictions, ensemble
from pneumo_core.evaluation.thresholds import OperatingPoint


def binary_report(pred: Predictions, threshold: float = 0.5, n_bins: int = 15, n_boot: int = 0,
                  operating_point: OperatingPoint | None = None, seed: int = 0) -> dict:
    """Binary metrics (or the binary view of a NORMAL/BACTERIA/VIRUS set) at a threshold."""
    y, p = pred.y_binary, pred.p_positive
    if operating_point is not None:
        threshold = operating_point.threshold
    out = binary_summary(y, p, threshold)
    cal = calibration_summary(y, np.stack([1 - p, p], 1), n_bins)
    out.update({k: cal[k] for k in ("ece", "mce", "brier", "nll")})
    out["n"] = int(len(y))
    if operating_point is not None:
        out["operating_point"] = operating_point.to_dict()
    subtypes = [subtype_of(i) for i in pred.frame["image_id"]]
    if any(subtypes):
        groups = by_group(y, p, threshold, subtypes)
        out["recall_by_subtype"] = {g: v["sensitivity"] for g, v in groups.items() if g != "NORMAL"}
    if n_boot:
        out["ci95"] = bootstrap_binary(y, p, threshold, n_boot, seed, n_bins=n_bins,
                                       groups=patient_groups(pred.frame["image_id"]))
    return out


def multiclass_report(pred: Predictions, n_bins: int = 15) -> dict:
    y, probs = pred.y_true, pred.probs
    out = multiclass_summary(y, probs, pred.classes)
    cal = calibration_summary(y, probs, n_bins)
    out.update({k: cal[k] for k in ("ece", "mce", "brier", "nll")})
    out["ece_per_class"] = {c: class_reliability(y, probs, k, n_bins).ece for k, c in enumerate(pred.classes)}
    out["n"] = int(len(y))
    return out


def report(pred: Predictions, threshold: float = 0.5, n_bins: int = 15, n_boot: int = 0,
           operating_point: OperatingPoint | None = None) -> dict:
    """Metrics of the rows with a known label; ``n_unknown`` (and a ``note``) counts the rows left out."""
    head = {"file": pred.source, "model": pred.name, "task": pred.task, "classes": list(pred.classes)}
    n_unknown = pred.n_unknown
    head["n_unknown"] = n_unknown
    if n_unknown:
        head["note"] = f"{n_unknown} row(s) with an unknown label (y_true = -1) left out of every metric"
        pred = pred.labelled()
    if pred.is_binary:
        return {**head, **binary_report(pred, threshold, n_bins, n_boot, operating_point)}
    out = {**head, **multiclass_report(pred, n_bins)}
    if pred.classes[0] == "NORMAL":
        out["binary_view"] = binary_report(pred, threshold, n_bins, n_boot, operating_point)
    return out


def _flat_numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "n_unknown"}


def report_many(preds: Sequence[Predictions], thresholds: Sequence[float], ops: Sequence[OperatingPoint | None],
                n_bins: int = 15, n_boot: int = 0, ensemble_threshold: float = 0.5,
                ensemble_op: OperatingPoint | None = None) -> dict:
    """Each set, mean ± std over them and their probability-mean ensemble. The ensemble is decided at
    its own threshold: ``ensemble_op`` (chosen on the ensemble's validation predictions) or
    ``ensemble_threshold``, never the mean of the members' thresholds."""
    each = [report(p, t, n_bins, n_boot, op) for p, t, op in zip(preds, thresholds, ops)]
    if len(preds) == 1:
        return each[0]
    out: dict = {"runs": each, "mean_std": mean_std(_flat_numbers(e) for e in each)}
    if not preds[0].is_binary:
        out["mean_std_per_class_f1"] = mean_std({c: v["f1"] for c, v in e["per_class"].items()} for e in each)
    try:
        out["ensemble"] = report(ensemble(preds), ensemble_threshold, n_bins, n_boot, ensemble_op)
    except PredictionFileError as exc:
        out["ensemble"] = {"error": str(exc)}
    return out
