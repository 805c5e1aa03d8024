"""Knowledge distillation (Hinton et al., 2015): a student learns from the labels and from a teacher's
class probabilities on the training images.

The teacher is one or more prediction files of the training split (``python -m pneumo_core evaluate
--split train``, e.g. one per EfficientNet-Lite0 seed); their mean probabilities are the soft targets.
Validation, selection and thresholds stay on the labels alone.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from pneumo_core.data.tasks import Task
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation.predictions import ensemble, read_predictions


def teacher_targets(files: Sequence[str | Path], frame: pd.DataFrame, task: Task) -> np.ndarray:
    """The teachers' mean class probabilities (N, K) for the images of ``frame`` (its ``image_id`` order).

    Raises PneumoError when a file's classes are not the task's or an image has no teacher probability."""
    preds = [read_predictions(f) for f in files]
    for f, p in zip(files, preds):
        if list(p.classes) != list(task.classes):
            raise PneumoError(f"teacher {f}: classes {', '.join(p.classes)}, the {task.name} task needs "
                              f"{', '.join(task.classes)}")
    mean = ensemble(preds, model="teacher") if len(preds) > 1 else preds[0]
    probs = pd.DataFrame(mean.probs, index=mean.frame["image_id"].to_numpy())
    probs = probs[~probs.index.duplicated()]
    missing = frame.loc[~frame["image_id"].isin(probs.index), "image_id"]
    if len(missing):
        raise PneumoError(f"the teacher has no probability for {len(missing)} of {len(frame)} training images "
                          f"(e.g. {missing.iloc[0]}): predict the same split with `python -m pneumo_core "
                          "evaluate --split train`")
    return probs.loc[frame["image_id"].to_numpy()].to_numpy(np.float32)


class DistillationLoss(nn.Module):
    """``(1 - alpha)`` x the task's weighted loss on the labels + ``alpha`` x the cross-entropy between the
    student's and the teacher's class probabilities."""

    def __init__(self, hard: nn.Module, alpha: float = 0.5) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise PneumoError(f"distillation weight alpha must be in [0, 1], not {alpha}")
        self.hard, self.alpha = hard, alpha

    def forward(self, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if logits.shape[1] == 1:  # one logit: P(positive) against the teacher's P(positive)
            hard = self.hard(logits[:, 0], y.float())
            teach = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], soft[:, -1])
        else:
            hard = self.hard(logits, y)
            teach = -(soft * nn.functional.log_softmax(logits, dim=1)).sum(1).mean()
        return (1 - self.alpha) * hard + self.alpha * teach
