"""A run's progress (history, best weights, early stopping's count) and its resume state ``last.pt``, written
atomically after every fine-tuning epoch so that ``--resume`` repeats an uninterrupted run."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from pneumo_core import distributed
from pneumo_core.errors import PneumoError
from pneumo_core.files import write_json
from pneumo_core.models.checkpoints import CheckpointMeta, save_checkpoint
from pneumo_core.models.weights import torch_load_safe
from pneumo_core.training.config import RunPaths, Runtime, TrainConfig
from pneumo_core.training.learner import Learner


def better(selection: str, new: dict, best: dict | None) -> bool:
    """Is the validation score ``new`` better than ``best`` by ``selection`` (lower loss, higher otherwise)?"""
    if best is None:
        return True
    if selection == "val_loss":
        return new["loss"] < best["loss"]
    return new[selection] > best[selection]


@dataclass
class Progress:
    """What a run has done so far: one history entry per epoch, the best validation score and weights, the
    fine-tuning epochs done and those since the last improvement."""

    history: list[dict] = field(default_factory=list)
    best_metrics: dict | None = None
    best_state: dict | None = None
    epoch: int = 0
    stale: int = 0
    head_done: bool = False

    def record(self, entry: dict, model: nn.Module, selection: str) -> None:
        """Add an epoch's history entry (``phase`` head or finetune, ``epoch``, ``val_*`` scores) and keep the
        weights if they are the best."""
        self.history.append(entry)
        val = {k[4:]: v for k, v in entry.items() if k.startswith("val_")}
        finetune = entry["phase"] == "finetune"
        if better(selection, val, self.best_metrics):
            self.best_metrics, self.best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.stale = 0 if finetune else self.stale
        elif finetune:
            self.stale += 1
        if finetune:
            self.epoch = entry["epoch"]

    @property
    def epochs_run(self) -> int:
        return len([h for h in self.history if h["phase"] == "finetune"])


def save_last(paths: RunPaths, rt: Runtime, learner: Learner, progress: Progress, meta: CheckpointMeta) -> None:
    """``last.pt`` (weights, optimizer, generators, progress) and the history; rank 0 writes, all wait."""
    if rt.rank == 0:
        save_checkpoint(paths.last, learner.model.state_dict(), meta, epoch=progress.epoch,
                        extra={"optimizer_state_dict": learner.optimizer.state_dict(),
                               "generator_state": learner.generator.get_state(),
                               "torch_rng_state": torch.get_rng_state(), "stale": progress.stale,
                               "history": progress.history, "best_metrics": progress.best_metrics,
                               "best_state_dict": progress.best_state})
        write_json(paths.history, progress.history)
    distributed.barrier()


def finished(cfg: TrainConfig, rt: Runtime, paths: RunPaths) -> dict | None:
    """The metrics of a run already done (its checkpoint there, no ``last.pt``), or None."""
    # rank 0's view decides, so the ranks never part ways
    has_last, has_checkpoint = distributed.broadcast((paths.last.is_file(), paths.checkpoint.is_file()))
    if has_last or not has_checkpoint:
        return None
    rt.log(f"{cfg.stem} ({cfg.task}) is already trained: {paths.checkpoint}")
    metrics = json.loads(paths.metrics.read_text()) if rt.rank == 0 and paths.metrics.is_file() else {}
    metrics = distributed.broadcast(metrics)  # then every rank checks alike (none is left waiting)
    if done := metrics.get("config", {}):
        same_teacher(cfg, [Path(f).name for f in done.get("teacher", [])], done.get("distill_alpha"),
                     paths.checkpoint)
    return metrics


def restore(cfg: TrainConfig, rt: Runtime, paths: RunPaths, learner: Learner) -> Progress:
    """The progress saved in ``last.pt``, with the learner's weights, optimizer and generators set back (every
    rank loads it); a fresh :class:`Progress` where there is none."""
    if not distributed.broadcast(paths.last.is_file()):
        return Progress()
    if not paths.last.is_file():
        raise PneumoError(f"rank {rt.rank} cannot see {paths.last}: resuming under torchrun needs the "
                          "output folder on a filesystem every node sees")
    state = torch_load_safe(paths.last)
    recipe = state.get("pneumo", {}).get("recipe", {})
    same_teacher(cfg, recipe.get("teacher", []), recipe.get("distill_alpha"), paths.last)
    learner.model.load_state_dict(state["model_state_dict"])
    learner.optimizer.load_state_dict(state["optimizer_state_dict"])
    learner.generator.set_state(state["generator_state"])
    if "torch_rng_state" in state:  # dropout draws from the global generator
        torch.set_rng_state(state["torch_rng_state"])
    history = state["history"]
    # early stopping's count of epochs without improvement goes on where it stopped
    stale = int(state["stale"]) if "stale" in state else stale_from(history, cfg.selection)
    progress = Progress(history, state.get("best_metrics"), state.get("best_state_dict"), int(state["epoch"]),
                        stale, head_done=True)
    rt.log(f"resuming {cfg.stem} ({cfg.task}) after epoch {progress.epoch}")
    return progress


def same_teacher(cfg: TrainConfig, names: list[str], alpha: float | None, where: Path) -> None:
    """A run resumed or found finished must have been taught as this one is asked to be."""
    asked = [Path(f).name for f in cfg.teacher]
    if list(names) != asked or (asked and alpha != cfg.distill_alpha):
        def said(n, a):
            return f"teacher {', '.join(n)} (alpha {a})" if n else "no teacher"
        raise PneumoError(f"{where} was trained with {said(names, alpha)}, this run asks for "
                          f"{said(asked, cfg.distill_alpha)}: use another --out, or the same teacher")


def stale_from(history: list[dict], selection: str) -> int:
    """Fine-tuning epochs since the last improvement, replayed from a history (a last.pt written before
    ``stale`` was saved)."""
    best, stale = None, 0
    for h in history:
        m = {k[4:]: v for k, v in h.items() if k.startswith("val_")}
        if better(selection, m, best):
            best = m
            if h.get("phase") == "finetune":
                stale = 0
        elif h.get("phase") == "finetune":
            stale += 1
    return stale
