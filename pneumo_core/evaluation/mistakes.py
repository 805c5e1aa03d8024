"""A prediction set's decisions and its mistakes: the confusion matrix at the model's rule and the
misclassified images, most confident first (what the Errors page shows)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Collection, Sequence

import numpy as np
import pandas as pd

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.predictions import Predictions

ANY = "any wrong class"


def decisions(pred: Predictions, threshold: float | None) -> np.ndarray:
    """Predicted class index per image: P(classes[1]) ≥ threshold for two classes, else the largest."""
    if pred.is_binary and threshold is not None:
        return (pred.p_positive >= threshold).astype(np.int64)
    return pred.probs.argmax(1)


def confusion(pred: Predictions, decided: np.ndarray) -> list[list[int]]:
    """Rows true class, columns predicted class."""
    k = len(pred.classes)
    cm = np.zeros((k, k), dtype=np.int64)
    np.add.at(cm, (pred.y_true, decided), 1)
    return cm.tolist()


def mistakes(pred: Predictions, decided: np.ndarray, true_class: str, predicted_as: str = ANY) -> pd.DataFrame:
    """The images of ``true_class`` decided otherwise (or as ``predicted_as``): image_id, predicted,
    confidence (the probability of the decided class), most confident first."""
    classes = list(pred.classes)
    ti = classes.index(true_class)
    y = pred.y_true
    mask = (y == ti) & (decided != ti)
    if predicted_as != ANY:
        mask &= decided == classes.index(predicted_as)
    conf = pred.probs[np.arange(len(decided)), decided]
    out = pd.DataFrame({"image_id": pred.frame["image_id"].to_numpy()[mask],
                        "predicted": [classes[i] for i in decided[mask]], "confidence": conf[mask]})
    return out.sort_values(["confidence", "image_id"], ascending=[False, True]).reset_index(drop=True)


def largest_error_cell(cm: Sequence[Sequence[int]], true: int | None = None) -> tuple[int, int] | None:
    """The (true, predicted) class indices of the confusion matrix's largest off-diagonal cell (within row
    ``true`` when given; ties: the first in row order); None when there are no errors there."""
    m = np.array(cm, dtype=np.int64)
    np.fill_diagonal(m, -1)
    if true is not None:
        m[np.arange(len(m)) != true] = -1
    i, j = np.unravel_index(int(np.argmax(m)), m.shape)
    return (int(i), int(j)) if m[i, j] > 0 else None


def decision_text(pred: Predictions, threshold: float | None) -> str:
    """How the set's images were decided, in one line (the rule's wording from :mod:`selection`)."""
    if pred.is_binary and threshold is not None:
        return f"Decision: {selection.decision_rule(threshold, pred.classes[1])}."
    return "Decision: the class of largest probability."


def mistake_noun(pred: Predictions, true_class: str) -> str:
    """What a mistake on ``true_class`` is called: false negatives / false positives for two classes."""
    if not pred.is_binary:
        return "errors"
    return "false negatives" if true_class == pred.classes[1] else "false positives"


@dataclass(frozen=True)
class HeatmapChoice:
    """The checkpoint that explains a prediction set's mistakes (its source key), or why there is none."""

    key: str | None
    reason: str = ""


def heatmap_choice(arch: str, seed: int | None, key: str, *, combined: bool, own: bool,
                   source_keys: Collection[str], source_seed: int | None) -> HeatmapChoice:
    """Grad-CAM only from the very checkpoint that made the predictions: ``key`` (the architecture's best
    checkpoint, ``task/arch``) must be in the sidebar source (``source_keys``), the source must be the one whose
    prediction files these are (``own``), and the set's seed the one that checkpoint holds (``source_seed``).
    An ensemble or the hierarchical model (``combined``) has no single heatmap."""
    if combined:
        return HeatmapChoice(None, "an ensemble has no single heatmap")
    if not own:
        return HeatmapChoice(None, "these predictions are not from the sidebar source's models")
    if key not in source_keys or seed != source_seed:
        holds = f"seed {source_seed}" if key in source_keys else f"no {key}"
        return HeatmapChoice(None, f"no checkpoint of {arch} seed {seed} is loaded (the source holds {holds})")
    return HeatmapChoice(key)
