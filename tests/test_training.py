"""train.py / pneumo_core.training: real tiny runs on the shared data."""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from pneumo_core.models.checkpoints import load_checkpoint
from pneumo_core.models.networks import build_model
from pneumo_core.data.datasets import for_task, kermany_splits
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation.predictions import make_table, read_predictions, write_predictions
from pneumo_core.training.distill import DistillationLoss, teacher_targets
from pneumo_core.models.sources import LocalSource
from pneumo_core.training.loop import TrainConfig, augment_batch, freeze, loss_fn, stages, train
from pneumo_core.data.tasks import BINARY, THREE_CLASS
from tests.training_utils import REFERENCE_FILE, interrupt_after_epoch, reference_config, run_digest
from tests.zoo_fixture import TINY, train_tiny


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


def _teacher_file(path, frame, p_pneumonia, order=None):
    """A prediction file of these training images with the given P(PNEUMONIA) (rows in ``order``)."""
    order = np.arange(len(frame)) if order is None else order
    probs = np.stack([1 - p_pneumonia, p_pneumonia], 1)[order]
    write_predictions(make_table(frame["image_id"].to_numpy()[order], frame["target"].to_numpy()[order], probs,
                                 BINARY.classes, split="train", task="binary"), path)
    return str(path)


def test_teacher_targets_follow_the_training_images(tmp_path, data_dir):
    frame = for_task(kermany_splits(data_dir)["train"], BINARY).head(40).reset_index(drop=True)
    rng = np.random.default_rng(0)
    p1, p2 = rng.random(40), rng.random(40)
    files = [_teacher_file(tmp_path / "a.csv", frame, p1),
             _teacher_file(tmp_path / "b.csv", frame, p2, rng.permutation(40))]
    soft = teacher_targets(files, frame, BINARY)  # the mean of both, in the frame's order whatever the files' order
    np.testing.assert_allclose(soft[:, 1], (p1 + p2) / 2, atol=1e-6)
    with pytest.raises(PneumoError, match="no probability for 1 of 41"):
        more = for_task(kermany_splits(data_dir)["train"], BINARY).head(41)
        teacher_targets(files, more, BINARY)
    with pytest.raises(PneumoError, match="three_class task needs"):
        teacher_targets(files, frame, THREE_CLASS)


def test_distillation_loss_mixes_labels_and_teacher():
    hard = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([0.4]))
    logits, y = torch.tensor([[0.3], [-1.2], [2.0]]), torch.tensor([1, 0, 1])
    soft = torch.tensor([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]])
    assert torch.isclose(DistillationLoss(hard, 0.0)(logits, y, soft), hard(logits[:, 0], y.float()))
    teach = nn.functional.binary_cross_entropy_with_logits(logits[:, 0], soft[:, 1])
    assert torch.isclose(DistillationLoss(hard, 1.0)(logits, y, soft), teach)
    three = torch.tensor([[2.0, 0.0, -1.0]])  # three classes: cross-entropy against the teacher's distribution
    q = torch.tensor([[0.2, 0.5, 0.3]])
    expected = -(q * torch.log_softmax(three, 1)).sum()
    assert torch.isclose(DistillationLoss(nn.CrossEntropyLoss(), 1.0)(three, torch.tensor([0]), q), expected)
    with pytest.raises(PneumoError):
        DistillationLoss(hard, 1.5)


def test_a_distilled_student_follows_its_teacher(tmp_path, data_dir):
    """Taught by the labels or by their opposite (alpha 1: the teacher alone), a tiny model learns what it was
    taught: the validation AUROC of the one taught wrong falls below chance."""
    frame = for_task(kermany_splits(data_dir)["train"], BINARY)
    y = frame["target"].to_numpy().astype(float)
    aurocs = {}
    for name, p in (("right", 0.9 * y + 0.05), ("wrong", 0.9 * (1 - y) + 0.05)):
        teacher = _teacher_file(tmp_path / f"{name}.csv", frame, p)
        train_tiny(tmp_path / name, data_dir, tmp_path / "cache", "binary", "custom_cnn", epochs=4, limit=160,
                   teacher=(teacher,), distill_alpha=1.0)
        history = json.loads((tmp_path / name / "runs/binary/custom_cnn_seed0/history.json").read_text())
        aurocs[name] = history[-1]["val_auroc"]  # after the last epoch (selection may keep an earlier one)
        assert (load_checkpoint(tmp_path / name / "checkpoints/binary/custom_cnn_seed0.pt").meta.recipe["teacher"]
                == [f"{name}.csv"])
    assert aurocs["right"] > 0.6 and aurocs["wrong"] < 0.4, aurocs
    with pytest.raises(PneumoError, match="trained with teacher right.csv"):  # resumed without it: refused
        train(TrainConfig(task="binary", arch="custom_cnn", init="scratch", data_dir=str(data_dir),
                          out=str(tmp_path / "right"), cache_dir=str(tmp_path / "cache"), lr=1e-3,
                          **{**TINY, "epochs": 4, "limit": 160}), resume=True, log=lambda s: None)


def test_resume_keeps_early_stopping_patience(tmp_path, data_dir, monkeypatch):
    """Improvement only in epoch 1, patience 2: stop after epoch 3, interrupted after epoch 2 or not."""
    from pneumo_core.training import loop, resume

    monkeypatch.setattr(resume, "better", lambda selection, new, best: best is None)
    cfg = loop.TrainConfig(task="binary", arch="custom_cnn", init="scratch", data_dir=str(data_dir),
                           out=str(tmp_path / "r"), cache_dir=str(tmp_path / "cache"), image_size=64, epochs=6,
                           limit=40, batch_size=20, patience=2)
    interrupt_after_epoch(loop.train, cfg, 2)
    resumed = loop.train(cfg, resume=True, log=lambda s: None)
    straight = loop.train(loop.TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "s")}), log=lambda s: None)
    assert straight["epochs_run"] == 3 and resumed["epochs_run"] == 3


def test_the_same_seed_gives_the_same_weights(tmp_path, data_dir):
    """The reference run (head epochs, frozen stages, flips) trained twice, and a third time interrupted after
    its first epoch and resumed, gives the same weights; its history and prediction files are those recorded
    before training/loop.py was split by step (bit for bit on the machine and torch that recorded them)."""
    cache = tmp_path / "cache"
    a, b, c = (reference_config(tmp_path / name, data_dir, cache) for name in "abc")
    train(a, log=lambda s: None)
    train(b, log=lambda s: None)
    interrupt_after_epoch(train, c, 1)
    train(c, resume=True, log=lambda s: None)
    got = run_digest(a)
    assert got["state_sha256"] == run_digest(b)["state_sha256"] == run_digest(c)["state_sha256"]
    ref = json.loads(REFERENCE_FILE.read_text())
    assert [(h["phase"], h["epoch"]) for h in got["history"]] == [("head", 1), ("finetune", 1), ("finetune", 2)]
    for key in ("val_loss", "val_auroc", "train_loss"):
        np.testing.assert_allclose([h.get(key, 0) for h in got["history"]], [h.get(key, 0) for h in ref["history"]],
                                   rtol=1e-4, err_msg=key)
    for split in ("val", "test"):
        np.testing.assert_allclose(got["probs"][split], ref["probs"][split], atol=1e-4, err_msg=split)
    if (got["torch"], got["cpu"]) == (ref["torch"], ref["cpu"]):
        assert got["state_sha256"] == ref["state_sha256"]


# train.py's flags before they came from TrainConfig (#27), with their defaults
TRAIN_PY_FLAGS = {"--task": "binary", "--arch": "efficientnet_lite0", "--init": None, "--seed": [0],
                  "--data-dir": "../shared/data/chest_xray", "--out": "checkpoints", "--image-size": 224,
                  "--epochs": 5, "--head-epochs": 0, "--patience": 3, "--lr": 1e-4, "--batch-size": 32,
                  "--freeze-fraction": 0.0, "--select": "auto", "--no-augment": True, "--hflip": False,
                  "--device": "auto", "--limit": None, "--resume": False, "--zoo": False, "--sync-bn": False,
                  "--lr-scaling": "none", "--teacher": [], "--distill-alpha": 0.5, "--bundle": None}


def test_train_py_flags_come_from_train_config(capsys):
    import train as cli

    with pytest.raises(SystemExit):
        cli.parse_args(["--help"])
    shown = set(re.findall(r"^  (--[a-z][a-z-]*)", capsys.readouterr().out, re.M))
    assert shown == set(TRAIN_PY_FLAGS)
    args = vars(cli.parse_args([]))
    for flag, default in TRAIN_PY_FLAGS.items():
        name = flag[2:].replace("-", "_")
        assert (args["augment"] if name == "no_augment" else args[name]) == default, flag
    # the help line and the default are the dataclass's
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    parser = argparse.ArgumentParser()
    cli.add_config_arguments(parser)
    lr = next(a for a in parser._actions if a.dest == "lr")
    assert lr.default == fields["lr"].default and lr.help.startswith(fields["lr"].metadata["help"])
    assert not any(a.dest in ("head_lr", "bf16", "cache_dir", "extra") for a in parser._actions)  # cli=False
    cfg = TrainConfig(**{k: v for k, v in vars(cli.parse_args(["--lr", "0.01", "--no-augment", "--teacher", "t.csv"]))
                         .items() if k in fields and k != "seed"})
    assert (cfg.lr, cfg.augment, cfg.teacher) == (0.01, False, ("t.csv",))


def test_train_config_checks_itself():
    with pytest.raises(PneumoError, match="lr must be a finite number above 0, not -1"):
        TrainConfig(lr=-1)
    with pytest.raises(PneumoError, match="arch must be one of custom_cnn, "):
        TrainConfig(arch="vgg")
    with pytest.raises(PneumoError, match="limit must be a whole number in 1..10000000, not 0"):
        TrainConfig(limit=0)
    with pytest.raises(PneumoError, match="image_size must be"):
        TrainConfig(image_size=True)  # a bool is no size
    # init left unsaid: the architecture's own
    assert TrainConfig(arch="custom_cnn").init == "scratch"
    assert TrainConfig(arch="efficientnet_lite0").init == "imagenet"
    assert TrainConfig(arch="custom_cnn", init="imagenet").init == "imagenet"
