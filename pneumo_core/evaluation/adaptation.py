"""Label-free adaptation of a binary model's operating point to new images (issue 26, item 8), reported either way.

Two methods, each using the target images' probabilities or pixels only, never their labels:

- **Saerens et al. (2002)**, prior adjustment: EM on the target images' predicted P(pneumonia) re-estimates the
  pneumonia prior (:func:`saerens_prior`). The validation threshold ``t`` is read as a Bayes decision on posteriors
  under the validation prior; with the same costs under the new prior, the rule becomes the threshold
  ``t' = sigmoid(logit t + logit prior_val - logit prior_new)`` on the model's own outputs (:func:`adjusted_threshold`).
  The EM needs the prior the outputs are calibrated to; the models were trained with class-weighted losses, so it
  is not the training prevalence: :func:`source_prior` fits it on validation (the prior under which the validation
  outputs, re-weighted to the validation prevalence, average to that prevalence).
- **AdaBN** (Li et al., 2016): BatchNorm statistics re-estimated on the target pixels
  (:mod:`pneumo_core.inference.adabn`); the adapted model's outputs are decided at the same validation threshold.

The rules (:data:`RULES`) were fixed before any test figure was computed. :func:`evaluate` scores both operating
points on the labelled test set: sensitivity, specificity and accuracy with 95 % intervals over resampled test
patients, and the paired difference (adapted - validation threshold) on the same resamples; a method **helps** when
the paired difference's interval in accuracy lies above 0.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.bootstrap import bootstrap_binary, paired_difference, patient_groups
from pneumo_core.evaluation.decisions import bundled_seed
from pneumo_core.evaluation.predictions import Predictions, align, ensemble
from pneumo_core.files import ASSETS

EPS = 1e-6
#: where ``adapt --infer`` writes the AdaBN test predictions (``predictions/binary/<arch>_seed<N>_test.csv``)
ADABN_ROOT = ASSETS.parent / "experiments" / "adaptation" / "adabn"
METRICS = ("sensitivity", "specificity", "accuracy")
_PAIRED = {"sensitivity": "recall", "specificity": "specificity", "accuracy": "accuracy"}  # resampled_metrics' names
RULES = {
    "saerens": "Saerens EM re-estimates the pneumonia prior from the test images' P(pneumonia) (source prior fitted "
               "on validation); the validation threshold t becomes t' = sigmoid(logit t + logit prior_val - "
               "logit prior_test_estimate): the same Bayes decision under the new prior",
    "adabn": "AdaBN: BatchNorm running statistics re-estimated on the test images' pixels (batches of 32, shuffled, "
             "no labels, no gradient); the adapted model's outputs at the same validation threshold",
}
RULES_COMMIT = "34d497c"  # where RULES were committed, before the first test figure
HELPS = "the paired difference in test accuracy (adapted - validation threshold) has a 95 % interval above 0"
#: the published anchor on this test set (Kermany et al., Cell 2018)
KERMANY_2018 = {"accuracy": 0.928, "sensitivity": 0.932, "specificity": 0.901}


def _logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def prior_shift(p: np.ndarray, prior_from: float, prior_to: float) -> np.ndarray:
    """Posteriors P(positive | x) computed under ``prior_from`` re-weighted to ``prior_to`` (Bayes' rule: the
    likelihood ratio kept, the prior odds replaced)."""
    return _sigmoid(_logit(p) + _logit(prior_to) - _logit(prior_from))


@dataclass(frozen=True)
class PriorFit:
    """The EM's estimate of the target prior: ``prior``, after ``iterations`` steps, ``converged`` or not."""

    prior: float
    iterations: int
    converged: bool


def saerens_prior(p: np.ndarray, prior_from: float, tol: float = 1e-8, max_iter: int = 10_000) -> PriorFit:
    """Saerens, Latinne & Decaestecker (2002): the prior of the positive class among the images whose predicted
    P(positive) under ``prior_from`` are ``p``, by EM (E: re-weight the posteriors to the current prior; M: the
    prior is their mean). Labels are neither needed nor accepted."""
    p = np.asarray(p, dtype=np.float64).ravel()
    if not len(p) or not np.isfinite(p).all():
        raise PneumoError("the prior adjustment needs at least one finite probability")
    prior = float(prior_from)
    for i in range(1, max_iter + 1):
        new = float(prior_shift(p, prior_from, prior).mean())
        if abs(new - prior) < tol:
            return PriorFit(new, i, True)
        prior = new
    return PriorFit(prior, max_iter, False)


def source_prior(p_val: np.ndarray, prevalence_val: float) -> float:
    """The prior the model's outputs act as if they were computed under, fitted on validation: the ``q`` for which
    the validation outputs re-weighted from ``q`` to the validation prevalence average to that prevalence (the
    fixed point of :func:`saerens_prior` on validation). Equals the prevalence for outputs calibrated on it."""
    from scipy.optimize import brentq

    s = _logit(np.asarray(p_val, dtype=np.float64))
    target = float(np.clip(prevalence_val, EPS, 1 - EPS))

    def gap(logit_q: float) -> float:
        return float(_sigmoid(s + _logit(target) - logit_q).mean()) - target

    lo, hi = -30.0, 30.0
    if gap(lo) * gap(hi) > 0:  # outputs all on one side: no finite fit, the prevalence itself
        return target
    return float(_sigmoid(brentq(gap, lo, hi, xtol=1e-12)))


def adjusted_threshold(threshold: float, prior_val: float, prior_new: float) -> float:
    """The threshold on the model's outputs that makes the same Bayes decision as ``threshold`` did under
    ``prior_val`` once the prior is ``prior_new``."""
    return float(_sigmoid(_logit(threshold) + _logit(prior_val) - _logit(prior_new)))


# ---------------------------------------------------------------- the experiment on the committed files


@dataclass(frozen=True)
class Adaptation:
    """One model, one method: test figures at the validation threshold and at the adapted operating point."""

    key: str
    method: str
    seeds: tuple[int, ...]
    threshold: float  # the validation threshold (Youden's J on validation)
    adapted_threshold: float  # on the (adapted) model's outputs
    n_images: int
    n_patients: int
    n_boot: int
    at_validation: dict[str, dict[str, float]]  # metric -> {value, low, high}
    adapted: dict[str, dict[str, float]]
    diff: dict[str, dict[str, float]]  # metric -> {diff, low, high}: adapted - validation threshold
    priors: dict[str, float] = field(default_factory=dict)  # Saerens: validation, source fit, estimate, test (known)

    @property
    def helps(self) -> bool:
        return bool(self.diff["accuracy"]["low"] > 0)

    def to_dict(self) -> dict:
        return {"key": self.key, "method": self.method, "rule": RULES[self.method], "seeds": list(self.seeds),
                "threshold": self.threshold, "adapted_threshold": self.adapted_threshold, "n_images": self.n_images,
                "n_patients": self.n_patients, "n_boot": self.n_boot, "at_validation_threshold": self.at_validation,
                "adapted": self.adapted, "difference": self.diff, "priors": self.priors, "helps": self.helps,
                "helps_rule": HELPS}


def bundled_keys(root: str | Path) -> list[str]:
    """``binary/ARCH`` of every binary architecture whose checkpoint ``root`` bundles (every one with prediction
    files where it bundles none)."""
    archs = artifacts.archs_of(root, "binary")
    held = [a for a in archs if bundled_seed(root, "binary", a) is not None]
    return [f"binary/{a}" for a in (held or archs)]


def _parse(root: str | Path, key: str) -> tuple[str, int | None | str]:
    """(arch, seed) of ``binary/ARCH`` (its bundled or rule's seed), ``binary/ARCH/seedN``, ``binary/ARCH/ensemble``
    (the seeds' probability mean) or ``binary/ensemble`` (the task's ensemble)."""
    parts = key.strip("/").split("/")
    if len(parts) not in (2, 3) or parts[0] != "binary":
        raise PneumoError(f"{key!r}: a binary model key is binary/ARCH, binary/ARCH/seedN, binary/ARCH/ensemble or "
                          f"binary/ensemble")
    arch = parts[1]
    if arch == selection.ENSEMBLE:
        return arch, "ensemble"
    if arch not in artifacts.archs_of(root, "binary"):
        raise PneumoError(f"{key!r}: no binary {arch} prediction files under {root}; one of: "
                          f"{', '.join(artifacts.archs_of(root, 'binary'))}")
    if len(parts) == 2:
        s = bundled_seed(root, "binary", arch)
        return arch, selection.best_seed(root, "binary", arch) if s is None else s
    if parts[2] == "ensemble":
        return arch, "ensemble"
    if not parts[2].startswith("seed") or not parts[2][4:].isdigit():
        raise PneumoError(f"{key!r}: the third part is seedN or ensemble")
    return arch, int(parts[2][4:])


def source_key(key: str) -> str:
    """The bundled checkpoint's key (``binary/ARCH``) of a model key."""
    return "/".join(key.strip("/").split("/")[:2])


def _sets(root: str | Path, arch: str, seed: int | str) -> tuple[Predictions, Predictions, tuple[int, ...]]:
    if arch == selection.ENSEMBLE:
        members = selection.ensemble_members(root, "binary")
        return (*(selection.ensemble_set(root, members, s) for s in ("val", "test")), tuple(m.seed for m in members))
    seeds = tuple(artifacts.seeds_of(root, "binary", arch)) if seed == "ensemble" else (int(seed),)
    val, test = ([artifacts.load_set(root, "binary", arch, s, sp) for s in seeds] for sp in ("val", "test"))
    if len(seeds) > 1:
        return ensemble(val, f"{arch} ({len(seeds)}-seed ensemble)"), ensemble(test, f"{arch} ensemble"), seeds
    return val[0], test[0], seeds


def _score(test: Predictions, p_at_val: np.ndarray, t_val: float, p_adapted: np.ndarray, t_adapted: float,
           n_boot: int) -> tuple[dict, dict, dict, int]:
    y = test.y_binary
    groups = patient_groups(test.frame["image_id"])
    figs = [bootstrap_binary(y, p, t, n_boot=n_boot, metrics=METRICS, groups=groups)
            for p, t in ((p_at_val, t_val), (p_adapted, t_adapted))]
    two = [np.stack([1 - p, p], axis=1) for p in (p_adapted, p_at_val)]
    diff = {m: paired_difference(y, (two[0], t_adapted), (two[1], t_val), ("NORMAL", "PNEUMONIA"), _PAIRED[m],
                                 n_boot, groups=groups) for m in METRICS}
    return figs[0], figs[1], diff, len(np.unique(groups))


def evaluate(root: str | Path, adabn_root: str | Path, key: str, method: str, n_boot: int = 1000) -> Adaptation:
    """The experiment for one model and method (:data:`RULES`), scored on the labelled test set."""
    if method not in RULES:
        raise PneumoError(f"unknown method {method!r}; one of: {', '.join(RULES)}")
    arch, seed = _parse(root, key)
    val, test, seeds = _sets(root, arch, seed)
    val, test = val.labelled(), test.labelled()
    t = selection.pneumonia_threshold_on(val)
    priors: dict[str, float] = {}
    if method == "saerens":
        p_adapted = test.p_positive
        prior_val = float(val.y_binary.mean())
        q = source_prior(val.p_positive, prior_val)
        fit = saerens_prior(test.p_positive, q)  # probabilities only: no label goes in
        t_adapted = adjusted_threshold(t, prior_val, fit.prior)
        priors = {"validation": prior_val, "source_fit": q, "test_estimate": fit.prior,
                  "test_actual": float(test.y_binary.mean()), "em_iterations": fit.iterations}
    else:
        if not isinstance(seed, int):
            raise PneumoError(f"{key}: AdaBN runs on one bundled checkpoint, not an ensemble")
        adapted = artifacts.load_set(adabn_root, "binary", arch, seed, "test").labelled()
        test, adapted = align([test, adapted])
        p_adapted, t_adapted = adapted.p_positive, t
    at_val, at_adapted, diff, n_patients = _score(test, test.p_positive, t, p_adapted, t_adapted, n_boot)
    return Adaptation(key, method, seeds, t, t_adapted, len(test.frame), n_patients, n_boot, at_val, at_adapted,
                      diff, priors)


CAVEAT = ("An experiment, not a setting. AdaBN re-estimated this model's BatchNorm statistics on the test X-rays "
          "themselves (their pixels, never their labels) and then predicted them at the same validation threshold: "
          "adapt to these images, no labels. It needs a batch of X-rays from the new place, was measured once on one "
          "test set, and is judged here with that set's labels; check it on labelled X-rays from the new place "
          "before trusting it.")


def adabn_for(root: str | Path, adabn_root: str | Path, task: str, arch: str, seed: int | None,
              n_boot: int = 1000) -> Adaptation | None:
    """The AdaBN experiment of one zoo model where it was run (a binary architecture's bundled seed, in the bundled
    zoo whose checkpoints it adapted); None elsewhere."""
    if task != "binary" or seed is None or Path(root).resolve() != ASSETS.resolve():
        return None
    if bundled_seed(root, task, arch) != seed:
        return None
    try:
        return evaluate(root, adabn_root, f"binary/{arch}/seed{seed}", "adabn", n_boot)
    except FileNotFoundError:
        return None


def adaptation_rows(r: Adaptation) -> list[dict]:
    """The page's table: each figure at the validation threshold and adapted, with intervals and the difference."""
    return [{"figure": m.capitalize(), "at the validation threshold": _cell(r.at_validation[m]),
             "adapted": _cell(r.adapted[m]),
             "adapted − validation threshold": f"{r.diff[m]['diff']:+.3f} [{r.diff[m]['low']:+.3f}, "
                                               f"{r.diff[m]['high']:+.3f}]"} for m in METRICS]


def _iv(d: dict, key: str = "value", sign: str = "") -> str:
    return f"{d[key]:{sign}.3f} [{d['low']:{sign}.3f}, {d['high']:{sign}.3f}]"


def row_text(r: Adaptation) -> str:
    """One model and method in a few lines of plain text."""
    head = (f"{r.key} ({r.method}; seeds {', '.join(map(str, r.seeds))}): threshold {r.threshold:.3f} "
            f"(validation) -> {r.adapted_threshold:.3f}")
    if r.priors:
        head += (f"; pneumonia prior: validation {r.priors['validation']:.3f}, EM estimate on test "
                 f"{r.priors['test_estimate']:.3f} (actual {r.priors['test_actual']:.3f}, not used)")
    lines = [head]
    for m in METRICS:
        lines.append(f"  {m:<12} at validation threshold {_iv(r.at_validation[m])}  adapted {_iv(r.adapted[m])}  "
                     f"adapted - validation {_iv(r.diff[m], 'diff', '+')}")
    lines.append(f"  helps ({HELPS}): {'yes' if r.helps else 'no'}")
    return "\n".join(lines)


def report_keys(root: str | Path, adabn_root: str | Path) -> list[tuple[str, str]]:
    """(key, method) of the report: Saerens for every binary seed, each architecture's seed ensemble and the task's
    ensemble; AdaBN for every model whose adapted test predictions are under ``adabn_root``."""
    out = []
    for arch in artifacts.archs_of(root, "binary"):
        seeds = artifacts.seeds_of(root, "binary", arch)
        out += [(f"binary/{arch}/seed{s}", "saerens") for s in seeds]
        if len(seeds) > 1:
            out.append((f"binary/{arch}/ensemble", "saerens"))
    if selection.ensemble_members(root, "binary"):
        out.append(("binary/ensemble", "saerens"))
    idx = artifacts.prediction_index(adabn_root)  # test files only
    idx = idx[(idx.task == "binary") & (idx.split == "test") & (idx.seed >= 0)]
    out += [(f"binary/{a}/seed{s}", "adabn") for a, s in sorted(set(zip(idx.arch, idx.seed.astype(int))))]
    return out


def _cell(d: dict) -> str:
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def _table(rows: list[Adaptation], priors: bool) -> list[str]:
    head = ["model", "seeds", "threshold: validation → adapted"]
    head += ["pneumonia prior: validation → EM estimate (actual)"] if priors else []
    for m in METRICS:
        head += [f"{m}: at validation threshold", f"{m}: adapted"]
    head += ["accuracy: adapted − validation", "helps"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        seeds = "best seed of each" if r.key == f"binary/{selection.ENSEMBLE}" else ", ".join(map(str, r.seeds))
        cells = [r.key, seeds, f"{r.threshold:.3f} → {r.adapted_threshold:.3f}"]
        if priors:
            p = r.priors
            cells.append(f"{p['validation']:.3f} → {p['test_estimate']:.3f} ({p['test_actual']:.3f})")
        for m in METRICS:
            cells += [_cell(r.at_validation[m]), _cell(r.adapted[m])]
        d = r.diff["accuracy"]
        cells += [f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", "yes" if r.helps else "no"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def findings(rows: list[Adaptation]) -> list[str]:
    """What the rows show, one sentence per method, from the numbers alone."""
    out = []
    for method, name in (("saerens", "Saerens prior adjustment"), ("adabn", "AdaBN")):
        mine = [r for r in rows if r.method == method]
        if not mine:
            out.append(f"{name}: not run (no adapted predictions).")
            continue
        helped = [r.key for r in mine if r.helps]
        hurt = [r.key for r in mine if r.diff["accuracy"]["high"] < 0]
        spec = [r.diff["specificity"]["diff"] for r in mine]
        sens = [r.diff["sensitivity"]["diff"] for r in mine]
        s = (f"{name}: test accuracy clearly higher at the adapted operating point for {len(helped)} of {len(mine)} "
             f"models and ensembles{' (' + ', '.join(helped) + ')' if helped else ''}, clearly lower for "
             f"{len(hurt)}; test specificity moved by {min(spec):+.3f} to {max(spec):+.3f}, sensitivity by "
             f"{min(sens):+.3f} to {max(sens):+.3f}.")
        best = max(mine, key=lambda r: r.adapted["accuracy"]["value"])
        if best.helps:
            k = KERMANY_2018
            top = max(rows, key=lambda r: r.at_validation["accuracy"]["value"])
            s += (f" The best adapted accuracy, {best.key}'s {_cell(best.adapted['accuracy'])} (specificity "
                  f"{_cell(best.adapted['specificity'])}, sensitivity {_cell(best.adapted['sensitivity'])}); "
                  f"without adaptation the best of these rows is {top.key}'s "
                  f"{_cell(top.at_validation['accuracy'])}; Kermany et al. reported accuracy {k['accuracy']:.3f}, "
                  f"specificity {k['specificity']:.3f} and sensitivity {k['sensitivity']:.3f}.")
        if method == "saerens":
            val, actual = mine[0].priors["validation"], mine[0].priors["test_actual"]
            est = [r.priors["test_estimate"] for r in mine]
            s += (f" The EM's pneumonia prior on the test images: {min(est):.3f} to {max(est):.3f}, against "
                  f"validation's {val:.3f} and the test set's actual {actual:.3f}.")
            if min(est) > val > actual:
                s += (" Every estimate moved the wrong way: the test NORMAL images score like pneumonia, which a "
                      "prior adjustment can only read as more pneumonia; its assumption (a change of class shares "
                      "with the images of each class unchanged) does not hold for this shift.")
        out.append(s)
    return out


def report_markdown(root: str | Path, adabn_root: str | Path, n_boot: int = 1000) -> str:
    """``experiments/adaptation/report.md``: the rules, both methods' tables and what they show."""
    rows = [evaluate(root, adabn_root, k, m, n_boot) for k, m in report_keys(root, adabn_root)]
    r0 = rows[0]
    best = max((r for r in rows if r.method == "saerens"), key=lambda r: r.at_validation["accuracy"]["value"])
    k = KERMANY_2018
    lines = [
        "# Label-free adaptation to the test images (issue 26, item 8)",
        "",
        "Generated by `python -m pneumo_core adapt --write-report` from the committed prediction files "
        "(`assets/predictions/binary`) and the AdaBN test predictions in `experiments/adaptation/adabn/` (written "
        "once by `python -m pneumo_core adapt --method adabn --infer $PNEUMO_DATA`). Do not edit by hand.",
        "",
        "**Question.** The test split is shifted from train/validation (NORMAL images score higher P(pneumonia); "
        "specificity at the validation threshold falls). Can the operating point follow that move using the test "
        "images only, never their labels?",
        "",
        "**Rules, fixed and committed before any test figure was computed** (`pneumo_core/evaluation/adaptation.py`, "
        f"commit {RULES_COMMIT}):",
        "",
        *[f"- {m}: {RULES[m]}." for m in RULES],
        f"- A method **helps** a model when {HELPS}.",
        "",
        f"Test: {r0.n_images} images of {r0.n_patients} patients; every interval is 95 %, {r0.n_boot} resamples of the "
        "test patients (`pneumo_core/evaluation/bootstrap.py`); differences are paired (the same resamples). The "
        "validation threshold is Youden's J on each model's validation predictions (for an ensemble, on the "
        "ensemble's). Test labels are read only to score the two operating points (and, in the prior column, to "
        "show the actual share next to the estimate).",
        "",
        f"Anchors: the best binary test accuracy at the validation threshold here, {best.key}'s, "
        f"{_cell(best.at_validation['accuracy'])} (the Saerens table's first columns); Kermany et al. (Cell 2018) "
        f"reported {k['accuracy']:.1%} accuracy, "
        f"{k['sensitivity']:.1%} sensitivity and {k['specificity']:.1%} specificity on this test set.",
        "",
        "## What the figures show",
        "",
        *[f"- {s}" for s in findings(rows)],
        "",
        "## Saerens et al. (2002): EM prior adjustment",
        "",
        *_table([r for r in rows if r.method == "saerens"], priors=True),
        "",
        "## AdaBN: BatchNorm statistics re-estimated on the test images",
        "",
    ]
    adabn = [r for r in rows if r.method == "adabn"]
    lines += _table(adabn, priors=False) if adabn else ["No AdaBN predictions under `experiments/adaptation/adabn`."]
    lines += ["", "Rows are the bundled checkpoints (`assets/models`), the only ones whose weights are in the "
              "repository; the custom CNN's is there too. One test set, one shuffle of the AdaBN batches (seed 0)."]
    return "\n".join(lines) + "\n"
