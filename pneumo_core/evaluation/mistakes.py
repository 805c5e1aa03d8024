"""A prediction set's decisions and its mistakes: the confusion matrix at the model's rule and the
misclassified images, most confident first (what the Errors page shows)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

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
