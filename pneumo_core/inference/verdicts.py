"""One image's verdicts from the zoo's models (the results table's rows): each model and ensemble at its
validation threshold, and the hierarchical model, all from per-model probabilities computed once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from pneumo_core.data.tasks import get_task
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.inference.predictors import Hierarchical
from pneumo_core.models.keys import HIERARCHICAL

TASK_ORDER = ("binary", "three_class", "bacteria_virus")


@dataclass(frozen=True)
class Verdict:
    model: str
    task: str
    classes: tuple[str, ...]
    probs: tuple[float, ...]
    label: str
    confidence: float  # the probability of the decided class
    decided_by: str  # e.g. "P(PNEUMONIA) ≥ 0.509 (Youden's J on validation)"
    members: tuple[str, ...]  # source keys of the models it runs
    threshold: float | None = None  # two classes: P(classes[1]) at or above it decides classes[1]

    @property
    def p_pneumonia(self) -> float | None:
        """P(pneumonia): P(PNEUMONIA), or 1 - P(NORMAL) for three classes; None where every class is a
        pneumonia (bacteria vs virus)."""
        if "PNEUMONIA" in self.classes:
            return self.probs[self.classes.index("PNEUMONIA")]
        if "NORMAL" in self.classes:
            return 1.0 - self.probs[self.classes.index("NORMAL")]
        return None

    @property
    def decides_at(self) -> str:
        """The rule in a few words: "P(PNEUMONIA) ≥ 0.509", or "largest probability"."""
        if len(self.classes) == 2 and self.threshold is not None:
            return f"P({self.classes[1]}) ≥ {self.threshold:.3f}"
        return "largest probability"

    @property
    def reason(self) -> str:
        """Why this verdict, from the numbers: "P(PNEUMONIA) 0.286 < 0.509 → NORMAL"."""
        if len(self.classes) == 2 and self.threshold is not None:
            p = self.probs[1]
            sign = "≥" if p >= self.threshold else "<"
            return f"P({self.classes[1]}) {p:.3f} {sign} {self.threshold:.3f} → {self.label}"
        k = self.classes.index(self.label)
        return f"P({self.label}) {self.probs[k]:.3f} is the largest → {self.label}"


def verdict_rows(verdicts: Sequence[Verdict]) -> list[dict]:
    """The verdict table's rows, in words that cannot be misread: P(pneumonia) (whatever the verdict), the
    rule that decided, the verdict and why, and every class's probability."""
    return [{"model": v.model, "task": v.task, "P(pneumonia)": v.p_pneumonia, "decides at": v.decides_at,
             "verdict": v.label, "why": v.reason,
             "class probabilities": " · ".join(f"{c} {p:.3f}" for c, p in zip(v.classes, v.probs)),
             "decided by": v.decided_by} for v in verdicts]


def decide(probs: Sequence[float], classes: Sequence[str], threshold: float | None) -> tuple[str, float, str]:
    """(label, probability of the label, the rule): two classes at ``threshold`` on P(classes[1]);
    more at the largest probability."""
    p = np.asarray(probs, dtype=np.float64)
    if len(classes) == 2 and threshold is not None:
        k = int(p[1] >= threshold)
        return classes[k], float(p[k]), selection.decision_rule(threshold, classes[1])
    k = int(np.argmax(p))
    return classes[k], float(p[k]), "largest probability"


def _guarded(probs_of: Callable[[str], np.ndarray], errors: list[str] | None) -> Callable[[str], np.ndarray | None]:
    """``probs_of`` that, given an ``errors`` list, records a model's PneumoError there (once) and gives None."""
    def guarded(key: str) -> np.ndarray | None:
        try:
            return probs_of(key)
        except PneumoError as exc:
            if errors is None:
                raise
            if str(exc) not in errors:
                errors.append(str(exc))
            return None
    return guarded


def zoo_verdicts(root: str | Path, available: set[str], probs_of: Callable[[str], np.ndarray],
                 tasks: Sequence[str] = TASK_ORDER, errors: list[str] | None = None) -> list[Verdict]:
    """The verdicts of the results table's models whose members are all in ``available`` (source keys
    such as ``binary/resnet18``); ``probs_of(key)`` gives one model's class probabilities for the image
    (cache it: a member serves several rows). Per task in :func:`~pneumo_core.evaluation.selection.zoo_models`'
    order (the task's first model first); the hierarchical model after the three-class models, or first where
    the decision picks it. With an ``errors`` list, a row whose model fails (PneumoError) is left out and
    the message goes there; without, the error propagates."""
    probs_of = _guarded(probs_of, errors)
    out = []
    for task in tasks:
        classes = get_task(task).classes
        mine = []
        for z in selection.zoo_models(root, task):
            keys = z.keys
            if not set(keys) <= available:
                continue
            each = [probs_of(k) for k in keys]
            if any(e is None for e in each):
                continue
            p = np.mean(each, axis=0)
            label, conf, rule = decide(p, classes, z.threshold)
            mine.append(Verdict(z.name, task, classes, tuple(map(float, p)), label, conf, rule, keys,
                                z.threshold if len(classes) == 2 else None))
        if task == "three_class":
            plan = selection.hierarchical_plan(root)
            if plan and {plan.stage_a.key, plan.stage_b.key} <= available:
                a, b = probs_of(plan.stage_a.key), probs_of(plan.stage_b.key)
                if a is not None and b is not None:
                    p = Hierarchical.combine([a[1]], [b[1]], plan.threshold_b)[0]
                    label, conf, rule = decide(p, classes, None)
                    mine.append(Verdict(HIERARCHICAL, task, classes, tuple(map(float, p)), label, conf, rule,
                                        (plan.stage_a.key, plan.stage_b.key)))
        first = selection.first_choice(root, task)  # the hierarchical model leads where the decision picks it
        out += sorted(mine, key=lambda v: not (first is not None and first.arch == HIERARCHICAL == v.model))
    return out


def stored_verdicts(models: dict[str, tuple[tuple[str, ...], float]], probs_of: Callable[[str], np.ndarray],
                    errors: list[str] | None = None) -> list[Verdict]:
    """Verdicts of models without prediction files (e.g. a Hub repo): each at its checkpoint's stored
    threshold. ``models``: key -> (classes, threshold). ``errors`` as in :func:`zoo_verdicts`."""
    probs_of = _guarded(probs_of, errors)
    out = []
    for key, (classes, threshold) in models.items():
        p = probs_of(key)
        if p is None:
            continue
        label, conf, rule = decide(p, classes, threshold if len(classes) == 2 else None)
        if len(classes) == 2:
            rule = f"P({classes[1]}) ≥ {threshold:.3f} (stored in the checkpoint)"
        out.append(Verdict(key, key.split("/")[0], tuple(classes), tuple(map(float, p)), label, conf, rule, (key,),
                           threshold if len(classes) == 2 else None))
    return out
