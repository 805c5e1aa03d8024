"""The zoo's rules, in one place. Training, bundling, ``results``, ``report``, ``predict``, ``evaluate``
and every page ask this module; nothing else decides.

Every rule reads **validation** prediction files only (the fp32 files under ``predictions/``), never a
test split:

- **best seed** of an architecture: the one decision function (:func:`pneumo_core.evaluation.decisions.decide`):
  validation log loss (a proper score; validation AUROC is near 1 for most models here and separates them
  poorly) compared by a patient-clustered paired bootstrap; the default, the lowest seed, is replaced only when
  the 95 % interval of another seed's difference excludes 0. A folder that bundles a checkpoint (``assets/``)
  answers with the bundled checkpoint's seed: the bundle changes only by bundling again, and the decision log
  (``python -m pneumo_core decisions``) names every place where the rule picks another run;
- **best model** of a task: the architecture whose best seed has the lowest validation log loss;
- **ensemble** of a task: the probability mean of the best seed of every architecture whose best
  checkpoint the folder holds (so the app can run every member);
- **hierarchical** three-class model: stage A = the decision function's pick among the bundled binary models
  (default: the one the bundled study's spec states, ``decisions.stage_a_decision``), stage B = the best
  BACTERIA-vs-VIRUS model, deciding at its own validation threshold (below);
- **threshold** of a two-class model or ensemble: Youden's J on its own validation predictions.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pneumo_core.data.tasks import get_task
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation import artifacts, decisions
from pneumo_core.evaluation.decisions import selection_loss
from pneumo_core.evaluation.predictions import Predictions, ensemble
from pneumo_core.evaluation.thresholds import choose
from pneumo_core.models.keys import ENSEMBLE, ModelKey

SEED_RULE = "validation log loss, the default seed kept unless clearly beaten"
THRESHOLD_RULE = "youden"
#: the threshold rule in words: every page, command and document that states the rule says it with this
THRESHOLD_RULE_TEXT = "Youden's J on validation"


def decision_rule(threshold: float, positive: str) -> str:
    """How a two-class set decides, in words: "P(PNEUMONIA) ≥ 0.509 (Youden's J on validation)"."""
    return f"P({positive}) ≥ {threshold:.3f} ({THRESHOLD_RULE_TEXT})"


class Member(ModelKey):
    """A :class:`~pneumo_core.models.keys.ModelKey` (task, arch, seed) whose seed is its architecture's best: the
    folder's best checkpoint is its checkpoint (an ensemble's member, a hierarchical stage, the best model)."""

    __slots__ = ()

    @property
    def key(self) -> str:
        """The source key of the architecture's best checkpoint, e.g. ``binary/resnet18``."""
        return self.best.source_key


def _val(root: str | Path, m: Member) -> Predictions:
    return artifacts.load_set(root, m.task, m.arch, m.seed, "val")


@lru_cache(maxsize=256)
def _best_seed(root: str, task: str, arch: str, stamp: float) -> int | None:
    seeds = artifacts.seeds_of(root, task, arch)
    if not seeds:
        return None
    bundled = decisions.bundled_seed(root, task, arch)
    return bundled if bundled in seeds else rule_seed(root, task, arch)


def rule_seed(root: str | Path, task: str, arch: str) -> int | None:
    """The decision rule's seed among the architecture's seeds (whatever the folder bundles). Seeds validated on
    different images (runs limited to a few images each) cannot be compared pair by pair: then the lowest
    validation log loss."""
    try:
        d = decisions.seed_decision(root, task, arch)
    except PredictionFileError:
        seeds = artifacts.seeds_of(root, task, arch)
        return min(seeds, key=lambda s: (selection_loss(_val(root, Member(task, arch, s))), s)) if seeds else None
    return None if d is None else decisions.decided_seed(d)


def _stamp(root: str | Path, task: str) -> float:
    """Changes when the task's validation files or the folder's checkpoints change (keeps the caches honest)."""
    root = Path(root)
    files = [*root.glob(f"predictions/{task}/*_val.csv"), *root.glob("checkpoints/*/*"),
             *root.glob("models/checkpoints/*/*")]
    return max((f.stat().st_mtime_ns for f in files), default=0) + len(files)


def best_seed(root: str | Path, task: str, arch: str) -> int | None:
    """The architecture's seed the folder's models use: the bundled checkpoint's where the folder bundles one,
    else the decision rule's (:func:`rule_seed`)."""
    return _best_seed(str(root), task, arch, _stamp(root, task))


def best_of_each(root: str | Path, task: str, with_checkpoint: bool = False) -> list[Member]:
    """The best seed of every architecture of a task (only those whose checkpoint the folder holds)."""
    out = []
    for arch in artifacts.archs_of(root, task):
        if with_checkpoint and not artifacts.has_checkpoint(root, task, arch):
            continue
        seed = best_seed(root, task, arch)
        if seed is not None:
            out.append(Member(task, arch, seed))
    return out


def best_model(root: str | Path, task: str, with_checkpoint: bool = False) -> Member | None:
    """The task's best single model. Among the bundled binary models (``with_checkpoint``): the one decision
    function's pick, the architecture the bundled study's spec states (``decisions.stated("stage_a_default")``)
    kept unless another is clearly better on validation (:func:`~pneumo_core.evaluation.decisions.
    stage_a_decision`); it is Predict's and the Lesson's first model and the hierarchical model's stage A.
    Otherwise (no bundle, no stated default, other tasks): the lowest validation log loss over the architectures'
    best seeds."""
    if task == "binary" and with_checkpoint:
        decided = _decided_binary(str(root), decisions.stated("stage_a_default"), _stamp(root, "binary"))
        if decided is not None:
            return decided
    cands = best_of_each(root, task, with_checkpoint)
    return min(cands, key=lambda m: (selection_loss(_val(root, m)), m.arch)) if cands else None


@lru_cache(maxsize=64)
def _decided_binary(root: str, default: str | None, stamp: float) -> Member | None:
    d = decisions.stage_a_decision(root, default=default) if default else None
    if d is None:
        return None
    arch = decisions.stage_a_arch(d)
    return Member("binary", arch, best_seed(root, "binary", arch))


def best_first(keys: list[str], best: str | None) -> list[str]:
    """``keys`` with ``best`` (the rule's best model's key) moved to the front; unchanged when it is absent."""
    return [best, *(k for k in keys if k != best)] if best in keys else list(keys)


def ensemble_members(root: str | Path, task: str) -> list[Member]:
    """The members of the task's ensemble: the best seed of each architecture with a checkpoint in the
    folder (every architecture, in a folder without checkpoints). Empty under two members."""
    members = best_of_each(root, task, with_checkpoint=True) or best_of_each(root, task)
    return members if len(members) >= 2 else []


def ensemble_name(members: list[Member]) -> str:
    return "ensemble(" + "+".join(m.arch for m in members) + ")"


def ensemble_set(root: str | Path, members: list[Member], split: str) -> Predictions:
    """The members' probability mean on one split (from their prediction files)."""
    sets = [artifacts.load_set(root, m.task, m.arch, m.seed, split) for m in members]
    return ensemble(sets, ensemble_name(members))


@dataclass(frozen=True)
class HierarchicalPlan:
    stage_a: Member  # binary
    stage_b: Member  # bacteria_virus
    threshold_b: float = 0.5  # stage B decides BACTERIA vs VIRUS here: Youden's J on its validation predictions

    @property
    def description(self) -> str:
        return (f"stage A binary {self.stage_a.arch} seed {self.stage_a.seed} x stage B bacteria_virus "
                f"{self.stage_b.arch} seed {self.stage_b.seed} ({SEED_RULE}; stage B decides at its validation "
                f"threshold {self.threshold_b:.3f})")


def hierarchical_plan(root: str | Path, with_checkpoint: bool = True) -> HierarchicalPlan | None:
    """Stage A = the best binary model (:func:`best_model`: among the bundled ones, the decision function's pick,
    default the architecture the bundled study's spec states), stage B = the best BACTERIA-vs-VIRUS model
    (validation log loss), stage B deciding at its own threshold (Youden's J on its validation predictions, what its
    checkpoint stores)."""
    return _hierarchical_plan(str(root), with_checkpoint, decisions.stated("stage_a_default"),
                              _stamp(root, "binary") + _stamp(root, "bacteria_virus"))


@lru_cache(maxsize=64)
def _hierarchical_plan(root: str, with_checkpoint: bool, default: str | None, stamp: float) -> HierarchicalPlan | None:
    # ``default`` and ``stamp`` key the cache only: best_model reads the stated default itself
    a = best_model(root, "binary", with_checkpoint)
    b = best_model(root, "bacteria_virus", with_checkpoint)
    if not (a and b):
        return None
    t = model_threshold(root, b)
    return HierarchicalPlan(a, b, 0.5 if t is None else float(t))


def threshold_on(val: Predictions) -> float | None:
    """The decision threshold on P(classes[1]): Youden's J on these validation predictions; None for
    three-class sets (they decide by the largest probability)."""
    if not val.is_binary:
        return None
    return pneumonia_threshold_on(val)


def pneumonia_threshold_on(val: Predictions) -> float:
    """Youden's J on P(pneumonia) of any set with a binary view (a three-class set: BACTERIA + VIRUS);
    equals :func:`threshold_on` for a binary set. A :class:`PredictionFileError` naming the file when the
    set holds one class only (no threshold separates anything there)."""
    try:
        return choose(val.y_binary, val.p_positive, THRESHOLD_RULE).threshold
    except ValueError as exc:
        raise PredictionFileError(f"{val.source}: {exc}") from None


def model_threshold(root: str | Path, m: Member) -> float | None:
    return threshold_on(_val(root, m))


def ensemble_threshold(root: str | Path, members: list[Member]) -> float | None:
    """Chosen on the ensemble's own validation predictions, not from its members' thresholds."""
    return threshold_on(ensemble_set(root, members, "val"))


@dataclass(frozen=True)
class ZooModel:
    """What a page or command shows as one model: its members (one, or an ensemble's) and threshold."""

    task: str
    name: str
    members: tuple[Member, ...]
    threshold: float | None
    kind: str  # "model" | "ensemble"

    @property
    def classes(self) -> tuple[str, ...]:
        return get_task(self.task).classes


def zoo_models(root: str | Path, task: str) -> list[ZooModel]:
    """The task's models as the results table has them, best first (validation log loss): the ensemble
    and each architecture's best seed (those with a checkpoint in the folder). Cached until the folder's
    files change: the Predict page asks on every rerun."""
    return list(_zoo_models(str(root), task, _stamp(root, task)))


@lru_cache(maxsize=64)
def _zoo_models(root: str, task: str, stamp: float) -> tuple[ZooModel, ...]:
    scored = []
    members = ensemble_members(root, task)
    if members:
        val = ensemble_set(root, members, "val")
        scored.append((selection_loss(val), ZooModel(task, ensemble_name(members), tuple(members), threshold_on(val),
                                               "ensemble")))
    for m in best_of_each(root, task, with_checkpoint=True):
        val = _val(root, m)
        scored.append((selection_loss(val),
                       ZooModel(task, f"{m.arch} (seed {m.seed})", (m,), threshold_on(val), "model")))
    return tuple(z for _, z in sorted(scored, key=lambda t: t[0]))


def set_choices(root: str | Path, tasks: tuple[str, ...]) -> list[ModelKey]:
    """Every prediction set a page can show: per task (in the order given) the task's models best first by
    validation log loss (the ensemble as ``ModelKey(task, ENSEMBLE)``, each architecture's best seed), the
    sets that combine models (the hierarchical model), then every other seed."""
    out: list[ModelKey] = []
    for task in tasks:
        for z in zoo_models(root, task):
            out.append(ModelKey(task, ENSEMBLE) if z.kind == "ensemble" else ModelKey(*z.members[0]))
        out += artifacts.combined_sets(root, task)
        for arch in artifacts.archs_of(root, task):
            out += [k for s in artifacts.seeds_of(root, task, arch) if (k := ModelKey(task, arch, s)) not in out]
    return out


def load_choice(root: str | Path, task: str, arch: str, seed: int | None, split: str) -> Predictions:
    """The prediction set of a choice of :func:`set_choices` on one split (``load_choice(root, *key, split)``)."""
    if arch == ENSEMBLE:
        return ensemble_set(root, ensemble_members(root, task), split)
    return artifacts.load_set(root, task, arch, seed, split)
