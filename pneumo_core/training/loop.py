"""Training on the Kermany data: the published recipe, made practical on a CPU.

Recipe: optional head-only epochs on a frozen backbone (computed from cached pooled features, so
they cost seconds), then fine-tuning with early stopping. Adam, class weights, light augmentation,
checkpoint selection on the patient-aware validation split. On CPU, bf16 autocast (and channels_last
where it pays, measured); on CUDA, AMP and channels_last. Under torchrun, DistributedDataParallel
(pneumo_core.distributed); a single process is untouched by it.

:func:`train` walks the steps, each in its module: ``config`` (what is asked, where it runs), ``inputs``
(images and augmentation), ``learner`` (model, loss, optimizer), ``epoch`` (one epoch, validation),
``resume`` (progress and ``last.pt``), ``outputs`` (checkpoint, prediction files, metrics).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from pneumo_core.training.config import RunPaths, Runtime, TrainConfig
from pneumo_core.training.epoch import evaluate_logits, fit_epoch, head_epochs, scores, validate
from pneumo_core.training.inputs import augment_batch, load_inputs, to_input
from pneumo_core.training.learner import build_learner, distribute, freeze, loss_fn, predict_array, stages
from pneumo_core.training.outputs import checkpoint_meta, select_best_seed, write_outputs
from pneumo_core.training.resume import Progress, finished, restore, save_last

# the names callers import from here
__all__ = ["RunPaths", "TrainConfig", "augment_batch", "evaluate_logits", "freeze", "loss_fn", "predict_array",
           "select_best_seed", "stages", "to_input", "train"]


def train(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train one (task, arch, seed); returns the run's metrics. Writes checkpoint, history, predictions.

    With ``resume``: a finished run's metrics are returned as they are, an interrupted one goes on after its
    last fine-tuning epoch. Under torchrun (more than one process) the fine-tuning runs as
    DistributedDataParallel: each rank takes its share of the run's seeded order, validation and the final
    predictions are sharded and gathered, rank 0 alone logs and writes files. A single process runs exactly
    as it always has.
    """
    rt = Runtime.start(cfg, log)
    paths = RunPaths.of(cfg)
    if resume and (done := finished(cfg, rt, paths)) is not None:
        return done
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    data = load_inputs(cfg, rt.task)
    learner = build_learner(cfg, rt, data)
    progress = restore(cfg, rt, paths, learner) if resume else Progress()
    meta = checkpoint_meta(cfg, rt, data)
    if cfg.head_epochs > 0 and not progress.head_done:
        head_epochs(cfg, rt, data, learner, progress)
    learner = distribute(learner, rt)
    for ep in range(progress.epoch, cfg.epochs):
        train_loss = fit_epoch(cfg, rt, data, learner, ep)
        entry = validate(cfg, rt, data, learner, ep, train_loss)
        progress.record(entry, learner.model, cfg.selection)
        save_last(paths, rt, learner, progress, meta)
        rt.log(f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}: train loss {train_loss:.4f}, {scores(entry)}")
        if progress.stale >= cfg.patience:
            rt.log(f"{cfg.stem}: early stop after epoch {ep + 1} (no better {cfg.selection} for {cfg.patience} "
                   "epochs)")
            break
    return write_outputs(cfg, rt, paths, data, learner, progress, meta)
