"""The three prediction tasks: their class names, how dataset labels map to targets, logits to probabilities."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[str, ...]
    #: dataset labels (upper case) that belong to this task -> class index
    label_map: dict
    #: models for two-class tasks have one output: the logit of classes[1]
    n_outputs: int

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    def target(self, label: str) -> int:
        try:
            return self.label_map[str(label).upper()]
        except KeyError:
            raise KeyError(f"label {label!r} has no meaning for task {self.name!r}") from None

    def accepts(self, label: str) -> bool:
        return str(label).upper() in self.label_map


BINARY = Task("binary", ("NORMAL", "PNEUMONIA"),
              {"NORMAL": 0, "PNEUMONIA": 1, "BACTERIA": 1, "VIRUS": 1}, 1)
THREE_CLASS = Task("three_class", ("NORMAL", "BACTERIA", "VIRUS"),
                   {"NORMAL": 0, "BACTERIA": 1, "VIRUS": 2}, 3)
BACTERIA_VIRUS = Task("bacteria_virus", ("BACTERIA", "VIRUS"), {"BACTERIA": 0, "VIRUS": 1}, 1)

TASKS: dict[str, Task] = {t.name: t for t in (BINARY, THREE_CLASS, BACTERIA_VIRUS)}


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}") from None


def logits_to_probs(logits) -> np.ndarray:
    """(N, 1) logits -> (N, 2) [P(class0), P(class1)]; (N, K>1) -> softmax. Always rows summing to 1.
    Takes a torch tensor or an array; computed in float32."""
    t = np.asarray(logits.detach().cpu().numpy() if hasattr(logits, "detach") else logits, dtype=np.float32)
    if t.ndim == 1:
        t = t[:, None]
    if t.shape[1] == 1:
        with np.errstate(over="ignore"):
            p1 = (1.0 / (1.0 + np.exp(-t[:, 0]))).astype(np.float32)
        return np.stack([1 - p1, p1], axis=1)
    z = t - t.max(axis=1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
