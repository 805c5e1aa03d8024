"""A study as a spec: one TOML file (``experiments/<study>/study.toml``) names its stages (task, architecture,
seeds, initialisation, teacher and the :class:`~pneumo_core.training.loop.TrainConfig` fields of each), the
choices between their runs (``[[pick]]``, made by :mod:`pneumo_core.evaluation.decisions`' one rule on validation
files only) and how the picked runs are bundled. ``python -m pneumo_core zoo train|pick|bundle SPEC`` runs it.

A stage's ``init``: ``scratch``, ``imagenet``, ``stage:NAME`` (that earlier stage's run of the same seed), a Hub
file ``hf://OWNER/REPO@REVISION/PATH`` or a path (relative to the spec's folder); ``{seed}`` in a path or Hub
file is the run's seed. Starting checkpoints never come from git history. The layout under the study's folder
(or ``--out``): ``runs/<stage>/`` (a ``train.py --out`` folder per stage), ``decisions.{md,csv}``,
``picked.json``.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pneumo_core.data.tasks import TASKS
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import decisions
from pneumo_core.files import ASSETS, atomic_write
from pneumo_core.files import DEMO_ZOO as DEMO_ZOO, EXPERIMENTS as EXPERIMENTS  # where the studies are: re-exported
from pneumo_core.models.keys import ENSEMBLE, HIERARCHICAL, SEEDS_SUFFIX, ModelKey
from pneumo_core.models.networks import ARCHS
from pneumo_core.models.sources import checkpoint_relpath
from pneumo_core.training.loop import RunPaths, TrainConfig, select_best_seed, train

SPEC = "study.toml"

#: TrainConfig fields a spec does not set: the run's identity, where data and outputs are, the teacher's files
_FIXED = ("task", "arch", "seed", "init", "teacher", "data_dir", "out", "extra")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_]*$")
_HUB = re.compile(r"^hf://(?P<repo>[^@/\s]+/[^@/\s]+)@(?P<rev>[^/\s]+)/(?P<path>\S+)$")


class StudyError(PneumoError):
    """A spec that cannot be run as written (the message names the file and the field)."""


@dataclass(frozen=True)
class Teacher:
    """Soft targets for distillation: the mean of an earlier stage's runs' predictions on the training split
    (``stage`` and ``seeds``) or of prediction files (``files``, relative to the spec's folder)."""

    stage: str = ""
    seeds: tuple[int, ...] = ()
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """Runs of one task and architecture, one per seed, sharing a recipe (``config``: TrainConfig fields)."""

    name: str
    task: str
    arch: str
    seeds: tuple[int, ...]
    init: str | None  # None: the architecture's default (TrainConfig's)
    config: Mapping[str, Any] = field(default_factory=dict)
    teacher: Teacher | None = None

    @property
    def parent(self) -> str | None:
        """The earlier stage this one starts from (``init = "stage:NAME"``)."""
        return self.init.removeprefix("stage:") if self.init and self.init.startswith("stage:") else None


@dataclass(frozen=True)
class Option:
    """A candidate of a pick: a stage's runs and their name in the decision log."""

    stage: str
    label: str


@dataclass(frozen=True)
class Pick:
    """A choice between stages' runs of one task and architecture (the default first), seed by seed, then the
    seed; ``bundle``: what it picks is what ``zoo bundle`` exports."""

    what: str
    options: tuple[Option, ...]
    constraint: str = ""
    note: str = ""
    bundle: bool = True


@dataclass(frozen=True)
class Study:
    name: str
    path: Path
    stages: tuple[Stage, ...]
    picks: tuple[Pick, ...] = ()
    description: str = ""
    leave_out: tuple[str, ...] = ()
    repredict: bool = False
    all_seeds: tuple[str, ...] = ()  # task/arch whose every seed is bundled (their seed ensemble runs in the app)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    def overridden(self, stages: Sequence[str] | None = None, **over: Any) -> "Study":
        """The same study with only ``stages`` (and the picks among them) and ``over`` replacing each stage's
        fields (``arch``, ``init``, ``seeds`` or TrainConfig fields), e.g. a tiny run for a test."""
        keep = [s for s in self.stages if stages is None or s.name in stages]
        names = {s.name for s in keep}
        top = {k: over.pop(k) for k in ("arch", "init", "seeds") if k in over}
        if "seeds" in top:
            top["seeds"] = tuple(top["seeds"])
        out = [replace(s, **top, config={**s.config, **over}) for s in keep]
        picks = tuple(p for p in self.picks if all(o.stage in names for o in p.options))
        return replace(self, stages=tuple(out), picks=picks)


# ---------------------------------------------------------------- reading a spec

def load_study(path: str | Path) -> Study:
    """The spec at ``path`` (a ``study.toml`` or its folder), checked: a :class:`StudyError` names the first bad
    field in one line."""
    path = Path(path)
    if path.is_dir():
        path = path / SPEC
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise StudyError(f"{path}: no such spec") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise StudyError(f"{path}: not readable ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise StudyError(f"{path}: not TOML: {exc}") from None
    return parse_study(raw, path)


def parse_study(raw: Mapping[str, Any], path: str | Path = SPEC) -> Study:
    """A spec's TOML table as a :class:`Study` (see :func:`load_study`)."""
    path = Path(path)

    def fail(where: str, msg: str):
        raise StudyError(f"{path}: {where}: {msg}")

    _known(raw, ("study", "defaults", "stage", "pick", "bundle"), "the file", fail)
    head = _table(raw, "study", "the file", fail)
    _known(head, ("name", "description"), "[study]", fail)
    name = head.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        fail("[study] name", f"must be a folder name of a-z, 0-9 and _, not {name!r}")
    defaults = _table(raw, "defaults", "the file", fail)
    base = _config(defaults, "[defaults]", fail)
    stages: list[Stage] = []
    for i, s in enumerate(_tables(raw, "stage", fail)):
        stages.append(_stage(s, f"[[stage]] {s.get('name', i + 1)!r}", base, stages, fail))
    if not stages:
        fail("[[stage]]", "a study needs at least one stage")
    picks = tuple(_pick(p, f"[[pick]] {i + 1}", stages, fail) for i, p in enumerate(_tables(raw, "pick", fail)))
    keys = [(_key(p, stages)) for p in picks if p.bundle]
    if len(keys) != len(set(keys)):
        fail("[[pick]]", "two bundled picks choose the same task and architecture")
    bundle = _table(raw, "bundle", "the file", fail)
    _known(bundle, ("leave_out", "repredict", "all_seeds", *decisions.STATED, *decisions.STATED_DEFAULTS), "[bundle]",
           fail)
    for k in decisions.STATED:  # architectures the study names in advance (decisions.stated reads them)
        if k in bundle and bundle[k] not in ARCHS:
            fail(f"[bundle] {k}", f"must be one of {', '.join(ARCHS)}, not {bundle[k]!r}")
    models = (ENSEMBLE, HIERARCHICAL, *ARCHS, *(a + SEEDS_SUFFIX for a in ARCHS))
    for k in decisions.STATED_DEFAULTS:  # a task's first model, named in advance (selection.default_decision)
        if k in bundle and bundle[k] not in models:
            fail(f"[bundle] {k}", f"must be one of {', '.join(models)}, not {bundle[k]!r}")
    for k in ("leave_out", "all_seeds"):
        v = bundle.get(k, [])
        if not (isinstance(v, list) and all(isinstance(x, str) and x.count("/") == 1 for x in v)):
            fail(f"[bundle] {k}", "must be a list of TASK/ARCH")
    leave_out = bundle.get("leave_out", [])
    if not isinstance(bundle.get("repredict", False), bool):
        fail("[bundle] repredict", "must be true or false")
    description = head.get("description", "")
    if not isinstance(description, str):
        fail("[study] description", "must be text")
    return Study(name, path, tuple(stages), picks, description, tuple(leave_out), bundle.get("repredict", False),
                 tuple(bundle.get("all_seeds", [])))


def _known(table: Mapping, allowed: Sequence[str], where: str, fail) -> None:
    for k in table:
        if k not in allowed:
            fail(where, f"unknown field {k!r} (known: {', '.join(allowed)})")


def _table(raw: Mapping, key: str, where: str, fail) -> dict:
    v = raw.get(key, {})
    if not isinstance(v, dict):
        fail(where, f"{key} must be a table ([{key}])")
    return v


def _tables(raw: Mapping, key: str, fail) -> list[dict]:
    v = raw.get(key, [])
    if not (isinstance(v, list) and all(isinstance(x, dict) for x in v)):
        fail(f"[[{key}]]", f"must be an array of tables ([[{key}]])")
    return v


def _config_fields() -> dict[str, tuple[type, ...]]:
    """TrainConfig's settable fields and the TOML types each takes."""
    out = {}
    for f in fields(TrainConfig):
        if f.name in _FIXED:
            continue
        ann = str(f.type)
        kinds = (bool,) if "bool" in ann else (int,) if ann.startswith("int") else \
            (int, float) if "float" in ann else (str,) if "str" in ann else (object,)
        out[f.name] = kinds + ((type(None),) if "None" in ann or f.default is None else ())
    return out


def _config(table: Mapping, where: str, fail, base: Mapping | None = None) -> dict:
    known = _config_fields()
    out = dict(base or {})
    for k, v in table.items():
        if k not in known:
            fail(where, f"unknown field {k!r} (TrainConfig fields: {', '.join(known)})")
        kinds = known[k]
        ok = isinstance(v, kinds) and not (isinstance(v, bool) and bool not in kinds)
        if ok and isinstance(v, (int, float)) and not isinstance(v, bool) and not (math.isfinite(v) and v >= 0):
            ok = False
        if not ok:
            want = " or ".join(t.__name__ for t in kinds if t is not type(None))
            fail(f"{where} {k}", f"must be a non-negative {want}, not {v!r}" if want in ("int", "int or float")
                 else f"must be {want}, not {v!r}")
        out[k] = v
    return out


def _seeds(v, where: str, fail) -> tuple[int, ...]:
    if not (isinstance(v, list) and v and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                               for s in v) and len(set(v)) == len(v)):
        fail(where, f"must be a non-empty list of distinct whole numbers >= 0, not {v!r}")
    return tuple(v)


def _stage(s: dict, where: str, base: Mapping, earlier: list[Stage], fail) -> Stage:
    name = s.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        fail(f"{where} name", f"must be a folder name of a-z, 0-9 and _, not {name!r}")
    if any(e.name == name for e in earlier):
        fail(f"{where} name", "is used by an earlier stage")
    if s.get("task") not in TASKS:
        fail(f"{where} task", f"must be one of {', '.join(TASKS)}, not {s.get('task')!r}")
    if s.get("arch") not in ARCHS:
        fail(f"{where} arch", f"must be one of {', '.join(ARCHS)}, not {s.get('arch')!r}")
    seeds = _seeds(s.get("seeds"), f"{where} seeds", fail)
    init = s.get("init")
    if init is not None and (not isinstance(init, str) or not init):
        fail(f"{where} init", f"must be scratch, imagenet, stage:NAME, hf://REPO@REV/PATH or a path, not {init!r}")
    if init is None:
        pass
    elif init.startswith("stage:"):
        _earlier(init.removeprefix("stage:"), s, seeds, f"{where} init", earlier, fail)
    elif init.startswith("hf://") and not _HUB.match(init):
        fail(f"{where} init", f"a Hub file is hf://OWNER/REPO@REVISION/PATH, not {init!r}")
    teacher = None
    if "teacher" in s:
        teacher = _teacher(s["teacher"], f"{where} teacher", earlier, fail)
    cfg = _config({k: v for k, v in s.items() if k not in ("name", "task", "arch", "seeds", "init", "teacher")},
                  where, fail, base)
    try:  # TrainConfig's own checks (ranges, choices) where it has them
        TrainConfig(task=s["task"], arch=s["arch"], **cfg)
    except (PneumoError, TypeError, ValueError) as exc:
        fail(where, str(exc))
    return Stage(name, s["task"], s["arch"], seeds, init, cfg, teacher)


def _earlier(name: str, s: dict, seeds: tuple[int, ...], where: str, earlier: list[Stage], fail) -> Stage:
    parent = next((e for e in earlier if e.name == name), None)
    if parent is None:
        fail(where, f"stage {name!r} is not an earlier stage of this spec")
    if (parent.task, parent.arch) != (s["task"], s["arch"]):
        fail(where, f"stage {name!r} trains {parent.task}/{parent.arch}, not {s['task']}/{s['arch']}")
    if missing := [x for x in seeds if x not in parent.seeds]:
        fail(where, f"stage {name!r} has no seed {missing[0]} to start from")
    return parent


def _teacher(t, where: str, earlier: list[Stage], fail) -> Teacher:
    if not isinstance(t, dict):
        fail(where, "must be a table: {stage = NAME, seeds = [...]} or {files = [...]}")
    _known(t, ("stage", "seeds", "files"), where, fail)
    if "files" in t:
        files = t["files"]
        if "stage" in t or not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
            fail(where, "files must be a non-empty list of prediction files (and no stage)")
        return Teacher(files=tuple(files))
    parent = next((e for e in earlier if e.name == t.get("stage")), None)
    if parent is None:
        fail(f"{where} stage", f"{t.get('stage')!r} is not an earlier stage of this spec")
    seeds = _seeds(t.get("seeds", list(parent.seeds)), f"{where} seeds", fail)
    if missing := [x for x in seeds if x not in parent.seeds]:
        fail(f"{where} seeds", f"stage {parent.name!r} has no seed {missing[0]}")
    return Teacher(parent.name, seeds)


def _pick(p: dict, where: str, stages: list[Stage], fail) -> Pick:
    _known(p, ("what", "candidates", "constraint", "note", "bundle"), where, fail)
    raw = p.get("candidates")
    if not (isinstance(raw, list) and raw):
        fail(f"{where} candidates", "must be a non-empty list of stages (the default first)")
    options = []
    for c in raw:
        c = {"stage": c} if isinstance(c, str) else c
        if not isinstance(c, dict) or set(c) - {"stage", "label"} or not isinstance(c.get("label", ""), str):
            fail(f"{where} candidates", f"each is a stage name or {{stage = NAME, label = TEXT}}, not {c!r}")
        st = next((s for s in stages if s.name == c.get("stage")), None)
        if st is None:
            fail(f"{where} candidates", f"{c.get('stage')!r} is not a stage of this spec")
        options.append(Option(st.name, c.get("label") or st.name))
    keys = {(s.task, s.arch) for s in stages if s.name in {o.stage for o in options}}
    if len(keys) > 1:
        fail(f"{where} candidates", "must all train the same task and architecture")
    for k in ("what", "constraint", "note"):
        if not isinstance(p.get(k, ""), str):
            fail(f"{where} {k}", "must be text")
    if not isinstance(p.get("bundle", True), bool):
        fail(f"{where} bundle", "must be true or false")
    return Pick(p.get("what", "run"), tuple(options), p.get("constraint", ""), p.get("note", ""),
                p.get("bundle", True))


def _key(p: Pick, stages: Sequence[Stage]) -> tuple[str, str]:
    s = next(s for s in stages if s.name == p.options[0].stage)
    return s.task, s.arch


# ---------------------------------------------------------------- training

def stage_root(study: Study, out: str | Path | None, stage: str) -> Path:
    """Where a stage's runs live: ``<out or the spec's folder>/runs/<stage>``."""
    return Path(out or study.folder) / "runs" / stage


def run_config(study: Study, stage: Stage, seed: int, out: str | Path | None, data_dir: str | Path,
               **over: Any) -> TrainConfig:
    """The TrainConfig of one run of a stage, its init resolved to a file where it names one."""
    return TrainConfig(task=stage.task, arch=stage.arch, seed=seed, data_dir=str(data_dir),
                       out=str(stage_root(study, out, stage.name)), init=_init(study, stage, seed, out),
                       teacher=_teacher_files(study, stage, out), **{**stage.config, **over})


def _init(study: Study, stage: Stage, seed: int, out) -> str | None:
    if stage.init in (None, "scratch", "imagenet"):
        return stage.init
    if stage.parent is not None:
        return str(stage_root(study, out, stage.parent) / checkpoint_relpath(stage.task, stage.arch, seed))
    text = stage.init.replace("{seed}", str(seed))
    if m := _HUB.match(text):
        from huggingface_hub import hf_hub_download

        try:
            return hf_hub_download(m["repo"], m["path"], revision=m["rev"])
        except Exception as exc:  # noqa: BLE001 - offline, no such repo/revision/file: one line, named
            raise StudyError(f"{study.path}: stage {stage.name!r} seed {seed}: starting checkpoint {text} "
                             f"not available ({type(exc).__name__})") from None
    p = Path(text).expanduser()
    return str(p if p.is_absolute() else study.folder / p)


def _teacher_files(study: Study, stage: Stage, out) -> tuple[str, ...]:
    t = stage.teacher
    if t is None:
        return ()
    if t.files:
        return tuple(str(study.folder / f) for f in t.files)
    parent = study.stage(t.stage)
    root = stage_root(study, out, parent.name)
    return tuple(str(_train_predictions(root, parent, s)) for s in t.seeds)


def _train_predictions(root: Path, stage: Stage, seed: int) -> Path:
    stem = Path(checkpoint_relpath(stage.task, stage.arch, seed)).stem
    return root / "predictions" / stage.task / f"{stem}_train.csv"


def check_inputs(study: Study, out: str | Path | None = None) -> None:
    """Every starting checkpoint and teacher file a spec names on disk exists (before any training): else a
    :class:`StudyError` naming the first missing one. Stages' own outputs and Hub files are made or fetched on
    the way."""
    for st in study.stages:
        local = st.init not in (None, "scratch", "imagenet") and st.parent is None and not st.init.startswith("hf://")
        for seed in st.seeds if local else ():
            f = Path(_init(study, st, seed, out))
            if not f.is_file():
                raise StudyError(f"{study.path}: stage {st.name!r} seed {seed}: starting checkpoint {f} not found")
        if st.teacher is not None and st.teacher.files:
            for f in _teacher_files(study, st, out):
                if not Path(f).is_file():
                    raise StudyError(f"{study.path}: stage {st.name!r}: teacher file {f} not found")


def _done(cfg: TrainConfig) -> bool:
    p = RunPaths.of(cfg)
    return p.checkpoint.is_file() and p.metrics.is_file()


def train_study(study: Study, data_dir: str | Path, out: str | Path | None = None,
                log: Callable[[str], None] = print, **over: Any) -> list[TrainConfig]:
    """Train every run of the spec, resumably: a finished run (checkpoint and metrics written) is skipped, an
    interrupted one resumes (:func:`~pneumo_core.training.loop.train`'s ``resume``). The first seed of every
    stage comes first, so a partial run already covers each stage; a run's starting stage and teacher runs are
    trained before it. Each stage's best seed is copied to ``<arch>.pt`` once all its seeds are done."""
    check_inputs(study, out)
    done: list[TrainConfig] = []

    def run(stage: Stage, seed: int) -> None:
        if stage.parent is not None:
            run(study.stage(stage.parent), seed)
        if stage.teacher is not None and stage.teacher.stage:
            parent = study.stage(stage.teacher.stage)
            for s in stage.teacher.seeds:
                run(parent, s)
                _predict_train(study, parent, s, data_dir, out, log)
        cfg = run_config(study, stage, seed, out, data_dir, **over)
        if _done(cfg):
            return
        log(f"{study.name}: stage {stage.name}, {stage.task}/{stage.arch} seed {seed}")
        train(cfg, resume=True, log=log)
        done.append(cfg)
        if all(_done(run_config(study, stage, s, out, data_dir, **over)) for s in stage.seeds):
            select_best_seed(cfg.out, stage.task, stage.arch)

    for stage in study.stages:
        run(stage, stage.seeds[0])
    for stage in study.stages:
        for seed in stage.seeds:
            run(stage, seed)
    return done


def _predict_train(study: Study, stage: Stage, seed: int, data_dir, out, log) -> None:
    """A teacher run's probabilities on the training split (soft targets), written once."""
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.evaluation.predictions import write_predictions
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.checkpoints import load_checkpoint
    from pneumo_core.training.zoo import predict_split

    root = stage_root(study, out, stage.name)
    dst = _train_predictions(root, stage, seed)
    if dst.is_file():
        return
    log(f"{study.name}: teacher {stage.name} seed {seed} predicts the training split")
    predictor = Predictor(load_checkpoint(root / checkpoint_relpath(stage.task, stage.arch, seed)))
    table = predict_split(predictor, kermany_splits(data_dir)["train"], "train", None, model=stage.arch,
                          task=stage.task, seed=seed, checkpoint=predictor.fingerprint)
    write_predictions(table, dst)


# ---------------------------------------------------------------- picking and bundling

def questions(study: Study, out: str | Path | None = None) -> list[decisions.Question]:
    """The spec's picks as the decision function's questions (each candidate named with its folder)."""
    out_q = []
    for p in study.picks:
        first = study.stage(p.options[0].stage)
        runs = tuple(decisions.Runs(f"{o.label} ({_shown(stage_root(study, out, o.stage))})",
                                    stage_root(study, out, o.stage)) for o in p.options)
        out_q.append(decisions.Question(p.what, first.task, first.arch, runs, first.seeds, p.bundle,
                                        p.constraint, p.note))
    return out_q


def _shown(p: Path) -> str:
    try:
        return p.resolve().relative_to(ASSETS.parent).as_posix()
    except ValueError:
        return str(p)


def pick_study(study: Study, out: str | Path | None = None, assets: str | Path = ASSETS,
               n_boot: int = decisions.N_BOOT, write: bool = True) -> tuple[list[decisions.Decision],
                                                                             list[decisions.Picked]]:
    """The spec's picks decided on validation files only; with ``write``, the study's decision log
    (``decisions.md``, ``decisions.csv``) and ``picked.json`` (each bundled pick's seed and runs) beside
    ``runs/``."""
    rows, picked = [], []
    for p, q in zip(study.picks, questions(study, out)):
        r, k = decisions.answer(q, assets, n_boot)
        rows += r
        if p.bundle:
            picked.append(k)
    if write:
        home = Path(out or study.folder)
        home.mkdir(parents=True, exist_ok=True)
        md = log_markdown(study, rows)
        csv = decisions.decisions_frame(rows).to_csv(index=False)
        plan = {f"{k.task}/{k.arch}": {"seed": k.seed, "runs": {str(s): _shown(r) for s, r in k.runs.items()}}
                for k in picked}
        for name, text in (("decisions.md", md), ("decisions.csv", csv), ("picked.json", json.dumps(plan, indent=1))):
            atomic_write(home / name, lambda tmp, text=text: Path(tmp).write_text(text))
    return rows, picked


def log_markdown(study: Study, rows: Sequence[decisions.Decision]) -> str:
    """The study's decision log as ``zoo pick`` writes it (``decisions.md``)."""
    return decisions.decisions_markdown(rows).replace("`python -m pneumo_core decisions --write`",
                                                      f"`python -m pneumo_core zoo pick {_shown(study.path)}`")


def ready_to_bundle(picked: Sequence[decisions.Picked]) -> tuple[list[decisions.Picked], list[str]]:
    """The picks whose chosen seed's checkpoint is on disk (``.pt``, or an fp16 ``.safetensors`` export, under
    ``<run folder>/checkpoints/``), and one line for each pick left out because it is not: what is missing."""
    from pneumo_core.training.zoo import run_checkpoint

    ready, missing = [], []
    for k in picked:
        if k.seed is None:
            continue
        root = k.runs[k.seed]
        if run_checkpoint(root, ModelKey(k.task, k.arch, k.seed)) is None:
            missing.append(f"{k.task}/{k.arch}: not bundled (kept as assets/ has it): the picked run's checkpoint "
                           f"{root / checkpoint_relpath(k.task, k.arch, k.seed)} is missing (`zoo train` makes it)")
        else:
            ready.append(k)
    return ready, missing


def picked_zoo(picked: Sequence[decisions.Picked], dst: str | Path) -> Path:
    """One zoo folder (``train.py --out`` layout, our file names) holding each pick's run of each seed: prediction
    files, run logs and the checkpoint where there is one (the picked seed's must be there), what
    :func:`pneumo_core.training.zoo.bundle` reads."""
    from pneumo_core.evaluation.artifacts import prediction_files
    from pneumo_core.training.zoo import run_checkpoint

    dst = Path(dst)

    def copy(src: Path, rel: str) -> None:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst / rel)

    for k in picked:
        for seed, root in k.runs.items():
            key = ModelKey(k.task, k.arch, seed)
            ck = run_checkpoint(root, key)
            if ck is not None:
                copy(ck, key.checkpoint_relpath(ck.suffix))
            elif seed == k.seed:
                raise StudyError(f"{root / key.checkpoint_relpath()}: the picked run's checkpoint is missing "
                                 "(run `zoo train` first)")
            for split, f in prediction_files(root).get(key, {}).items():
                copy(f, key.prediction_file(split))
            run = next((root / d for d in key.run_dirs() if (root / d).is_dir()), None)
            for name in ("history.json", "metrics.json"):
                if run is not None and (run / name).is_file():
                    copy(run / name, f"{key.run_dirs()[0]}/{name}")
    return dst


def bundle_study(study: Study, data_dir: str | Path, out: str | Path | None = None, assets: str | Path = ASSETS,
                 progress=None, log: Callable[[str], None] = print):
    """Export what the spec's picks choose into ``assets`` (:func:`pneumo_core.training.zoo.bundle`: the picked
    runs' files, each pick's seed as fp16 with its threshold, the hierarchical model run from the bundled
    checkpoints, the results table); returns the results table. A pick whose run's checkpoint is not on disk is
    left as ``assets`` has it (``log`` says so); then the study's decision log is written again, naming what
    the bundle now holds."""
    from pneumo_core.training.zoo import bundle, repredict

    _, picked = pick_study(study, out, assets, write=False)
    if not picked:
        raise StudyError(f"{study.path}: no [[pick]] with bundle = true: nothing to bundle")
    ready, missing = ready_to_bundle(picked)
    for line in missing:
        log(line)
    if not ready:
        raise StudyError(f"{study.path}: no picked run's checkpoint is on disk: nothing to bundle")
    with tempfile.TemporaryDirectory(prefix=f"{study.name}_picked_") as tmp:
        zoo = picked_zoo(ready, tmp)
        if study.repredict:
            repredict(zoo, data_dir, progress)
        table = bundle(zoo, data_dir, assets, study.leave_out, progress,
                       seeds={f"{k.task}/{k.arch}": k.seed for k in ready}, all_seeds=study.all_seeds)
    pick_study(study, out, assets, write=True)
    return table


def plan(study: Study) -> list[dict]:
    """A spec whose stages start from scratch, ImageNet or files as ``train.py --zoo``'s list: one entry per
    stage (task, arch, init, seeds and its TrainConfig fields)."""
    out = []
    for st in study.stages:
        if st.init not in (None, "scratch", "imagenet") or st.teacher is not None:
            raise StudyError(f"{study.path}: stage {st.name!r} starts from a checkpoint or learns from a teacher: "
                             "run it with `python -m pneumo_core zoo train`")
        out.append(dict(task=st.task, arch=st.arch, init=st.init, seeds=list(st.seeds), **st.config))
    return out

