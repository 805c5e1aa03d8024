"""Two zoo folders' runs of one architecture compared seed by seed (e.g. 128 px vs 224 px, or with and
without distillation): which one the validation rule keeps, each one's test figures with 95 % intervals,
and the paired bootstrap difference on the same test images, per seed and for the mean over the seeds.

Both sides are scored as everywhere else: the threshold is Youden's J on each run's own validation file
(:func:`~pneumo_core.evaluation.selection.threshold_on`), the rule is the lower validation log loss
(:func:`~pneumo_core.evaluation.selection.val_loss`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pneumo_core.errors import LimitError, PredictionFileError
from pneumo_core.evaluation import artifacts
from pneumo_core.evaluation.bootstrap import bootstrap_runs, paired_mean_difference, resampled_metrics
from pneumo_core.evaluation.predictions import Predictions, align
from pneumo_core.evaluation.selection import threshold_on, val_loss

DEFAULT_METRICS = ("auroc", "accuracy")


def _sets(root: str | Path, task: str, arch: str, seed: int) -> tuple[Predictions, Predictions]:
    try:
        return tuple(artifacts.load_set(root, task, arch, seed, split) for split in ("val", "test"))
    except FileNotFoundError as exc:
        raise PredictionFileError(str(exc)) from None


def common_seeds(root_a: str | Path, root_b: str | Path, task: str, arch: str) -> list[int]:
    """The seeds of ``arch`` with val and test files under both roots."""
    return sorted(set(artifacts.seeds_of(root_a, task, arch)) & set(artifacts.seeds_of(root_b, task, arch)))


def compare_runs(root_a: str | Path, root_b: str | Path, task: str, arch: str, seeds: Sequence[int] | None = None,
                 metrics: Sequence[str] = DEFAULT_METRICS, n_boot: int = 1000) -> dict:
    """Seed-by-seed comparison of ``arch`` under ``root_a`` (A) and ``root_b`` (B); differences are B - A.

    Returns ``{"seeds": [...], "runs": [per seed], "mean": {...}}``. Per seed: ``val_loss`` and ``threshold``
    of A and B, ``kept`` ("A" or "B": the lower validation log loss, A on a tie), ``test`` {A, B: {metric:
    {value, low, high}}} and ``diff`` {metric: {diff, low, high}}. ``mean``: the same over the seeds (mean
    validation log loss, mean test metric, paired difference of the means). A :class:`PredictionFileError`
    if a seed lacks files on either side or the two sides hold different images."""
    if n_boot < 1:
        raise LimitError("the comparison needs at least one bootstrap resample")
    seeds = list(common_seeds(root_a, root_b, task, arch) if seeds is None else seeds)
    if not seeds:
        raise PredictionFileError(f"no seed of {task}/{arch} has val and test predictions under both "
                                  f"{root_a} and {root_b}")
    runs, scored_a, scored_b, y, classes = [], [], [], None, None
    for seed in seeds:
        (va, ta), (vb, tb) = _sets(root_a, task, arch, seed), _sets(root_b, task, arch, seed)
        align([va, vb])  # the validation losses are comparable only on the same images
        ta, tb = align([ta, tb])
        if y is None:
            y, classes, ids = ta.y_true, ta.classes, list(ta.frame["image_id"])
        elif list(ta.frame["image_id"]) != ids:
            raise PredictionFileError(f"{ta.source}: seed {seed} was tested on other images than seed {seeds[0]}")
        a, b = (ta.probs, threshold_on(va)), (tb.probs, threshold_on(vb))
        scored_a.append(a)
        scored_b.append(b)
        loss = {"A": val_loss(va), "B": val_loss(vb)}
        runs.append({"seed": seed, "val_loss": loss, "threshold": {"A": a[1], "B": b[1]},
                     "kept": "B" if loss["B"] < loss["A"] else "A",
                     "test": {"A": _figures(y, [a], classes, metrics, n_boot),
                              "B": _figures(y, [b], classes, metrics, n_boot)},
                     "diff": {m: paired_mean_difference(y, [b], [a], classes, m, n_boot) for m in metrics}})
    mean = {"val_loss": {s: float(np.mean([r["val_loss"][s] for r in runs])) for s in ("A", "B")},
            "test": {"A": _figures(y, scored_a, classes, metrics, n_boot),
                     "B": _figures(y, scored_b, classes, metrics, n_boot)},
            "diff": {m: paired_mean_difference(y, scored_b, scored_a, classes, m, n_boot) for m in metrics}}
    return {"task": task, "arch": arch, "A": str(root_a), "B": str(root_b), "seeds": seeds, "n_test": len(y),
            "runs": runs, "mean": mean}


def _figures(y: np.ndarray, scored: list, classes: Sequence[str], metrics: Sequence[str], n_boot: int) -> dict:
    """{metric: {value (mean over the runs), low, high}}; an error naming the metrics there are."""
    full = np.ones((1, len(y)))
    each = [resampled_metrics(y, probs, t, full, classes) for probs, t in scored]
    unknown = [m for m in metrics if m not in each[0]]
    if unknown:
        raise PredictionFileError(f"unknown metric {unknown[0]!r} for these predictions; one of: {', '.join(each[0])}")
    ci = bootstrap_runs(y, scored, classes, n_boot)
    return {m: {"value": float(np.mean([e[m][0] for e in each])), "low": ci[m][0], "high": ci[m][1]}
            for m in metrics}
