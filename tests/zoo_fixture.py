"""Tiny real checkpoints, trained by our own code on a small subset of the shared data (seconds each), and the
one tiny zoo that every test needing trained models shares (trained once per session)."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pneumo_core.training.loop import TrainConfig, train

TINY = dict(image_size=64, epochs=2, limit=80, batch_size=16, patience=5)
ARCHS = ["custom_cnn", "resnet18", "densenet121", "efficientnet_lite0", "mobilenet_v3_small"]
# DenseNet121 and EfficientNet-Lite0 take the longest to train; tests needing them use the bundled models
ZOO_ARCHS = ["custom_cnn", "resnet18", "mobilenet_v3_small"]


def train_tiny(out: Path, data_dir: Path, cache: Path, task: str, arch: str, seed: int = 0, **over) -> dict:
    init = "imagenet" if arch == "efficientnet_lite0" else "scratch"
    if arch == "efficientnet_lite0":  # at 64 px its last feature map would be 2 x 2
        over = {"image_size": 128, **over}
    cfg = TrainConfig(task=task, arch=arch, init=init, seed=seed, data_dir=str(data_dir), out=str(out),
                      cache_dir=str(cache), lr=1e-3, **{**TINY, **over})
    return train(cfg, log=lambda s: None)


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory, data_dir) -> Path:
    """A training folder (checkpoints/, predictions/, runs/) of :data:`ZOO_ARCHS` on the binary task (seed 0;
    custom_cnn seeds 0 and 1), and custom_cnn on bacteria_virus and three_class. Shared by the whole session:
    read it, or copy it with :func:`copy_zoo` before writing."""
    out = tmp_path_factory.mktemp("tiny_zoo")
    cache = tmp_path_factory.mktemp("tiny_zoo_cache")
    for arch in ZOO_ARCHS:
        train_tiny(out, data_dir, cache, "binary", arch, epochs=2, limit=120)
    train_tiny(out, data_dir, cache, "binary", "custom_cnn", seed=1, epochs=2, limit=120)
    train_tiny(out, data_dir, cache, "bacteria_virus", "custom_cnn")
    train_tiny(out, data_dir, cache, "three_class", "custom_cnn")
    return out


def copy_zoo(zoo: Path, dest: Path, archs: tuple[str, ...] = tuple(ARCHS)) -> Path:
    """A writable copy of ``zoo`` holding only the runs of ``archs`` (files and folders named after the others
    are left out)."""
    others = tuple(a for a in ARCHS if a not in archs)
    shutil.copytree(zoo, dest, ignore=lambda _, names: [n for n in names if n.startswith(others)] if others else [])
    return dest
