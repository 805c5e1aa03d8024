"""A run's images: the splits decoded once into uint8 arrays, and batches made from them (normalised, augmented)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn

from pneumo_core import distributed
from pneumo_core.data.arrays import load_array
from pneumo_core.data.datasets import for_task, kermany_splits
from pneumo_core.data.preprocessing import Preprocessing
from pneumo_core.data.tasks import Task
from pneumo_core.training.config import TrainConfig
from pneumo_core.training.distill import teacher_targets

SPLITS = ("train", "val", "test")


def augment_batch(x: torch.Tensor, gen: torch.Generator, hflip: bool = False) -> torch.Tensor:
    """Small rotation/scale/shift and brightness/contrast on a (B, 1, S, S) [0, 1] batch."""
    b = x.shape[0]
    u = lambda lo, hi: torch.rand(b, generator=gen) * (hi - lo) + lo  # noqa: E731
    ang = u(-10, 10) * math.pi / 180
    scale = u(0.92, 1.08)
    tx, ty = u(-0.06, 0.06), u(-0.06, 0.06)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    x = nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    contrast, bright = u(0.9, 1.1).view(b, 1, 1, 1), u(-0.08, 0.08).view(b, 1, 1, 1)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + bright).clamp(0, 1)


def to_input(x_u8: torch.Tensor, prep: Preprocessing, gen: torch.Generator | None = None,
             hflip: bool = False) -> torch.Tensor:
    """uint8 (B, S, S) -> normalised (B, C, S, S), augmented when a generator is given."""
    x = x_u8.float().div_(255).unsqueeze(1)
    if gen is not None:
        x = augment_batch(x, gen, hflip)
    mean = torch.tensor(prep.mean).view(1, -1, 1, 1)
    std = torch.tensor(prep.std).view(1, -1, 1, 1)
    return (x.expand(-1, prep.channels, -1, -1) - mean) / std


def subset(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """About ``n`` rows of ``frame``, sampled per label so that every class stays present."""
    if n is None or n >= len(frame):
        return frame
    parts = [g.sample(n=max(1, round(n * len(g) / len(frame))), random_state=seed) for _, g in frame.groupby("label")]
    return pd.concat(parts).sort_values("image_id").reset_index(drop=True)


@dataclass(frozen=True)
class Inputs:
    """The splits' tables, images (uint8, N x S x S) and targets; the teacher's probabilities if any."""

    frames: dict[str, pd.DataFrame]
    arrays: dict[str, np.ndarray]
    targets: dict[str, np.ndarray]
    soft: np.ndarray | None = None  # the teacher's probabilities for the training images (N, K)


def load_inputs(cfg: TrainConfig, task: Task) -> Inputs:
    """The splits (subset with ``limit``), decoded into uint8 arrays; under torchrun rank 0 decodes and fills
    the array cache while the others wait, then they read it."""
    splits = kermany_splits(cfg.data_dir, cfg.val_fraction, seed=0)
    frames = {k: subset(for_task(splits[k], task), cfg.limit, cfg.seed) for k in SPLITS}
    # before the minutes of decoding: a wrong teacher file is named at once
    soft = teacher_targets(cfg.teacher, frames["train"], task) if cfg.teacher else None
    rank, world = distributed.rank(), distributed.world_size()
    if rank != 0:
        distributed.barrier()
    arrays = {k: load_array(f, cfg.image_size, cfg.cache_dir, k) for k, f in frames.items()}
    if world > 1 and rank == 0:
        distributed.barrier()
    return Inputs(frames, arrays, {k: f["target"].to_numpy() for k, f in frames.items()}, soft)
