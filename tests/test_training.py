"""train.py / pneumo_core.training: real tiny runs on the shared data."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from pneumo_core.models.checkpoints import load_checkpoint
from pneumo_core.models.networks import build_model
from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.models.sources import LocalSource
from pneumo_core.training.loop import TrainConfig, augment_batch, freeze, loss_fn, stages, train
from pneumo_core.data.tasks import BINARY, THREE_CLASS
from tests.training_utils import interrupt_after_epoch
from tests.zoo_fixture import train_tiny


def test_tiny_run_learns_and_lands_in_the_hub_layout(tmp_path, data_dir):
    r = train_tiny(tmp_path, data_dir, tmp_path / "cache", "binary", "custom_cnn", epochs=4, limit=160)
    hist = json.loads((tmp_path / "runs/binary/custom_cnn_seed0/history.json").read_text())
    losses = [h["train_loss"] for h in hist]
    assert losses[-1] < losses[0]  # the loss falls
    assert r["test"]["auroc"] > 0.6  # better than chance after seconds of training
    ck = load_checkpoint(tmp_path / "checkpoints/binary/custom_cnn_seed0.pt")
    assert (ck.meta.arch, ck.meta.task, ck.meta.seed, ck.meta.init) == ("custom_cnn", "binary", 0, "scratch")
    assert ck.meta.preprocessing["image_size"] == 64 and ck.meta.data_fingerprint
    assert 0 < ck.meta.threshold < 1  # chosen on validation
    assert LocalSource(tmp_path).find("binary/custom_cnn/seed0")
    for split in ("val", "test"):
        p = read_predictions(tmp_path / f"predictions/binary/custom_cnn_seed0_{split}.csv")
        assert p.frame["checkpoint"].iloc[0] == ck.fingerprint and p.frame["split"].iloc[0] == split
    assert not (tmp_path / "runs/binary/custom_cnn_seed0/last.pt").exists()


def test_resume_from_last_state(tmp_path, data_dir):
    """Kill a run after its first epoch (raise from the log callback) and resume it."""
    cache = tmp_path / "cache"
    cfg = TrainConfig(task="binary", arch="custom_cnn", init="scratch", data_dir=str(data_dir), out=str(tmp_path / "r"),
                      cache_dir=str(cache), lr=1e-3, image_size=64, epochs=3, limit=80, batch_size=16, patience=5)
    interrupt_after_epoch(train, cfg, 1)
    from pneumo_core.training.loop import RunPaths

    paths = RunPaths.of(cfg)
    assert paths.last.exists() and not paths.checkpoint.exists()
    logs: list[str] = []
    train(cfg, resume=True, log=logs.append)
    assert any("resuming" in m and "after epoch 1" in m for m in logs)
    hist = json.loads(paths.history.read_text())
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    # the resumed run equals an uninterrupted one (same seed, generator state restored)
    straight = TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "s")})
    train(straight, log=lambda s: None)
    hist2 = json.loads(RunPaths.of(straight).history.read_text())
    np.testing.assert_allclose([h["train_loss"] for h in hist], [h["train_loss"] for h in hist2], rtol=1e-3)
    # resuming a finished run does nothing
    logs.clear()
    train(cfg, resume=True, log=logs.append)
    assert any("already trained" in m for m in logs)


def test_head_epochs_and_partial_freezing(tmp_path, data_dir):
    r = train_tiny(tmp_path, data_dir, tmp_path / "cache", "three_class", "efficientnet_lite0", epochs=1,
                   head_epochs=2, freeze_fraction=0.5)
    hist = json.loads((tmp_path / "runs/three_class/efficientnet_lite0_seed0/history.json").read_text())
    assert [h["phase"] for h in hist] == ["head", "head", "finetune"]
    ck = load_checkpoint(tmp_path / "checkpoints/three_class/efficientnet_lite0_seed0.pt")
    assert ck.meta.init == "imagenet" and ck.meta.classes == ["NORMAL", "BACTERIA", "VIRUS"]
    assert r["test"]["macro_f1"] > 0.3
    model = build_model("resnet18", 1)
    frozen = freeze(model, "resnet18", 0.5)
    assert frozen[0] == "conv1" and not model.conv1.weight.requires_grad and model.fc.weight.requires_grad
    assert len(frozen) == round(0.5 * len(stages(model, "resnet18")))


def test_loss_weights_and_augmentation():
    bce = loss_fn(BINARY, np.array([0] * 10 + [1] * 30))
    assert float(bce.pos_weight) == pytest.approx(10 / 30)
    ce = loss_fn(THREE_CLASS, np.array([0] * 10 + [1] * 20 + [2] * 10))
    assert ce.weight.tolist() == pytest.approx([40 / 30, 40 / 60, 40 / 30])
    x = torch.rand(4, 1, 32, 32)
    g = torch.Generator().manual_seed(0)
    y = augment_batch(x, g)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and not torch.allclose(x, y)


def test_train_cli_bad_data_dir(tmp_path):
    r = subprocess.run([sys.executable, "train.py", "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr
