"""One decision function for every choice between candidates (seed, run, resolution, distillation, stage model):
validation log loss, compared with a patient-clustered paired bootstrap; the **default** candidate, stated
before looking (the earlier seed, the run a later one was made from, the simpler recipe), is replaced only when
the 95 % interval of a challenger's difference in log loss excludes 0 (the challenger lower). Among several
challengers that clear it, the lowest validation log loss wins.

Pure functions over prediction tables (:class:`~pneumo_core.evaluation.predictions.Predictions`); validation
tables only. :func:`decision_log` re-applies the rule to the committed runs under ``assets/`` (issue 26).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation import artifacts
from pneumo_core.evaluation.bootstrap import cluster_weight_blocks, patient_groups
from pneumo_core.evaluation.predictions import Predictions, align
from pneumo_core.models.sources import checkpoint_relpath

RULE = ("lowest validation log loss, paired patient-clustered bootstrap ({n} resamples of the validation "
        "patients); the default ({default}) is replaced only when the 95 % interval of a challenger's "
        "difference excludes 0; among challengers that clear it, the lowest log loss")
N_BOOT = 1000
LEVEL = 0.95


@dataclass(frozen=True)
class Candidate:
    """One candidate's validation log loss with its 95 % interval (patients resampled)."""

    name: str
    val_loss: float
    low: float
    high: float
    diff: float = 0.0  # this candidate minus the default (0 for the default)
    diff_low: float = 0.0
    diff_high: float = 0.0

    @property
    def clears(self) -> bool:
        """Whether the difference's interval lies wholly below 0 (clearly lower log loss than the default)."""
        return self.diff_high < 0


@dataclass(frozen=True)
class Decision:
    """One choice: its candidates (the default first) with validation log loss and intervals, the
    differences to the default, the outcome and the rule in words."""

    question: str
    candidates: tuple[Candidate, ...]
    outcome: str
    rule: str
    n_val: int
    n_patients: int
    constraint: str = ""  # a product constraint that limits the candidates, stated as such
    note: str = ""  # e.g. what the bundle holds when it differs
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def default(self) -> str:
        return self.candidates[0].name

    @property
    def switched(self) -> bool:
        """Whether a challenger replaced the default."""
        return self.outcome != self.default

    @property
    def lowest(self) -> str:
        """The candidate with the lowest point estimate (what "lowest validation log loss" alone would pick)."""
        return min(self.candidates, key=lambda c: c.val_loss).name


def per_image_loss(val: Predictions, eps: float = 1e-12) -> np.ndarray:
    """Each image's negative log-likelihood of its true class (their mean is the log loss)."""
    p = np.clip(val.probs[np.arange(len(val.frame)), val.y_true], eps, 1.0)
    return -np.log(p)


def decide(question: str, candidates: Sequence[tuple[str, Predictions]], n_boot: int = N_BOOT, seed: int = 0,
           constraint: str = "", note: str = "") -> Decision:
    """The decision among ``candidates`` ((name, validation predictions), **the default first**), on the same
    validation images: each one's log loss and its 95 % interval, each challenger's paired difference to the
    default on the same resamples of the validation patients (:func:`~pneumo_core.evaluation.bootstrap.
    patient_groups`, :func:`~pneumo_core.evaluation.bootstrap.cluster_weight_blocks`). The default stays unless a
    challenger's interval of the difference lies wholly below 0."""
    if len(candidates) < 1:
        raise PredictionFileError(f"{question}: no candidates")
    names = [n for n, _ in candidates]
    if len(set(names)) != len(names):
        raise PredictionFileError(f"{question}: candidate names repeat: {names}")
    sets = align([p.labelled() for _, p in candidates])
    losses = np.stack([per_image_loss(s) for s in sets])  # (K, N)
    groups = patient_groups(sets[0].frame["image_id"])
    point = losses.mean(axis=1)
    boot = np.concatenate([(w @ losses.T) / w.sum(axis=1, keepdims=True)
                           for w in cluster_weight_blocks(groups, n_boot, seed)])  # (n_boot, K)
    q = [(1 - LEVEL) / 2 * 100, (1 + LEVEL) / 2 * 100]
    lo, hi = np.percentile(boot, q, axis=0)
    d = boot - boot[:, :1]
    dlo, dhi = np.percentile(d, q, axis=0)
    cands = tuple(Candidate(n, float(point[k]), float(lo[k]), float(hi[k]), float(point[k] - point[0]),
                            float(dlo[k]) if k else 0.0, float(dhi[k]) if k else 0.0) for k, n in enumerate(names))
    clear = [c for c in cands[1:] if c.clears]
    outcome = min(clear, key=lambda c: c.val_loss).name if clear else cands[0].name
    return Decision(question, cands, outcome, RULE.format(n=n_boot, default=f"default: {names[0]}"),
                    len(sets[0].frame), len(set(groups.tolist())), constraint, note)


# ---------------------------------------------------------------- the committed runs, re-decided

#: the zoo folders of assets/ (docs/results.md, "Where the files are")
ZOO128, PROGRESSIVE, DISTILL, DISTILL3 = "zoo128", "zoo224_progressive", "zoo224_distill", "zoo224_distill3"
CAM_CONSTRAINT = ("product constraint, not a validation result: the Compare pair (binary ResNet18 and "
                  "DenseNet121) runs at 224 px for its 7 x 7 CAM grid")
NOT_REBUNDLED = "not re-bundled: its checkpoint is not in the repository"


def _load(assets: Path, folder: str, task: str, arch: str, seed: int, split: str = "val") -> Predictions:
    return artifacts.load_set(assets / folder if folder else assets, task, arch, seed, split)


def _has(assets: Path, folder: str, task: str, arch: str, seed: int) -> bool:
    return seed in artifacts.seeds_of(assets / folder if folder else assets, task, arch)


def bundled_seed(assets: str | Path, task: str, arch: str) -> int | None:
    """The seed of the fp16 checkpoint ``assets`` bundles for ``task/arch`` (read from its metadata only), None
    when the folder bundles none."""
    import json

    from safetensors import safe_open

    f = Path(assets) / "models" / checkpoint_relpath(task, arch, suffix=".safetensors")
    if not f.is_file():
        return None
    try:
        with safe_open(str(f), framework="pt") as h:
            seed = json.loads((h.metadata() or {}).get("pneumo", "{}")).get("seed")
    except Exception:  # noqa: BLE001 - an unreadable file is named where it is loaded; here it pins nothing
        return None
    return None if seed is None else int(seed)


def seed_decision(root: str | Path, task: str, arch: str, n_boot: int = N_BOOT) -> Decision | None:
    """The rule over an architecture's seeds in ``root`` (default: the lowest seed, the first trained)."""
    seeds = artifacts.seeds_of(root, task, arch)
    if not seeds:
        return None
    return decide(f"{task} {arch}: seed", [(f"seed {s}", _load(Path(root), "", task, arch, s)) for s in seeds],
                  n_boot)


def decided_seed(d: Decision) -> int:
    """The seed a :func:`seed_decision` chose."""
    return int(d.outcome.removeprefix("seed "))


def decision_log(assets: str | Path, n_boot: int = N_BOOT) -> list[Decision]:
    """The rule re-applied to the committed runs under ``assets`` (prediction files only, validation only):
    per architecture and seed, 112/128 px -> 224 px and progressive -> distilled; the ensemble teacher; then per
    task and architecture, the seed among the bundled seeds' candidates (default: seed 0); each decision says
    what the bundle holds where the rule picks another run."""
    assets = Path(assets)
    out: list[Decision] = []
    # 1. resolution: the low-resolution run (default, the one the 224-px run was fine-tuned from) vs 224 px
    for task, arch, seeds, low in (("binary", "resnet18", (0, 1, 2), 128), ("binary", "densenet121", (0, 1), 112),
                                   ("three_class", "densenet121", (0,), 112),
                                   ("bacteria_virus", "densenet121", (0,), 112)):
        for s in seeds:
            hi_folder = PROGRESSIVE if task == "binary" else ""
            if not (_has(assets, ZOO128, task, arch, s) and _has(assets, hi_folder, task, arch, s)):
                continue
            hi_name = (f"224 px (assets/{PROGRESSIVE})" if hi_folder else "224 px (assets/predictions)")
            d = decide(f"{task} {arch} seed {s}: resolution", [
                (f"{low} px (assets/{ZOO128})", _load(assets, ZOO128, task, arch, s)),
                (hi_name, _load(assets, hi_folder, task, arch, s))], n_boot,
                constraint=CAM_CONSTRAINT if task == "binary" else "")
            if task == "binary":
                d = replace(d, note="224 px is used (the constraint), the distillation decision below starts there")
            elif d.outcome != hi_name and bundled_seed(assets, task, arch) == s:
                d = replace(d, note=f"bundled: the 224-px run; the rule keeps the {low}-px run, {NOT_REBUNDLED}")
            out.append(d)
    # 2. distillation: the progressive run (default, the simpler recipe) vs distilled from Lite0 seed 2 /
    #    from the three-seed Lite0 ensemble; then the seed among each seed's picked run (default seed 0)
    for arch, seeds in (("resnet18", (0, 1, 2)), ("densenet121", (0, 1))):
        picked = []
        for s in seeds:
            cands = [(f"224 px progressive (assets/{PROGRESSIVE})", _load(assets, PROGRESSIVE, "binary", arch, s))]
            for folder, what in ((DISTILL, "distilled, teacher Lite0 seed 2"),
                                 (DISTILL3, "distilled, teacher Lite0 x3")):
                if _has(assets, folder, "binary", arch, s):
                    cands.append((f"224 px {what} (assets/{folder})", _load(assets, folder, "binary", arch, s)))
            d = decide(f"binary {arch} seed {s}: distillation", cands, n_boot)
            here = _load(assets, "", "binary", arch, s)
            committed = [n for n, p in cands if _same(p, here)]
            if committed and committed[0] != d.outcome:
                d = replace(d, note=f"assets/predictions holds {committed[0]}: {NOT_REBUNDLED}" if
                            bundled_seed(assets, "binary", arch) == s else
                            f"assets/predictions holds {committed[0]} (seed not bundled; its files would change)")
            out.append(d)
            picked.append((f"seed {s}: {d.outcome}", dict(cands)[d.outcome]))
        d = decide(f"binary {arch}: seed (each seed's run as the rule picks it)", picked, n_boot)
        bundled = bundled_seed(assets, "binary", arch)
        if bundled is not None:
            here = _load(assets, "", "binary", arch, bundled)
            _, chosen = picked[[n for n, _ in picked].index(d.outcome)]
            same = _same(chosen, here)
            d = replace(d, note=f"bundled: seed {bundled}" + ("" if same else
                        f" (the run in assets/predictions); the rule picks {d.outcome}, {NOT_REBUNDLED}"),
                        extra={"bundled_seed": bundled, "rule_seed": int(d.outcome.split(":")[0][5:])})
        out.append(d)
    # 3. the seed of each architecture (default: seed 0, the first trained), over the committed seeds
    for task in ("binary", "three_class", "bacteria_virus"):
        for arch in artifacts.archs_of(assets, task):
            if len(artifacts.seeds_of(assets, task, arch)) < 2:
                continue
            out.append(_with_bundle(seed_decision(assets, task, arch, n_boot), assets, task, arch))
    return out


def _same(a: Predictions, b: Predictions) -> bool:
    """Whether two prediction sets are the same run's (equal probabilities on the same images)."""
    try:
        x, y = align([a, b])
    except PredictionFileError:
        return False
    return bool(np.allclose(x.probs, y.probs, atol=1e-6))


def _with_bundle(d: Decision, assets: Path, task: str, arch: str) -> Decision:
    bundled = bundled_seed(assets, task, arch)
    if bundled is None:
        note = "not bundled (assets/models)"
    elif d.outcome == f"seed {bundled}":
        note = f"bundled: seed {bundled}"
    else:
        note = f"bundled: seed {bundled}; the rule picks {d.outcome}, {NOT_REBUNDLED}"
    if task == "binary" and arch in ("resnet18", "densenet121"):
        note += "; over the runs assets/predictions holds (see the row above for the rule's runs)"
    return replace(d, note=note, extra={"bundled_seed": bundled, "rule_seed": decided_seed(d)})


def _fmt(v: float, lo: float, hi: float, sign: str = "") -> str:
    return f"{v:{sign}.4f} [{lo:{sign}.4f}, {hi:{sign}.4f}]"


def decisions_frame(decisions: Sequence[Decision]) -> pd.DataFrame:
    """One row per candidate of each decision (the CSV form of the log)."""
    rows = []
    for d in decisions:
        for c in d.candidates:
            rows.append({"decision": d.question, "candidate": c.name, "default": c.name == d.default,
                         "val_log_loss": c.val_loss, "low": c.low, "high": c.high,
                         "diff_vs_default": c.diff, "diff_low": c.diff_low, "diff_high": c.diff_high,
                         "chosen": c.name == d.outcome, "lowest_point": c.name == d.lowest,
                         "n_val": d.n_val, "n_patients": d.n_patients, "constraint": d.constraint, "note": d.note})
    return pd.DataFrame(rows)


def decisions_markdown(decisions: Sequence[Decision]) -> str:
    """The decision log in Markdown: the rule, then one table row per decision."""
    if not decisions:
        return "No decisions (no committed runs to compare).\n"
    d0 = decisions[0]
    lines = [
        "# Decision log",
        "",
        "Generated by `python -m pneumo_core decisions --write` from the committed validation prediction files "
        "only (no test file is read). Do not edit by hand.",
        "",
        f"**The rule** (`pneumo_core/evaluation/decisions.py`, `decide`): {RULE.format(n=N_BOOT, default='default')}. "
        "The default of each decision is fixed in advance: the run a later one was made from (the low-resolution "
        "run before 224 px; the progressive run before distillation), seed 0 among seeds. Validation: "
        f"{d0.n_val} images of {d0.n_patients} patients (binary). Log loss: mean negative log-likelihood of the "
        "true class; differences are challenger − default, on the same resamples.",
        "",
        "| decision | candidates: validation log loss [95 %] (first: the default) | challenger − default [95 %] | "
        "outcome | lowest point estimate | note |",
        "|---|---|---|---|---|---|",
    ]
    for d in decisions:
        cands = "<br>".join(f"{c.name}: {_fmt(c.val_loss, c.low, c.high)}" for c in d.candidates)
        diffs = "<br>".join(f"{c.name}: {_fmt(c.diff, c.diff_low, c.diff_high, '+')}" for c in d.candidates[1:])
        outcome = (f"**{d.outcome}** (switch)" if d.switched else f"{d.outcome} (default kept)")
        note = "; ".join(x for x in (d.constraint, d.note) if x)
        lines.append(f"| {d.question} | {cands} | {diffs} | {outcome} | {d.lowest} | {note} |")
    return "\n".join(lines) + "\n"
