"""Two zoo folders' runs of one architecture compared seed by seed (e.g. 128 px vs 224 px, or with and
without distillation): which one the validation rule keeps, each one's test figures with 95 % intervals,
and the paired bootstrap difference on the same test images, per seed and for the mean over the seeds.

Both sides are scored as everywhere else: a binary run decides at Youden's J on its own validation file
(:func:`~pneumo_core.evaluation.selection.threshold_on`), a three-class one by the largest probability; which run
the rule keeps is the one decision function's (:func:`~pneumo_core.evaluation.decisions.decide`): A, the default,
stays unless the paired patient-clustered bootstrap of validation log loss puts B's difference wholly below 0.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation import artifacts
from pneumo_core.evaluation.bootstrap import paired_mean_difference, patient_groups
from pneumo_core.evaluation.decisions import decide, selection_loss
from pneumo_core.evaluation.predictions import Predictions, align
from pneumo_core.evaluation.results import test_figures
from pneumo_core.evaluation.selection import threshold_on
from pneumo_core.models.keys import HIERARCHICAL, ModelKey

METRICS = ("auroc", "accuracy")


def _sets(root: str | Path, task: str, arch: str, seed: int) -> tuple[Predictions, Predictions]:
    try:
        return tuple(artifacts.load_set(root, task, arch, seed, split) for split in ("val", "test"))
    except FileNotFoundError as exc:
        raise PredictionFileError(str(exc)) from None


def common_seeds(root_a: str | Path, root_b: str | Path, task: str, arch: str) -> list[int]:
    """The seeds of ``arch`` with val and test files under both roots."""
    return sorted(set(artifacts.seeds_of(root_a, task, arch)) & set(artifacts.seeds_of(root_b, task, arch)))


def compare_runs(root_a: str | Path, root_b: str | Path, task: str, arch: str, seeds: Sequence[int] | None = None,
                 metrics: Sequence[str] = METRICS, n_boot: int = 1000) -> dict:
    """Seed-by-seed comparison of ``arch`` under ``root_a`` (A) and ``root_b`` (B); differences are B - A.

    Returns ``{"seeds": [...], "runs": [per seed], "mean": {...}}``. Per seed: ``val_loss`` and ``threshold``
    of A and B, ``kept`` ("A" or "B": :func:`~pneumo_core.evaluation.decisions.decide` with A the default),
    ``val_diff`` (B - A in validation log loss: {diff, low, high}, validation patients resampled), ``test``
    {A, B: {metric: {value, low, high}}} and ``diff`` {metric: {diff, low, high}}. ``mean``: the same over the seeds
    (mean validation log loss, mean test metric, paired difference of the means). A :class:`PredictionFileError`
    if a seed lacks files on either side, or the sets differ in images or labels."""
    seeds = list(dict.fromkeys(common_seeds(root_a, root_b, task, arch) if seeds is None else seeds))
    metrics = list(dict.fromkeys(metrics))
    if not seeds:
        raise PredictionFileError(f"no seed of {task}/{arch} has val and test predictions under both "
                                  f"{root_a} and {root_b}")
    sets = {s: (_sets(root_a, task, arch, s), _sets(root_b, task, arch, s)) for s in seeds}
    tests = align([t for (_, ta), (_, tb) in sets.values() for t in (ta, tb)])  # same images, labels, order
    y, classes = tests[0].y_true, tests[0].classes
    groups = patient_groups(tests[0].frame["image_id"])  # intervals resample test patients
    runs, pairs, scored = [], {"A": [], "B": []}, {"A": [], "B": []}
    for k, (s, ((va, _), (vb, _))) in enumerate(sets.items()):
        align([va, vb])  # the validation losses are comparable only on the same images
        val, test = {"A": va, "B": vb}, {"A": tests[2 * k], "B": tests[2 * k + 1]}
        threshold = {side: threshold_on(v) for side, v in val.items()}
        for side in "AB":
            pairs[side].append((val[side], test[side]))
            scored[side].append((test[side].probs, threshold[side]))
        loss = {side: selection_loss(v) for side, v in val.items()}
        d = decide(f"{task} {arch} seed {s}: A or B", [("A", va), ("B", vb)], n_boot)
        b = d.candidates[1]
        runs.append({"seed": s, "val_loss": loss, "threshold": threshold, "kept": d.outcome,
                     "val_diff": {"diff": b.diff, "low": b.diff_low, "high": b.diff_high},
                     "test": {side: _figures([pairs[side][-1]], metrics, n_boot) for side in "AB"},
                     "diff": _diffs(y, scored["B"][-1:], scored["A"][-1:], classes, metrics, n_boot, groups)})
    mean = {"val_loss": {side: float(np.mean([r["val_loss"][side] for r in runs])) for side in "AB"},
            "test": {side: _figures(pairs[side], metrics, n_boot) for side in "AB"},
            "diff": _diffs(y, scored["B"], scored["A"], classes, metrics, n_boot, groups)}
    return {"task": task, "arch": arch, "A": str(root_a), "B": str(root_b), "seeds": seeds, "n_test": len(y),
            "binary": len(classes) == 2, "runs": runs, "mean": mean}


def _figures(runs: list[tuple[Predictions, Predictions]], metrics: Sequence[str], n_boot: int) -> dict:
    """{metric: {value (mean over the runs), low, high}}; an error naming the metrics there are."""
    fig = test_figures(runs, n_boot)
    known = [k for k in fig if k != "threshold"]
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise PredictionFileError(f"unknown metric {unknown[0]!r} for these predictions; one of: {', '.join(known)}")
    return {m: {"value": fig[m]["mean"], "low": fig[m]["low"], "high": fig[m]["high"]} for m in metrics}


def _diffs(y: np.ndarray, b: list, a: list, classes: Sequence[str], metrics: Sequence[str], n_boot: int,
           groups: np.ndarray) -> dict:
    """Paired differences mean(B) - mean(A) of each metric over (probs, validation threshold) runs: patients and,
    over several seeds, seeds resampled."""
    return {m: paired_mean_difference(y, b, a, classes, m, n_boot, groups=groups) for m in metrics}


def ensemble_differences(root: str | Path, n_boot: int = 1000, seed_ensemble: str | None = None) -> list[dict]:
    """The paired test differences the results discussion quotes, through the zoo's rules (selection): binary,
    ``seed_ensemble``'s seed ensemble (default: the architecture the bundled study's spec names,
    ``decisions.stated("seed_ensemble")``) minus the rule's ensemble (AUROC; accuracy at each one's validation
    threshold); three-class, the hierarchical model minus the three-class ensemble (macro-F1, VIRUS F1). Test
    patients resampled. One ``{"name", "metric", "diff", "low", "high"}`` per figure."""
    from pneumo_core.evaluation import selection
    from pneumo_core.evaluation.decisions import stated
    from pneumo_core.evaluation.predictions import ensemble, read_predictions

    out = []

    def add(name: str, a: tuple[Predictions, float | None], b: tuple[Predictions, float | None], metrics) -> None:
        x, y = align([a[0], b[0]])
        groups = patient_groups(x.frame["image_id"])
        for m in metrics:
            d = paired_mean_difference(x.y_true, [(x.probs, a[1])], [(y.probs, b[1])], x.classes, m, n_boot,
                                       groups=groups)
            out.append({"name": name, "metric": m, **d})

    arch = seed_ensemble or stated("seed_ensemble")
    seeds = artifacts.seeds_of(root, "binary", arch) if arch else []
    members = selection.ensemble_members(root, "binary")
    if seeds and members:
        from pneumo_core.models.networks import ARCHS

        seed_ens = {sp: ensemble([artifacts.load_set(root, "binary", arch, s, sp) for s in seeds])
                    for sp in ("val", "test")}
        ens = {sp: selection.ensemble_set(root, members, sp) for sp in ("val", "test")}
        shown = ARCHS[arch].display_name if arch in ARCHS else arch
        add(f"binary: {shown} seed ensemble - {selection.ensemble_name(members)}",
            (seed_ens["test"], threshold_on(seed_ens["val"])), (ens["test"], threshold_on(ens["val"])),
            ("auroc", "accuracy"))
    members = selection.ensemble_members(root, "three_class")
    hier_file = Path(root) / ModelKey("three_class", HIERARCHICAL).prediction_file("test")
    if members and hier_file.is_file():
        hier = read_predictions(hier_file)
        add(f"three-class: hierarchical - {selection.ensemble_name(members)}", (hier, None),
            (selection.ensemble_set(root, members, "test"), None), ("macro_f1", "f1_VIRUS"))
    return out
