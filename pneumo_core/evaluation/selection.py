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
- **seed ensemble** of an architecture: the probability mean of all its seeds, a model the app runs where the
  folder holds a checkpoint of every seed (the bundle: those its spec's ``[bundle] all_seeds`` names);
- **first model** of a task (Predict's first row, the pages' first set): the decision function's pick among the
  task's runnable models, the default the bundled study's spec states (``[bundle] <task>_default``) kept unless
  another is clearly better on validation (:func:`default_decision`); without a stated default, the lowest
  validation log loss;
- **hierarchical** three-class model: stage A = the decision function's pick among the bundled binary models
  (default: the one the bundled study's spec states, ``decisions.stage_a_decision``), stage B = the best
  BACTERIA-vs-VIRUS model, deciding at its own validation threshold (below);
- **threshold** of a two-class model or ensemble: Youden's J on its own validation predictions.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from pneumo_core.data.tasks import TASKS, get_task
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation import artifacts, decisions
from pneumo_core.evaluation.decisions import selection_loss
from pneumo_core.evaluation.predictions import Predictions, ensemble
from pneumo_core.evaluation.thresholds import choose
from pneumo_core.models.keys import ENSEMBLE, HIERARCHICAL, ModelKey, seed_ensemble_key

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


def seed_ensemble_name(arch: str, n_seeds: int) -> str:
    """The results table's name of an architecture's seed ensemble: ``efficientnet_lite0 (3-seed ensemble)``."""
    return f"{arch} ({n_seeds}-seed ensemble)"


def seed_ensemble_set(root: str | Path, task: str, arch: str, split: str) -> Predictions:
    """The mean of every seed's probabilities of one architecture on one split (from its prediction files)."""
    seeds = artifacts.seeds_of(root, task, arch)
    sets = [artifacts.load_set(root, task, arch, s, split) for s in seeds]
    return ensemble(sets, seed_ensemble_name(arch, len(seeds)))


def checkpoint_key(root: str | Path, m: ModelKey) -> str:
    """The source key of the checkpoint that runs seed ``m.seed`` of ``m.arch``: the seed's own
    (``task/arch/seedN``) where the folder holds it, else the architecture's best (``task/arch``)."""
    return m.source_key if artifacts.has_checkpoint(root, m.task, m.arch, m.seed) else m.best.source_key


def seed_ensemble_members(root: str | Path, task: str, arch: str) -> list[ModelKey]:
    """Every seed of ``arch`` with prediction files, when the folder holds a checkpoint for each (the seed's own,
    or for the best seed the architecture's best): the results table's seed-ensemble row, runnable. Empty
    under two seeds or with a checkpoint missing."""
    seeds = artifacts.seeds_of(root, task, arch)
    if len(seeds) < 2 or not artifacts.has_checkpoint(root, task, arch):
        return []
    best = best_seed(root, task, arch)
    if all(s == best or artifacts.has_checkpoint(root, task, arch, s) for s in seeds):
        return [ModelKey(task, arch, s) for s in seeds]
    return []


@dataclass(frozen=True)
class ZooModel:
    """What a page or command shows as one model: its members (one, an ensemble's or a seed ensemble's), the
    source keys of the checkpoints it runs, and its threshold."""

    task: str
    name: str
    members: tuple[ModelKey, ...]
    threshold: float | None
    kind: str  # "model" | "ensemble" | "seeds"
    keys: tuple[str, ...] = ()  # the checkpoints it runs, one a member (source keys)

    @property
    def classes(self) -> tuple[str, ...]:
        return get_task(self.task).classes

    @property
    def choice(self) -> ModelKey:
        """Its key among the prediction sets (:func:`set_choices`)."""
        if self.kind == "ensemble":
            return ModelKey(self.task, ENSEMBLE)
        if self.kind == "seeds":
            return seed_ensemble_key(self.task, self.members[0].arch)
        return ModelKey(*self.members[0])


def zoo_models(root: str | Path, task: str) -> list[ZooModel]:
    """The task's models as the results table has them, each runnable from the folder's checkpoints: the ensemble,
    each architecture's best seed and each seed ensemble whose every seed has a checkpoint. The task's first
    model (:func:`default_decision`) first, then by validation log loss. Cached until the folder's files change:
    the Predict page asks on every rerun."""
    return list(_zoo_models(str(root), task, decisions.stated(f"{task}_default"), _stamp(root, task)))


@lru_cache(maxsize=64)
def _zoo_models(root: str, task: str, default: str | None, stamp: float) -> tuple[ZooModel, ...]:
    models = _runnable(root, task)
    first = _first_choice(root, task, default, stamp)
    return tuple(sorted(models, key=lambda z: z.choice != first))  # stable: the rest stay by validation log loss


@lru_cache(maxsize=64)
def _runnable_cached(root: str, task: str, stamp: float) -> tuple[ZooModel, ...]:
    scored = []
    members = ensemble_members(root, task)
    if members:
        val = ensemble_set(root, members, "val")
        scored.append((selection_loss(val), ZooModel(task, ensemble_name(members), tuple(members), threshold_on(val),
                                                     "ensemble", tuple(m.key for m in members))))
    for m in best_of_each(root, task, with_checkpoint=True):
        val = _val(root, m)
        scored.append((selection_loss(val),
                       ZooModel(task, f"{m.arch} (seed {m.seed})", (m,), threshold_on(val), "model", (m.key,))))
    for arch in artifacts.archs_of(root, task):
        seeds = seed_ensemble_members(root, task, arch)
        if seeds:
            val = seed_ensemble_set(root, task, arch, "val")
            scored.append((selection_loss(val), ZooModel(task, seed_ensemble_name(arch, len(seeds)), tuple(seeds),
                                                         threshold_on(val), "seeds",
                                                         tuple(checkpoint_key(root, m) for m in seeds))))
    return tuple(z for _, z in sorted(scored, key=lambda t: t[0]))


def _runnable(root: str, task: str) -> tuple[ZooModel, ...]:
    """The task's models the folder's checkpoints run, by validation log loss (:func:`zoo_models` orders them)."""
    return _runnable_cached(root, task, _stamp(root, task))


def _candidates(root: str, task: str) -> list[tuple[ModelKey, str, Predictions]]:
    """The task's runnable models with their validation predictions, by validation log loss; for three classes the
    hierarchical model too, when its stages' checkpoints and its prediction files are in the folder."""
    out = [(z.choice, z.name, load_choice(root, *z.choice, "val")) for z in _runnable(root, task)]
    plan = hierarchical_plan(root) if task == "three_class" else None
    hier = ModelKey(task, HIERARCHICAL)
    if plan is not None and hier in artifacts.combined_sets(root, task):
        out.append((hier, HIERARCHICAL, artifacts.load_set(root, *hier, "val")))
    return out


def default_decision(root: str | Path, task: str, n_boot: int = decisions.N_BOOT) -> decisions.Decision | None:
    """The task's first model by the one decision function: among the task's runnable models (:func:`zoo_models`'
    and, for three classes, the hierarchical model), the default the bundled study's spec states
    (``decisions.stated("<task>_default")``: ``ensemble``, ``hierarchical``, an architecture (its best seed) or
    ``<arch>_seeds``) kept unless another is clearly better on validation. None without that default among them
    or a challenger."""
    return _default_decision(str(root), task, decisions.stated(f"{task}_default"), n_boot, _stamp(root, task))


@lru_cache(maxsize=64)
def _default_decision(root: str, task: str, default: str | None, n_boot: int, stamp: float):
    cands = _candidates(root, task)
    first = next((c for c in cands if c[0].arch == default), None)
    if first is None or len(cands) < 2:
        return None
    order = [first, *(c for c in cands if c is not first)]
    words = task.replace("_", "-")
    d = decisions.decide(f"{words}: the app's first model (Predict's first {words} row, the pages' first {words} set)",
                         [(name, val) for _, name, val in order], n_boot,
                         note=f"default: {first[1]}, the incumbent first model, stated before this decision was run "
                              f"(the spec's [bundle] {task}_default)")
    return replace(d, extra={"choices": {name: key for key, name, _ in order}})


def model_decisions(root: str | Path, n_boot: int = decisions.N_BOOT) -> list[decisions.Decision]:
    """Each task's first-model decision (:func:`default_decision`) where the spec states a default: the decision
    log's last rows, after :func:`~pneumo_core.evaluation.decisions.decision_log`'s."""
    return [d for task in TASKS if (d := default_decision(root, task, n_boot)) is not None]


def _first_choice(root: str, task: str, default: str | None, stamp: float) -> ModelKey | None:
    d = _default_decision(root, task, default, decisions.N_BOOT, stamp)
    return None if d is None else d.extra["choices"][d.outcome]


def first_choice(root: str | Path, task: str) -> ModelKey | None:
    """The prediction-set key of the task's first model (:func:`default_decision`); None where no default is
    stated (then the lowest validation log loss comes first)."""
    return _first_choice(str(root), task, decisions.stated(f"{task}_default"), _stamp(root, task))


def runnable_keys(root: str | Path) -> set[str]:
    """Every checkpoint the folder's models run (source keys): the tasks' models and the hierarchical stages."""
    keys = {k for task in TASKS for z in zoo_models(root, task) for k in z.keys}
    plan = hierarchical_plan(root)
    return keys | ({plan.stage_a.key, plan.stage_b.key} if plan else set())


def set_choices(root: str | Path, tasks: tuple[str, ...]) -> list[ModelKey]:
    """Every prediction set a page can show: per task (in the order given) the task's first model
    (:func:`first_choice`), its models by validation log loss (the ensemble as ``ModelKey(task, ENSEMBLE)``, a seed
    ensemble as ``task/<arch>_seeds``, each architecture's best seed), the sets that combine models (the
    hierarchical model), then every other seed."""
    out: list[ModelKey] = []
    for task in tasks:
        part = [z.choice for z in zoo_models(root, task)]
        part += [k for k in artifacts.combined_sets(root, task) if k not in part]
        for arch in artifacts.archs_of(root, task):
            part += [k for s in artifacts.seeds_of(root, task, arch) if (k := ModelKey(task, arch, s)) not in part]
        first = first_choice(root, task)
        out += [first, *(k for k in part if k != first)] if first in part else part
    return out


def load_choice(root: str | Path, task: str, arch: str, seed: int | None, split: str) -> Predictions:
    """The prediction set of a choice of :func:`set_choices` on one split (``load_choice(root, *key, split)``)."""
    if arch == ENSEMBLE:
        return ensemble_set(root, ensemble_members(root, task), split)
    if (of := ModelKey(task, arch, seed).ensembled_arch) is not None:
        return seed_ensemble_set(root, task, of, split)
    return artifacts.load_set(root, task, arch, seed, split)
