"""One decision function for every choice between candidates (seed, run, resolution, distillation, stage model):
validation log loss, compared with a patient-clustered paired bootstrap; the **default** candidate, stated
before looking (the earlier seed, the run a later one was made from, the simpler recipe), is replaced only when
the 95 % interval of a challenger's difference in log loss excludes 0 (the challenger lower). Among several
challengers that clear it, the lowest validation log loss wins.

Pure functions over prediction tables (:class:`~pneumo_core.evaluation.predictions.Predictions`); validation
tables only. :func:`answer` decides a study's question (its spec's ``[[pick]]``, ``experiments/*/study.toml``);
:func:`decision_log` re-applies the rule to the committed runs (issue 26).
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pneumo_core.data.tasks import TASKS
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation import artifacts
from pneumo_core.evaluation.bootstrap import cluster_weight_blocks, patient_groups
from pneumo_core.evaluation.predictions import Predictions, align
from pneumo_core.files import DEMO_ZOO
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


def selection_loss(val: Predictions) -> float:
    """Validation log loss (the mean of :func:`per_image_loss`)."""
    return float(per_image_loss(val.labelled()).mean())


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


# ---------------------------------------------------------------- a study's choices, re-decided

NOT_REBUNDLED = "not re-bundled: its checkpoint is not in the repository"


@dataclass(frozen=True)
class Runs:
    """One candidate of a study's choice: a folder of runs (``train``'s ``--out``) and its name in the log."""

    name: str
    root: Path


@dataclass(frozen=True)
class Question:
    """A study's choice between folders of runs of one task and architecture (the default first), made seed by
    seed over ``seeds``; with ``then_seed``, then the seed among each seed's picked run. ``constraint``: a product
    constraint that imposes the last candidate whatever validation says, ``note`` saying so in the log."""

    what: str
    task: str
    arch: str
    candidates: tuple[Runs, ...]
    seeds: tuple[int, ...]
    then_seed: bool = True
    constraint: str = ""
    note: str = ""


@dataclass(frozen=True)
class Picked:
    """What a :class:`Question` picked: each seed's run (its folder) and the seed among them (None: no runs)."""

    task: str
    arch: str
    runs: dict[int, Path]
    seed: int | None


def _load(root: Path, task: str, arch: str, seed: int, split: str = "val") -> Predictions:
    return artifacts.load_set(root, task, arch, seed, split)


def _has(root: Path, task: str, arch: str, seed: int) -> bool:
    return seed in artifacts.seeds_of(root, task, arch)


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
    return decide(f"{task} {arch}: seed", [(f"seed {s}", _load(Path(root), task, arch, s)) for s in seeds],
                  n_boot)


def decided_seed(d: Decision) -> int:
    """The seed a :func:`seed_decision` chose (its outcome ``seed N``, or ``seed N: run`` among runs)."""
    return int(d.outcome.split(":")[0].removeprefix("seed "))


#: the architectures the bundled study's spec names in advance (``[bundle]`` of ``experiments/demo_zoo/study.toml``):
#: the hierarchical model's stage A by default, and the seed ensemble ``compare --ensembles`` sets against the
#: binary ensemble
STATED = ("stage_a_default", "seed_ensemble")
#: each task's first model, stated in advance (``selection.default_decision``): ``ensemble``, ``hierarchical``, an
#: architecture or ``<arch>_seeds``
STATED_DEFAULTS = tuple(f"{t}_default" for t in TASKS)


def stated(choice: str, spec: str | Path = DEMO_ZOO) -> str | None:
    """What the bundled study's spec states for ``choice`` (one of :data:`STATED` or :data:`STATED_DEFAULTS`), None
    without the spec or the field. The spec is checked where studies are read
    (:func:`pneumo_core.training.study.load_study`)."""
    try:
        value = tomllib.loads(Path(spec).read_text()).get("bundle", {}).get(choice)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, AttributeError):
        return None
    return value if isinstance(value, str) else None


def stage_a_decision(assets: str | Path, n_boot: int = N_BOOT, default: str | None = None) -> Decision | None:
    """The hierarchical model's stage A among the bundled binary models, each at its bundled seed (``default``:
    the architecture the bundled study's spec states, ``stated("stage_a_default")``); None without that default or
    a challenger."""
    assets = Path(assets)
    default = default or stated("stage_a_default")
    seeds = {a: bundled_seed(assets, "binary", a) for a in artifacts.archs_of(assets, "binary")}
    archs = [a for a, s in seeds.items() if s is not None and s in artifacts.seeds_of(assets, "binary", a)]
    if default not in archs or len(archs) < 2:
        return None
    order = [default, *(a for a in archs if a != default)]
    return decide("three-class hierarchical: stage A (the bundled binary models)",
                  [(f"{a} seed {seeds[a]}", _load(assets, "binary", a, seeds[a])) for a in order], n_boot,
                  note="default: the incumbent stage A, stated before this decision was run; "
                       "selection.best_model takes the outcome (stage A, Predict's and the Lesson's first model)")


def stage_a_arch(d: Decision) -> str:
    """The architecture a :func:`stage_a_decision` chose."""
    return d.outcome.split(" seed ")[0]


def _held(assets: Path, q: Question, seed: int, cands: Sequence[tuple[str, Predictions]]) -> str | None:
    """The candidate whose run of ``seed`` ``assets/predictions`` holds (:func:`_same`), None when none is."""
    if not _has(assets, q.task, q.arch, seed):
        return None
    here = _load(assets, q.task, q.arch, seed)
    return next((n for n, p in cands if _same(p, here)), None)


def _committed_note(assets: Path, q: Question, seed: int, cands: list[tuple[str, Predictions]], outcome: str) -> str:
    """Which candidate's run of this seed ``assets/predictions`` holds, where it is bundled or not the rule's."""
    held = _held(assets, q, seed, cands)
    bundled = bundled_seed(assets, q.task, q.arch) == seed
    if held is None:
        return ""
    if held == outcome:
        return f"bundled: {outcome}" if bundled else ""
    if bundled:
        return f"assets/predictions holds {held}: {NOT_REBUNDLED}"
    return f"assets/predictions holds {held} (seed not bundled; its files would change)"


def answer(q: Question, assets: str | Path, n_boot: int = N_BOOT) -> tuple[list[Decision], Picked]:
    """The rule applied to one study question on validation files only: a decision per seed where two or more
    candidates hold that seed's run (a constraint's candidate is then used), then (``then_seed``, two or more
    seeds) the seed among each seed's picked run. Notes say where ``assets`` holds another run."""
    assets = Path(assets)
    rows: list[Decision] = []
    picked: dict[int, tuple[str, Predictions, Path]] = {}
    seed_sets: dict[int, list[tuple[str, Predictions]]] = {}
    for s in q.seeds:
        cands = [(c.name, c.root) for c in q.candidates if _has(c.root, q.task, q.arch, s)]
        if not cands or cands[0][1] != q.candidates[0].root:
            continue  # no default run of this seed: nothing to decide from
        sets = [(n, _load(root, q.task, q.arch, s)) for n, root in cands]
        seed_sets[s] = sets
        if len(cands) == 1:
            picked[s] = (cands[0][0], sets[0][1], cands[0][1])
            continue
        d = decide(f"{q.task} {q.arch} seed {s}: {q.what}", sets, n_boot, constraint=q.constraint)
        if q.constraint:
            d = replace(d, note=q.note)
            used = len(cands) - 1  # the constraint's candidate: the last, the run the study goes on from
        else:
            d = replace(d, note=_committed_note(assets, q, s, sets, d.outcome))
            used = [n for n, _ in cands].index(d.outcome)
        rows.append(d)
        picked[s] = (cands[used][0], sets[used][1], cands[used][1])
    runs = {s: root for s, (_, _, root) in picked.items()}
    if not picked:
        return rows, Picked(q.task, q.arch, runs, None)
    if len(picked) == 1 or not q.then_seed:
        return rows, Picked(q.task, q.arch, runs, min(picked))
    many = len(q.candidates) > 1
    try:
        d = decide(f"{q.task} {q.arch}: seed" + (" (each seed's run as the rule picks it)" if many else ""),
                   [(f"seed {s}: {n}" if many else f"seed {s}", p) for s, (n, p, _) in picked.items()], n_boot)
    except PredictionFileError:  # seeds validated on different images (runs limited to a few): no pairing,
        seed = min(picked, key=lambda s: (selection_loss(picked[s][1]), s))  # the lowest log loss, as selection
        return rows, Picked(q.task, q.arch, runs, seed)
    seed = decided_seed(d)
    bundled = bundled_seed(assets, q.task, q.arch)
    if bundled is not None and _has(assets, q.task, q.arch, bundled):
        same = bundled == seed and _same(picked[seed][1], _load(assets, q.task, q.arch, bundled))
        if same:
            note = f"bundled: seed {bundled}"
        elif bundled == seed:
            other = _held(assets, q, bundled, seed_sets.get(bundled, []))
            held = (f"another candidate's run, {other}" if other
                    else "another run of it (assets/runs names its origin)")
            note = f"bundled: seed {bundled}, {held}; the rule's run, {d.outcome}, {NOT_REBUNDLED}"
        else:
            note = (f"bundled: seed {bundled} (the run in assets/predictions); the rule picks {d.outcome}, "
                    f"{NOT_REBUNDLED}")
        d = replace(d, note=note, extra={"bundled_seed": bundled, "rule_seed": seed})
    rows.append(d)
    return rows, Picked(q.task, q.arch, runs, seed)


def decision_log(assets: str | Path, questions: Sequence[Question] = (), n_boot: int = N_BOOT,
                 seed_rows: bool = True) -> list[Decision]:
    """The rule re-applied to committed runs (prediction files only, validation only): each study question
    (:func:`answer`; the studies' specs state them, ``experiments/*/study.toml``), then (``seed_rows``) per task
    and architecture the seed among the seeds ``assets/predictions`` holds (default: seed 0); each decision says
    what the bundle holds where the rule picks another run."""
    assets = Path(assets)
    out: list[Decision] = []
    studied = set()
    for q in questions:
        rows, _ = answer(q, assets, n_boot)
        out += rows
        if q.then_seed and len(q.candidates) > 1:
            studied.add((q.task, q.arch))
    if not seed_rows:
        return out
    for task in TASKS:
        for arch in artifacts.archs_of(assets, task):
            if len(artifacts.seeds_of(assets, task, arch)) < 2:
                continue
            out.append(_with_bundle(seed_decision(assets, task, arch, n_boot), assets, task, arch,
                                    (task, arch) in studied))
    stage_a = stage_a_decision(assets, n_boot)
    return out + ([stage_a] if stage_a else [])


#: the most two prediction files of one run's weights differ by: the training loop's (fp32 weights, its uint8 image
#: cache) and the bundle's (fp16-rounded weights, re-predicted in fp32) differ by up to 4.9e-3; any two distinct runs
#: of experiments/ by 0.26 or more
SAME_RUN_ATOL = 0.01


def _same(a: Predictions, b: Predictions) -> bool:
    """Whether two prediction sets are the same run's (probabilities within :data:`SAME_RUN_ATOL` on the same
    images)."""
    try:
        x, y = align([a, b])
    except PredictionFileError:
        return False
    return bool(np.allclose(x.probs, y.probs, rtol=0, atol=SAME_RUN_ATOL))


def _with_bundle(d: Decision, assets: Path, task: str, arch: str, studied: bool = False) -> Decision:
    bundled = bundled_seed(assets, task, arch)
    if bundled is None:
        note = "not bundled (assets/models)"
    elif d.outcome == f"seed {bundled}":
        note = f"bundled: seed {bundled}"
    else:
        note = f"bundled: seed {bundled}; the rule picks {d.outcome}, {NOT_REBUNDLED}"
    if studied:
        note += "; over the runs assets/predictions holds (the study's seed row above is over its own runs)"
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
