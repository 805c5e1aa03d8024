"""A run's outputs: the checkpoint with its metadata and validation threshold, the val/test prediction files,
the metrics; the best seed copied to the Hub layout's name."""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict, replace
from pathlib import Path

from pneumo_core import distributed
from pneumo_core.data.datasets import data_fingerprint
from pneumo_core.data.tasks import logits_to_probs
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.predictions import make_table, write_predictions
from pneumo_core.files import atomic_write, write_json
from pneumo_core.models.checkpoints import CheckpointMeta, save_checkpoint
from pneumo_core.models.sources import checkpoint_relpath
from pneumo_core.models.weights import file_fingerprint
from pneumo_core.training.config import RunPaths, Runtime, TrainConfig
from pneumo_core.training.epoch import evaluate_logits
from pneumo_core.training.inputs import Inputs
from pneumo_core.training.learner import Learner
from pneumo_core.training.resume import Progress


def checkpoint_meta(cfg: TrainConfig, rt: Runtime, inputs: Inputs) -> CheckpointMeta:
    """What the checkpoint records: arch, task, preprocessing, seed, init, the training data's fingerprint, recipe."""
    recipe = {k: getattr(cfg, k) for k in ("head_epochs", "epochs", "patience", "lr", "batch_size", "augment",
                                           "hflip", "freeze_fraction", "selection", "limit")}
    if cfg.teacher:
        recipe.update(teacher=[Path(f).name for f in cfg.teacher], distill_alpha=cfg.distill_alpha)
    if rt.world > 1:
        recipe.update(world_size=rt.world, effective_batch=cfg.batch_size * rt.world, lr_used=rt.lr,
                      lr_scaling=cfg.lr_scaling, sync_bn=cfg.sync_bn)
    return CheckpointMeta(
        arch=cfg.arch, task=cfg.task, classes=list(rt.task.classes), n_outputs=rt.task.n_outputs,
        preprocessing=rt.prep.to_dict(), seed=cfg.seed,
        init=cfg.init if cfg.init in ("scratch", "imagenet") else f"path:{Path(cfg.init).name}",
        data_fingerprint=data_fingerprint(inputs.frames["train"]), image_size=cfg.image_size, epochs=cfg.epochs,
        recipe=recipe,
    )


def write_outputs(cfg: TrainConfig, rt: Runtime, paths: RunPaths, inputs: Inputs, learner: Learner,
                  progress: Progress, meta: CheckpointMeta) -> dict:
    """Best weights -> predictions, threshold on val, checkpoint, metrics; ``last.pt`` removed (rank 0
    writes; every rank returns the metrics)."""
    task, frames, targets, model = rt.task, inputs.frames, inputs.targets, learner.model
    if progress.best_state is not None:
        model.load_state_dict(progress.best_state)
    distributed.broadcast_module(model)
    # the saved predictions in fp32: bf16 moves EfficientNet's probabilities by up to 0.19 (bench/inference_bench.py)
    logits = {k: learner.predict(rt, inputs.arrays[k], f"predicting {k}", autocast=False) for k in ("val", "test")}
    result = None
    if rt.rank == 0:
        probs = {k: logits_to_probs(v) for k, v in logits.items()}
        tables = {k: make_table(frames[k]["image_id"], targets[k], probs[k], task.classes,
                                paths=list(frames[k]["image_id"]), split=k, model=cfg.arch, task=cfg.task,
                                seed=cfg.seed, checkpoint="")
                  for k in ("val", "test")}
        t = selection.threshold_on(tables["val"])
        meta = replace(meta, threshold=0.5 if t is None else t)
        save_checkpoint(paths.checkpoint, model.state_dict(), meta, epoch=progress.epochs_run,
                        metrics={f"val_{k}": v for k, v in (progress.best_metrics or {}).items()})
        fp = file_fingerprint(paths.checkpoint)
        for k, path in (("val", paths.pred_val), ("test", paths.pred_test)):
            tables[k].frame["checkpoint"] = fp
            write_predictions(tables[k], path)
        test = evaluate_logits(task, logits["test"], targets["test"])
        result = {"config": asdict(cfg), "val": progress.best_metrics, "test": test, "threshold": meta.threshold,
                  "wall_s": time.time() - rt.started, "epochs_run": progress.epochs_run,
                  "checkpoint": str(paths.checkpoint), "fingerprint": fp,
                  "world_size": rt.world, "per_rank_batch": cfg.batch_size,
                  "effective_batch": cfg.batch_size * rt.world, "lr_used": rt.lr}
        write_json(paths.metrics, result)
        paths.last.unlink(missing_ok=True)
        rt.log(f"{cfg.stem} ({cfg.task}) done in {result['wall_s'] / 60:.1f} min: test auroc {test['auroc']:.4f}, "
               f"macro-F1 {test['macro_f1']:.4f}")
    return distributed.broadcast(result)


def select_best_seed(out: str | Path, task: str, arch: str) -> Path | None:
    """Copy the rule's best seed (pneumo_core.evaluation.selection: lowest validation log loss on the
    run's fp32 prediction files) to ``{arch}.pt``, the Hub layout's name."""
    seed = selection.best_seed(out, task, arch)
    if seed is None:
        return None
    best = Path(out) / checkpoint_relpath(task, arch, seed)
    return atomic_write(Path(out) / checkpoint_relpath(task, arch), lambda tmp: shutil.copyfile(best, tmp))
