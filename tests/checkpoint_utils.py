"""Small untrained checkpoints in our format, good or bad, written in a few milliseconds."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

from pneumo_core.models.checkpoints import CheckpointMeta, save_checkpoint
from pneumo_core.models.networks import build_model

BINARY = ["NORMAL", "PNEUMONIA"]


def tiny_checkpoint(path: Path, n_outputs: int = 1, task: str = "binary", classes=BINARY, nan: bool = False,
                    **meta) -> Path:
    """An untrained custom_cnn saved with our metadata (``nan``: one weight NaN)."""
    torch.manual_seed(0)
    model = build_model("custom_cnn", n_outputs)
    sd = model.state_dict()
    if nan:
        sd["classifier.3.weight"][0, 0] = float("nan")
    m = CheckpointMeta(arch="custom_cnn", task=task, classes=list(classes), n_outputs=n_outputs, **meta)
    return save_checkpoint(path, sd, m)


def folder_with_a_bad_model(tmp_path: Path) -> Path:
    """Two good custom_cnn checkpoints (binary, three-class) and a garbage binary/resnet18.pt."""
    tiny_checkpoint(tmp_path / "checkpoints/binary/custom_cnn.pt")
    tiny_checkpoint(tmp_path / "checkpoints/three_class/custom_cnn.pt", n_outputs=3, task="three_class",
                    classes=["NORMAL", "BACTERIA", "VIRUS"])
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    return tmp_path


def make_hub_cache(cache: Path, repo_id: str, files: dict[str, Path], commit: str = "a" * 40,
                   refs: tuple[str, ...] = ("main",)) -> None:
    """Lay out a huggingface_hub cache (blobs, snapshots as symlinks, refs/<branch or tag>) as a download would."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    for ref in refs:
        (repo / "refs" / ref).write_text(commit)
    for rel, src in files.items():
        data = src.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        snap = repo / "snapshots" / commit / rel
        snap.parent.mkdir(parents=True, exist_ok=True)
        snap.symlink_to(os.path.relpath(blob, snap.parent))
