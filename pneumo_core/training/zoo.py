"""Turning a trained zoo into ``assets/``: fp32 re-prediction, the rule's best checkpoints as fp16 safetensors
with the rule's thresholds, the hierarchical model's predictions, the results table.

Which seed, which members and which threshold is decided in :mod:`pneumo_core.evaluation.selection`. What a
zoo trains is a study's spec (:mod:`pneumo_core.training.study`; the demo zoo: ``experiments/demo_zoo/study.toml``).
"""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from pneumo_core.data.datasets import kermany_splits
from pneumo_core.errors import CheckpointError
from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.predictions import Predictions, make_table, write_predictions
from pneumo_core.evaluation.results import results_table
from pneumo_core.files import ASSETS
from pneumo_core.inference.predictors import Hierarchical, Predictor, predict_frame
from pneumo_core.models.checkpoints import export_safetensors, load_checkpoint
from pneumo_core.models.keys import CHECKPOINT_SUFFIXES, HIERARCHICAL, ModelKey
from pneumo_core.models.sources import LocalSource, checkpoint_relpath

HIERARCHICAL_SPLITS = ("val", "test")
HIERARCHICAL_KEY = ModelKey("three_class", HIERARCHICAL)


def predict_split(predictor, frame: pd.DataFrame, split: str, progress, **labels) -> Predictions:
    """Fresh (uncached) predictions of one split, as a table fit to commit: image ids as paths, ``labels``
    (model, task, seed, checkpoint) as given."""
    t = predict_frame(predictor, frame, split=split, progress=progress, use_cache=False)
    f = t.frame
    return make_table(f["image_id"], f["y_true"], t.probs, t.classes, paths=list(f["image_id"]), split=split, **labels)


def hierarchical_sets(root: str | Path, source: LocalSource, data_dir: str | Path,
                      progress=None) -> tuple[Predictions, ...] | None:
    """The hierarchical model of the rule (stage A and B: the best models on validation of ``root``'s
    prediction files; stage B deciding at its validation threshold), run from ``source``'s best checkpoints
    on the val and test splits."""
    plan = selection.hierarchical_plan(root)
    if plan is None:
        return None
    hier = Hierarchical(Predictor(source.load(plan.stage_a.key)), Predictor(source.load(plan.stage_b.key)),
                        threshold_b=plan.threshold_b)
    splits = kermany_splits(data_dir)
    return tuple(predict_split(hier, splits[split], split, progress, model=HIERARCHICAL, task="three_class",
                                seed=None, checkpoint=hier.key) for split in HIERARCHICAL_SPLITS)


def repredict(zoo: str | Path, data_dir: str | Path, progress=None) -> list[Path]:
    """Rewrite each seed's val/test prediction files from its checkpoint through the inference path in
    fp32 (what the app computes), e.g. for runs whose training loop predicted under bf16."""
    zoo = Path(zoo)
    splits = kermany_splits(data_dir)
    src = LocalSource(zoo)
    written = []
    for ref in src.list():
        if ref.seed is None:
            continue
        predictor = Predictor(src.load(ref), precision="fp32")
        for split in ("val", "test"):
            table = predict_split(predictor, splits[split], split, progress, model=ref.arch, task=ref.task,
                                   seed=ref.seed, checkpoint=predictor.fingerprint)
            dst = zoo / "predictions" / ref.task / f"{Path(ref.relpath).stem}_{split}.csv"
            write_predictions(table, dst)
            written.append(dst)
    return written


def run_checkpoint(root: str | Path, key: ModelKey) -> Path | None:
    """A seed's checkpoint in a zoo folder: ``.pt`` first, then ``.pth`` or an fp16 ``.safetensors`` export, in our
    layout or the published one; None when the folder holds none."""
    root = Path(root)
    return next((root / rel for ext in CHECKPOINT_SUFFIXES for rel in key.checkpoint_relpaths(ext)
                 if (root / rel).is_file()), None)


def export_best(zoo: str | Path, task: str, arch: str, models_dir: str | Path, seed: int | None = None,
                as_seed: bool = False) -> Path | None:
    """The rule's best seed of ``task/arch`` in a trained zoo (or ``seed``, e.g. a study's pick), as fp16
    safetensors with the rule's threshold: the architecture's best checkpoint (``<arch>.safetensors``), or with
    ``as_seed`` that seed's own (``<arch>_seed<n>.safetensors``, a seed ensemble's member)."""
    seed = selection.best_seed(zoo, task, arch) if seed is None else seed
    if seed is None:
        return None
    ck = run_checkpoint(zoo, ModelKey(task, arch, seed))
    if ck is None:
        raise CheckpointError(f"{Path(zoo) / checkpoint_relpath(task, arch, seed)}: checkpoint file not found "
                              f"(seed {seed} of {task}/{arch} is to be bundled)")
    ckpt = load_checkpoint(ck)
    rule = selection.model_threshold(zoo, selection.Member(task, arch, seed))
    ckpt.meta = replace(ckpt.meta, threshold=_threshold_or(rule, ckpt.meta.threshold))
    rel = checkpoint_relpath(task, arch, seed if as_seed else None, suffix=".safetensors")
    return export_safetensors(ckpt, Path(models_dir) / rel)


def export_seeds(zoo: str | Path, task: str, arch: str, models_dir: str | Path, seeds: Sequence[int]) -> list[Path]:
    """``seeds`` of ``task/arch`` each as its own fp16 checkpoint (``<arch>_seed<n>.safetensors``, a seed ensemble's
    members beside the best seed's ``<arch>.safetensors``), after removing the seed checkpoints an earlier bundle
    left there."""
    for old in (Path(models_dir) / "checkpoints" / task).glob(f"{arch}_seed*.safetensors"):
        old.unlink()
    return [export_best(zoo, task, arch, models_dir, s, as_seed=True) for s in seeds]


def _threshold_or(t: float | None, default: float) -> float:
    return default if t is None else float(t)


def refresh_thresholds(assets: str | Path = ASSETS) -> list[str]:
    """Set each bundled checkpoint's stored threshold to the rule's (Youden on its committed validation
    predictions); returns what changed. Tensors are untouched."""
    assets = Path(assets)
    changed = []
    for ref in LocalSource(assets / "models").list():
        seed = selection.best_seed(assets, ref.task, ref.arch) if ref.seed is None else ref.seed
        if seed is None:
            continue
        ckpt = load_checkpoint(assets / "models" / ref.relpath)
        if ckpt.meta.seed != seed:
            changed.append(f"{ref.key}: bundled seed {ckpt.meta.seed} has no prediction files here; "
                           "bundle the zoo again")
            continue
        rule = selection.rule_seed(assets, ref.task, ref.arch) if ref.seed is None else seed
        if rule != seed:
            changed.append(f"{ref.key}: bundled seed {seed}, the decision rule picks seed {rule} (not re-bundled: "
                           "bundle the zoo again from its checkpoints; threshold kept for the bundled seed)")
        t = selection.model_threshold(assets, selection.Member(ref.task, ref.arch, seed))
        if t is not None and abs(t - ckpt.meta.threshold) > 1e-9:
            changed.append(f"{ref.key}: threshold {ckpt.meta.threshold:.4f} -> {t:.4f}")
            ckpt.meta = replace(ckpt.meta, threshold=float(t))
            export_safetensors(ckpt, assets / "models" / ref.relpath)
    return changed


def write_hierarchical(assets: str | Path = ASSETS, data_dir: str | Path = "../shared/data/chest_xray",
                       progress=None) -> list[Path]:
    """The hierarchical model's prediction files in ``assets`` from the bundled checkpoints."""
    assets = Path(assets)
    sets = hierarchical_sets(assets, LocalSource(assets / "models"), data_dir, progress)
    out = []
    for t in sets or ():
        out.append(write_predictions(t, assets / HIERARCHICAL_KEY.prediction_file(t.frame["split"].iloc[0])))
    return out


def write_results(assets: str | Path = ASSETS, n_boot: int = 1000) -> pd.DataFrame:
    assets = Path(assets)
    table = results_table(assets, n_boot)
    table.to_csv(assets / "results.csv", index=False)
    (assets / "results.md").write_text(table.to_markdown(index=False) + "\n")
    return table


def bundle(zoo: str | Path, data_dir: str | Path, assets: str | Path = ASSETS,
           leave_out: Sequence[str] = (), progress=None, seeds: Mapping[str, int] | None = None,
           all_seeds: Sequence[str] = ()) -> pd.DataFrame:
    """Copy the zoo's prediction files and run logs into ``assets``, export the rule's best seed of each
    architecture (``seeds``: ``task/arch`` -> the seed, e.g. a study's picks) as fp16 safetensors with the
    rule's threshold (but those named ``task/arch`` in ``leave_out``, e.g. to keep assets/models under 100 MB),
    and every other seed of those named in ``all_seeds`` as its own (their seed ensemble runs in the app), run the
    hierarchical model of the rule from the bundled checkpoints over the val and test images and
    write the results table (CSV + Markdown)."""
    zoo, assets = Path(zoo), Path(assets)
    for f in list(zoo.glob("predictions/*/*.csv")) + list(zoo.glob("runs/*/*/history.json")) + \
            list(zoo.glob("runs/*/*/metrics.json")):
        dst = assets / f.relative_to(zoo)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    for task in ("binary", "three_class", "bacteria_virus"):
        for arch in artifacts.archs_of(zoo, task):
            if f"{task}/{arch}" not in leave_out:
                best = (seeds or {}).get(f"{task}/{arch}")
                best = selection.best_seed(zoo, task, arch) if best is None else best
                export_best(zoo, task, arch, assets / "models", best)
                others = [s for s in artifacts.seeds_of(zoo, task, arch) if s != best]
                export_seeds(zoo, task, arch, assets / "models", others if f"{task}/{arch}" in all_seeds else [])
    write_hierarchical(assets, data_dir, progress)
    return write_results(assets)
