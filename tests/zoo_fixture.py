"""Tiny real checkpoints, trained by our own code on a small subset of the shared data (seconds each)."""
from __future__ import annotations

from pathlib import Path

from pneumo_core.training.loop import TrainConfig, train

TINY = dict(image_size=64, epochs=2, limit=80, batch_size=16, patience=5)


def train_tiny(out: Path, data_dir: Path, cache: Path, task: str, arch: str, seed: int = 0, **over) -> dict:
    init = "imagenet" if arch == "efficientnet_lite0" else "scratch"
    if arch == "efficientnet_lite0":  # at 64 px its last feature map would be 2 x 2
        over = {"image_size": 128, **over}
    cfg = TrainConfig(task=task, arch=arch, init=init, seed=seed, data_dir=str(data_dir), out=str(out),
                      cache_dir=str(cache), lr=1e-3, **{**TINY, **over})
    return train(cfg, log=lambda s: None)
