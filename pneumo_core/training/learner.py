"""What learns: the model with its frozen stages, loss, optimizer and data-order generator; its predictions."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from pneumo_core import distributed
from pneumo_core.data.preprocessing import Preprocessing
from pneumo_core.data.tasks import Task
from pneumo_core.models.networks import build_model, get_arch
from pneumo_core.training.config import Runtime, TrainConfig
from pneumo_core.training.distill import DistillationLoss
from pneumo_core.training.inputs import Inputs, to_input


def stages(model: nn.Module, arch: str) -> list[str]:
    """Backbone parameter groups in forward order (``layer1.0``, ``_blocks.3``, ``features.denseblock2``...)."""
    head = get_arch(arch).head
    out: list[str] = []
    for name, _ in model.named_parameters():
        if name.startswith(head + "."):
            continue
        parts = name.split(".")
        top = getattr(model, parts[0])
        stage = (parts[0] + "." + parts[1] if isinstance(top, (nn.Sequential, nn.ModuleList)) and len(parts) > 2
                 else parts[0])
        if not out or out[-1] != stage:
            out.append(stage)
    return out


def freeze(model: nn.Module, arch: str, fraction: float) -> list[str]:
    """Freeze the first ``fraction`` of backbone stages (their BatchNorms too); returns their names."""
    names = stages(model, arch)
    frozen = names[: int(round(fraction * len(names)))]
    for stage in frozen:
        mod = model.get_submodule(stage)
        for p in mod.parameters():
            p.requires_grad_(False)
    return frozen


def set_train_mode(model: nn.Module, frozen: list[str]) -> None:
    """Training mode, but frozen stages keep their BatchNorm statistics."""
    model.train()
    for stage in frozen:
        model.get_submodule(stage).eval()


def loss_fn(task: Task, targets: np.ndarray) -> nn.Module:
    """BCE with pos_weight = n_neg / n_pos (two classes) or CE with inverse-frequency class weights."""
    counts = np.bincount(targets, minlength=len(task.classes)).astype(np.float64)
    counts = np.maximum(counts, 1)
    if task.n_outputs == 1:
        return nn.BCEWithLogitsLoss(pos_weight=torch.tensor([counts[0] / counts[1]], dtype=torch.float32))
    w = counts.sum() / (len(counts) * counts)
    return nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32))


def compute_loss(crit: nn.Module, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = logits.float()
    if isinstance(crit, nn.BCEWithLogitsLoss):
        return crit(logits[:, 0], y.float())
    return crit(logits, y)


@torch.inference_mode()
def predict_array(model: nn.Module, arr: np.ndarray, prep: Preprocessing, device: torch.device,
                  batch_size: int = 64, autocast: bool = False, channels_last: bool = False,
                  desc: str = "predicting", quiet: bool = False) -> np.ndarray:
    """Logits (N, K) for uint8 images (N, S, S); ``quiet``: no progress bar."""
    model.eval()
    outs = []
    for i in tqdm(range(0, len(arr), batch_size), desc=desc, leave=False, disable=quiet):
        x = to_input(torch.from_numpy(arr[i:i + batch_size]), prep).to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            outs.append(model(x).float().cpu())
    return torch.cat(outs).numpy()


def sharded(rt: Runtime, arr: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``compute(arr)``; under torchrun each rank computes its share (cut at whole batches of 64, the
    batches one process would make) and every rank gets the whole, in order."""
    if rt.world == 1:
        return compute(arr)
    lo, hi = distributed.shard_bounds(len(arr), align=64)
    parts = distributed.all_gather(compute(arr[lo:hi]) if hi > lo else None)
    return np.concatenate([p for p in parts if p is not None])


@dataclass(frozen=True)
class Learner:
    """The model and what trains it. ``net`` is what fine-tuning's forward passes go through: the model, or
    its DistributedDataParallel wrapper under torchrun."""

    model: nn.Module
    net: nn.Module
    crit: nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the data order and the augmentation of a single process
    frozen: list[str]
    distill: DistillationLoss | None = None

    def loss(self, logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
        """The weighted loss on the labels, mixed with the teacher's soft targets when there is a teacher."""
        return compute_loss(self.crit, logits, y) if self.distill is None else self.distill(logits, y, soft)

    def predict(self, rt: Runtime, arr: np.ndarray, desc: str, autocast: bool) -> np.ndarray:
        """Logits of the model (not its wrapper) for ``arr``, sharded over the ranks under torchrun."""
        return sharded(rt, arr, lambda a: predict_array(self.model, a, rt.prep, rt.device, autocast=autocast,
                                                        channels_last=rt.channels_last, desc=desc, quiet=rt.quiet))


def build_learner(cfg: TrainConfig, rt: Runtime, inputs: Inputs) -> Learner:
    """Model (SyncBatchNorm with ``sync_bn`` under torchrun), loss, generator, frozen stages, optimizer."""
    model = build_model(cfg.arch, rt.task.n_outputs, cfg.init).to(rt.device)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if rt.world > 1 and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    crit = loss_fn(rt.task, inputs.targets["train"]).to(rt.device)
    distill = DistillationLoss(crit, cfg.distill_alpha) if inputs.soft is not None else None
    generator = torch.Generator().manual_seed(cfg.seed)
    frozen = freeze(model, cfg.arch, cfg.freeze_fraction) if cfg.freeze_fraction > 0 else []
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=rt.lr)
    return Learner(model, model, crit, optimizer, generator, frozen, distill)


def distribute(learner: Learner, rt: Runtime) -> Learner:
    """Under torchrun, the model wrapped in DistributedDataParallel (which copies rank 0's weights to all)."""
    if rt.world == 1:
        return learner
    from torch.nn.parallel import DistributedDataParallel

    ids = [rt.device.index] if rt.device.type == "cuda" else None
    return replace(learner, net=DistributedDataParallel(learner.model, device_ids=ids))
