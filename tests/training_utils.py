"""Training runs for tests: one killed mid-way, as ``kill -9`` would; the reference run and its digest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch

from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.models.checkpoints import load_checkpoint
from pneumo_core.training.loop import RunPaths, TrainConfig

#: what the reference run gave before training/loop.py was split by step (tests/test_training.py)
REFERENCE_FILE = Path(__file__).parent / "fixtures" / "training_reference.json"

# A tiny run touching every step (head epochs, partial freezing, augmentation with flips, early-stopping
# bookkeeping); fp32 so that its numbers do not depend on a CPU's bf16 support.
REFERENCE = dict(task="binary", arch="custom_cnn", init="scratch", seed=3, image_size=64, epochs=2, head_epochs=1,
                 freeze_fraction=0.3, hflip=True, limit=80, batch_size=16, patience=5, lr=1e-3, bf16="off",
                 device="cpu")


class Stop(Exception):
    pass


def interrupt_after_epoch(train, cfg, epoch: int) -> None:
    """Run ``train(cfg)`` until it logs the end of ``epoch`` and stop it there (its resume state is kept)."""
    marker = f"epoch {epoch}/{cfg.epochs}:"

    def die(msg: str) -> None:
        if marker in msg:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, log=die)


def reference_config(out: Path, data_dir: Path, cache: Path) -> TrainConfig:
    return TrainConfig(data_dir=str(data_dir), out=str(out), cache_dir=str(cache), **REFERENCE)


def cpu_model() -> str:
    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.is_file() else []
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")


def run_digest(cfg: TrainConfig) -> dict:
    """A finished run's weights' SHA-256, history (less its times) and prediction files' P(positive); the torch
    version and CPU it ran on."""
    paths = RunPaths.of(cfg)
    state = load_checkpoint(paths.checkpoint).state_dict
    digest = hashlib.sha256()
    for k in sorted(state):
        digest.update(k.encode())
        digest.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    history = [{k: v for k, v in h.items() if k != "elapsed_s"} for h in json.loads(paths.history.read_text())]
    probs = {split: read_predictions(p).probs[:, 1].tolist()
             for split, p in (("val", paths.pred_val), ("test", paths.pred_test))}
    return {"state_sha256": digest.hexdigest(), "history": history, "probs": probs, "torch": torch.__version__,
            "cpu": cpu_model()}
