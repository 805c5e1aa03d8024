"""Training on the Kermany data: the published recipe, made practical on a CPU.

Recipe: optional head-only epochs on a frozen backbone (computed from cached pooled features, so
they cost seconds), then fine-tuning with early stopping. Adam, class weights, light augmentation,
checkpoint selection on the patient-aware validation split. On CPU, bf16 autocast (and channels_last
where it pays, measured); on CUDA, AMP and channels_last. Under torchrun, DistributedDataParallel
(pneumo_core.distributed); a single process is untouched by it.
"""
from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from pneumo_core import distributed
from pneumo_core.data.arrays import load_array
from pneumo_core.device import cpu_supports_bf16, pick_device
from pneumo_core.errors import PneumoError
from pneumo_core.files import atomic_write, write_json
from pneumo_core.models.checkpoints import CheckpointMeta, save_checkpoint
from pneumo_core.models.weights import file_fingerprint, torch_load_safe
from pneumo_core.data.datasets import data_fingerprint, for_task, kermany_splits
from pneumo_core.evaluation.metrics import auroc, log_loss, multiclass_summary
from pneumo_core.models.networks import build_model, get_arch, head_of
from pneumo_core.evaluation.predictions import make_table, write_predictions
from pneumo_core.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pneumo_core.models.sources import checkpoint_relpath
from pneumo_core.data.tasks import Task, get_task, logits_to_probs
from pneumo_core.training.distill import DistillationLoss, teacher_targets
from pneumo_core.evaluation import selection

# channels_last helps these on this CPU (measured in bench/train_bench.py); EfficientNet-Lite0 is slower with it.
CHANNELS_LAST_ARCHS = {"resnet18", "resnet50", "densenet121", "custom_cnn"}


@dataclass
class TrainConfig:
    task: str = "binary"
    arch: str = "efficientnet_lite0"
    init: str = "imagenet"
    seed: int = 0
    data_dir: str = "../shared/data/chest_xray"
    out: str = "."
    image_size: int = 224
    epochs: int = 5
    head_epochs: int = 0
    patience: int = 3
    lr: float = 1e-4
    head_lr: float = 1e-3
    batch_size: int = 32
    device: str = "auto"
    select: str = "auto"  # val_loss | macro_f1 | auroc | auto (binary: val_loss, multi-class: macro_f1)
    augment: bool = True
    hflip: bool = False
    freeze_fraction: float = 0.0  # share of backbone stages kept frozen during fine-tuning
    val_fraction: float = 0.12
    limit: int | None = None  # images per split, for quick tests
    bf16: str = "auto"
    cache_dir: str | None = None
    sync_bn: bool = False  # under torchrun: SyncBatchNorm (CUDA only)
    lr_scaling: str = "none"  # under torchrun: none | linear (lr x world size, for the larger effective batch)
    teacher: tuple[str, ...] = ()  # prediction files of the training split: their mean is a soft target
    # (in fine-tuning; head-only epochs learn from the labels alone)
    distill_alpha: float = 0.5  # weight of the teacher's soft targets (pneumo_core.training.distill)
    extra: dict = field(default_factory=dict)

    @property
    def stem(self) -> str:
        return Path(checkpoint_relpath(self.task, self.arch, self.seed)).stem

    @property
    def selection(self) -> str:
        if self.select != "auto":
            return self.select
        return "val_loss" if get_task(self.task).is_binary else "macro_f1"


# ---------------------------------------------------------------- data in memory

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


# ---------------------------------------------------------------- model pieces

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


def evaluate_logits(task: Task, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    probs = logits_to_probs(logits)
    out = {"loss": log_loss(y, probs)}
    if task.is_binary:
        out["auroc"] = auroc(y, probs[:, 1])
        out["macro_f1"] = multiclass_summary(y, probs, task.classes)["macro_f1"]
    else:
        s = multiclass_summary(y, probs, task.classes)
        out["macro_f1"], out["auroc"] = s["macro_f1"], s["auroc_macro"]
    out["accuracy"] = float((probs.argmax(1) == y).mean())
    return out


def _better(selection: str, new: dict, best: dict | None) -> bool:
    if best is None:
        return True
    if selection == "val_loss":
        return new["loss"] < best["loss"]
    return new[selection] > best[selection]


# ---------------------------------------------------------------- the run

@dataclass
class RunPaths:
    checkpoint: Path
    run_dir: Path
    last: Path
    history: Path
    metrics: Path
    pred_val: Path
    pred_test: Path

    @classmethod
    def of(cls, cfg: TrainConfig) -> "RunPaths":
        out = Path(cfg.out)
        run_dir = out / "runs" / cfg.task / cfg.stem
        return cls(out / checkpoint_relpath(cfg.task, cfg.arch, cfg.seed), run_dir, run_dir / "last.pt",
                   run_dir / "history.json", run_dir / "metrics.json",
                   out / "predictions" / cfg.task / f"{cfg.stem}_val.csv",
                   out / "predictions" / cfg.task / f"{cfg.stem}_test.csv")


def _subset(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    if n is None or n >= len(frame):
        return frame
    # keep every class present: sample per label
    parts = [g.sample(n=max(1, round(n * len(g) / len(frame))), random_state=seed) for _, g in frame.groupby("label")]
    return pd.concat(parts).sort_values("image_id").reset_index(drop=True)


@dataclass
class _Run:
    """One run's state, handed from step to step of :func:`train`."""

    cfg: TrainConfig
    task: Task
    device: torch.device
    use_bf16: bool
    channels_last: bool
    paths: RunPaths
    prep: Preprocessing
    log: Callable[[str], None]
    t_start: float
    world: int = 1
    rank: int = 0
    lr: float = 0.0  # the fine-tuning learning rate used (cfg.lr, times the world size with linear scaling)
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    targets: dict[str, np.ndarray] = field(default_factory=dict)
    model: nn.Module | None = None
    net: nn.Module | None = None  # what fine-tuning's forward passes go through: the model or its DDP wrapper
    crit: nn.Module | None = None
    soft: np.ndarray | None = None  # the teacher's probabilities for the training images (N, K), if any
    distill: DistillationLoss | None = None
    gen: torch.Generator | None = None
    optimizer: torch.optim.Optimizer | None = None
    frozen: list[str] = field(default_factory=list)
    history: list[dict] = field(default_factory=list)
    best_metrics: dict | None = None
    best_state: dict | None = None
    start_epoch: int = 0
    head_done: bool = False
    stale: int = 0


def _quiet(msg: str) -> None:
    pass


def train(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train one (task, arch, seed); returns the run's metrics. Writes checkpoint, history, predictions.

    Under torchrun (more than one process) the fine-tuning runs as DistributedDataParallel: each rank
    takes its share of the run's seeded order, validation and the final predictions are sharded and
    gathered, rank 0 alone logs and writes files. A single process runs exactly as it always has.
    """
    run = _setup(cfg, log)
    _prepare_data(run)
    _build(run)
    done = _restore(run, resume)
    if done is not None:
        return done
    if cfg.head_epochs > 0 and not run.head_done:
        _head_epochs(run)
    _wrap(run)
    for ep in range(run.start_epoch, cfg.epochs):
        train_loss = _fit_epoch(run, ep)
        if _end_epoch(run, ep, train_loss):
            break
    return _finish(run)


def _setup(cfg: TrainConfig, log: Callable[[str], None]) -> _Run:
    """Seeds, device, precision; the process group under torchrun."""
    t_start = time.time()
    distributed.init(cfg.device)
    world, rank = distributed.world_size(), distributed.rank()
    if cfg.lr_scaling not in ("none", "linear"):
        raise PneumoError(f"lr_scaling must be none or linear, not {cfg.lr_scaling!r}")
    task = get_task(cfg.task)
    device = pick_device(cfg.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", distributed.local_rank())
    if world > 1 and cfg.sync_bn and device.type != "cuda":
        raise PneumoError("--sync-bn needs CUDA: torch's SyncBatchNorm does not run on CPU")
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    use_bf16 = (cfg.bf16 == "on") or (cfg.bf16 == "auto" and (device.type == "cuda" or cpu_supports_bf16()))
    channels_last = device.type == "cuda" or cfg.arch in CHANNELS_LAST_ARCHS
    lr = cfg.lr * world if cfg.lr_scaling == "linear" else cfg.lr
    run = _Run(cfg, task, device, use_bf16, channels_last, RunPaths.of(cfg),
               Preprocessing(cfg.image_size, 3, IMAGENET_MEAN, IMAGENET_STD),
               log if rank == 0 else _quiet, t_start, world, rank, lr)
    if world > 1:
        run.log(f"{cfg.stem}: {world} processes ({device.type}), batch {cfg.batch_size} per process = "
                f"{cfg.batch_size * world} per step, lr {lr:g} ({cfg.lr_scaling} scaling)")
    return run


def _prepare_data(run: _Run) -> None:
    """The splits (subset with ``limit``), decoded into uint8 arrays; under torchrun rank 0 decodes and
    fills the array cache while the others wait, then they read it."""
    cfg = run.cfg
    splits = kermany_splits(cfg.data_dir, cfg.val_fraction, seed=0)
    run.frames = {k: _subset(for_task(splits[k], run.task), cfg.limit, cfg.seed) for k in ("train", "val", "test")}
    if cfg.teacher:  # before the minutes of decoding: a wrong teacher file is named at once
        run.soft = teacher_targets(cfg.teacher, run.frames["train"], run.task)
    if run.rank != 0:
        distributed.barrier()
    run.arrays = {k: load_array(f, cfg.image_size, cfg.cache_dir, k) for k, f in run.frames.items()}
    if run.world > 1 and run.rank == 0:
        distributed.barrier()
    run.targets = {k: f["target"].to_numpy() for k, f in run.frames.items()}


def _build(run: _Run) -> None:
    """Model (SyncBatchNorm with ``sync_bn`` under torchrun), loss, generator, frozen stages, optimizer."""
    cfg = run.cfg
    model = build_model(cfg.arch, run.task.n_outputs, cfg.init).to(run.device)
    if run.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if run.world > 1 and cfg.sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    run.model = run.net = model
    run.crit = loss_fn(run.task, run.targets["train"]).to(run.device)
    if run.soft is not None:
        run.distill = DistillationLoss(run.crit, cfg.distill_alpha)
    run.gen = torch.Generator().manual_seed(cfg.seed)
    run.frozen = freeze(model, cfg.arch, cfg.freeze_fraction) if cfg.freeze_fraction > 0 else []
    run.optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=run.lr)


def _restore(run: _Run, resume: bool) -> dict | None:
    """With ``resume``: continue from ``last.pt`` (every rank loads it), or return the metrics of a run
    that is already finished. ``None``: go on training."""
    if not resume:
        return None
    cfg, paths = run.cfg, run.paths
    # rank 0's view decides, so the ranks never part ways
    has_last, has_checkpoint = distributed.broadcast((paths.last.is_file(), paths.checkpoint.is_file()))
    if has_last:
        if not paths.last.is_file():
            raise PneumoError(f"rank {run.rank} cannot see {paths.last}: resuming under torchrun needs the "
                              "output folder on a filesystem every node sees")
        state = torch_load_safe(paths.last)
        recipe = state.get("pneumo", {}).get("recipe", {})
        _same_teacher(cfg, recipe.get("teacher", []), recipe.get("distill_alpha"), paths.last)
        run.model.load_state_dict(state["model_state_dict"])
        run.optimizer.load_state_dict(state["optimizer_state_dict"])
        run.gen.set_state(state["generator_state"])
        if "torch_rng_state" in state:  # dropout draws from the global generator
            torch.set_rng_state(state["torch_rng_state"])
        run.history, run.start_epoch = state["history"], int(state["epoch"])
        run.best_metrics, run.best_state = state.get("best_metrics"), state.get("best_state_dict")
        # early stopping's count of epochs without improvement goes on where it stopped
        run.stale = int(state["stale"]) if "stale" in state else _stale_from(run.history, cfg.selection)
        run.head_done = True
        run.log(f"resuming {cfg.stem} ({cfg.task}) after epoch {run.start_epoch}")
    elif has_checkpoint:
        run.log(f"{cfg.stem} ({cfg.task}) is already trained: {paths.checkpoint}")
        metrics = json.loads(paths.metrics.read_text()) if run.rank == 0 and paths.metrics.is_file() else {}
        metrics = distributed.broadcast(metrics)  # then every rank checks alike (none is left waiting)
        if done := metrics.get("config", {}):
            _same_teacher(cfg, [Path(f).name for f in done.get("teacher", [])], done.get("distill_alpha"),
                          paths.checkpoint)
        return metrics
    return None


def _same_teacher(cfg: TrainConfig, names: list[str], alpha: float | None, where: Path) -> None:
    """A run resumed or found finished must have been taught as this one is asked to be."""
    asked = [Path(f).name for f in cfg.teacher]
    if list(names) != asked or (asked and alpha != cfg.distill_alpha):
        def said(n, a):
            return f"teacher {', '.join(n)} (alpha {a})" if n else "no teacher"
        raise PneumoError(f"{where} was trained with {said(names, alpha)}, this run asks for "
                          f"{said(asked, cfg.distill_alpha)}: use another --out, or the same teacher")


def _stale_from(history: list[dict], selection: str) -> int:
    """Fine-tuning epochs since the last improvement, replayed from a history (a last.pt written before
    ``stale`` was saved)."""
    best, stale = None, 0
    for h in history:
        m = {k[4:]: v for k, v in h.items() if k.startswith("val_")}
        if _better(selection, m, best):
            best = m
            if h.get("phase") == "finetune":
                stale = 0
        elif h.get("phase") == "finetune":
            stale += 1
    return stale


def _sharded(run: _Run, arr: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``compute(arr)``; under torchrun each rank computes its share (cut at whole batches of 64, the
    batches one process would make) and every rank gets the whole, in order."""
    if run.world == 1:
        return compute(arr)
    lo, hi = distributed.shard_bounds(len(arr), align=64)
    parts = distributed.all_gather(compute(arr[lo:hi]) if hi > lo else None)
    return np.concatenate([p for p in parts if p is not None])


def _predict(run: _Run, arr: np.ndarray, desc: str, autocast: bool) -> np.ndarray:
    return _sharded(run, arr, lambda a: predict_array(run.model, a, run.prep, run.device, autocast=autocast,
                                                      channels_last=run.channels_last, desc=desc,
                                                      quiet=run.rank != 0))


def _head_epochs(run: _Run) -> None:
    """Head-only epochs from cached pooled features (the backbone is frozen, so they never change).
    Under torchrun every rank trains the head on all features alike; rank 0's validation decides."""
    cfg, model = run.cfg, run.model
    head = head_of(model, cfg.arch)
    feats: dict[str, torch.Tensor] = {}
    captured: list[torch.Tensor] = []

    def features(part: np.ndarray, desc: str) -> np.ndarray:
        captured.clear()
        predict_array(model, part, run.prep, run.device, autocast=run.use_bf16, channels_last=run.channels_last,
                      desc=desc, quiet=run.rank != 0)
        return torch.cat(captured).numpy()

    hook = head.register_forward_pre_hook(lambda m, inp: captured.append(inp[0].detach().float().cpu()))
    for k in ("train", "val"):
        feats[k] = torch.from_numpy(_sharded(run, run.arrays[k], lambda a: features(a, f"features {k}")))
    hook.remove()
    head_opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
    ytr = torch.from_numpy(run.targets["train"])
    for ep in range(cfg.head_epochs):
        head.train()
        perm = torch.randperm(len(ytr), generator=run.gen)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = compute_loss(run.crit, head(feats["train"][idx].to(run.device)), ytr[idx].to(run.device))
            head_opt.zero_grad()
            loss.backward()
            head_opt.step()
        head.eval()
        with torch.no_grad():
            val = evaluate_logits(run.task, head(feats["val"].to(run.device)).float().cpu().numpy(), run.targets["val"])
        val = distributed.broadcast(val)
        run.history.append({"phase": "head", "epoch": ep + 1, **{f"val_{k}": v for k, v in val.items()}})
        run.log(f"{cfg.stem} head epoch {ep + 1}/{cfg.head_epochs}: val loss {val['loss']:.4f} "
                f"auroc {val['auroc']:.4f} macro-F1 {val['macro_f1']:.4f}")
        if _better(cfg.selection, val, run.best_metrics):
            run.best_metrics, run.best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _wrap(run: _Run) -> None:
    """Under torchrun, wrap the model in DistributedDataParallel (which copies rank 0's weights to all)."""
    if run.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ids = [run.device.index] if run.device.type == "cuda" else None
        run.net = DistributedDataParallel(run.model, device_ids=ids)


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _fit_epoch(run: _Run, ep: int) -> float:
    """One fine-tuning epoch; returns the mean training loss (over all ranks' images).

    Under torchrun every rank draws the same seeded permutation and takes its ``DistributedSampler``
    share; augmentation and dropout draw from per-(seed, epoch, rank) generators, so ranks differ and a
    resumed run repeats an uninterrupted one."""
    cfg = run.cfg
    set_train_mode(run.model, run.frozen)
    perm = torch.randperm(len(run.arrays["train"]), generator=run.gen).numpy()
    aug = run.gen
    if run.world > 1:
        perm = np.asarray(distributed.strided_padded(perm))
        aug = torch.Generator().manual_seed(_rank_seed(cfg.seed, ep, run.rank))
        torch.manual_seed(_rank_seed(cfg.seed, ep, run.rank))
    running, seen = 0.0, 0
    bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}", leave=False,
               disable=run.rank != 0)
    for i in bar:
        idx = perm[i:i + cfg.batch_size]
        rows = np.sort(idx)
        x = to_input(torch.from_numpy(run.arrays["train"][rows]), run.prep,
                     aug if cfg.augment else None, cfg.hflip).to(run.device)
        y = torch.from_numpy(run.targets["train"][rows]).to(run.device)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.use_bf16):
            logits = run.net(x)
        if run.distill is None:
            loss = compute_loss(run.crit, logits, y)
        else:
            loss = run.distill(logits, y, torch.from_numpy(run.soft[rows]).to(run.device))
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        running += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    if run.world > 1:
        running, seen = distributed.all_reduce_sum([running, seen], run.device)
    return running / max(seen, 1)


def _end_epoch(run: _Run, ep: int, train_loss: float) -> bool:
    """Validate, keep the best weights, save ``last.pt`` and the history (rank 0); True: stop early."""
    cfg = run.cfg
    distributed.broadcast_module(run.model)  # BatchNorm statistics: rank 0's, as in last.pt
    val_logits = _predict(run, run.arrays["val"], "validating", run.use_bf16)
    val = distributed.broadcast(evaluate_logits(run.task, val_logits, run.targets["val"]))
    run.history.append({"phase": "finetune", "epoch": ep + 1, "train_loss": train_loss,
                        **{f"val_{k}": v for k, v in val.items()}, "elapsed_s": time.time() - run.t_start})
    if _better(cfg.selection, val, run.best_metrics):
        run.best_metrics = val
        run.best_state = {k: v.detach().clone() for k, v in run.model.state_dict().items()}
        run.stale = 0
    else:
        run.stale += 1
    if run.rank == 0:
        save_checkpoint(run.paths.last, run.model.state_dict(), _meta(run), epoch=ep + 1,
                        extra={"optimizer_state_dict": run.optimizer.state_dict(),
                               "generator_state": run.gen.get_state(),
                               "torch_rng_state": torch.get_rng_state(), "stale": run.stale, "history": run.history,
                               "best_metrics": run.best_metrics, "best_state_dict": run.best_state})
        write_json(run.paths.history, run.history)
    distributed.barrier()
    run.log(f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}: train loss {train_loss:.4f}, val loss "
            f"{val['loss']:.4f} auroc {val['auroc']:.4f} macro-F1 {val['macro_f1']:.4f}")
    if run.stale >= cfg.patience:
        run.log(f"{cfg.stem}: early stop after epoch {ep + 1} (no better {cfg.selection} for {cfg.patience} epochs)")
        return True
    return False


def _finish(run: _Run) -> dict:
    """Best weights -> predictions, threshold on val, checkpoint, metrics (rank 0 writes; all return them)."""
    cfg, task, paths, frames, targets = run.cfg, run.task, run.paths, run.frames, run.targets
    model = run.model
    if run.best_state is not None:
        model.load_state_dict(run.best_state)
    distributed.broadcast_module(model)
    # the saved predictions in fp32: bf16 moves EfficientNet's probabilities by up to 0.19 (bench/inference_bench.py)
    logits = {k: _predict(run, run.arrays[k], f"predicting {k}", autocast=False) for k in ("val", "test")}
    result = None
    if run.rank == 0:
        probs = {k: logits_to_probs(v) for k, v in logits.items()}
        meta = _meta(run)
        tables = {k: make_table(frames[k]["image_id"], targets[k], probs[k], task.classes,
                                paths=list(frames[k]["image_id"]), split=k, model=cfg.arch, task=cfg.task,
                                seed=cfg.seed, checkpoint="")
                  for k in ("val", "test")}
        t = selection.threshold_on(tables["val"])
        meta.threshold = 0.5 if t is None else t
        epochs_run = len([h for h in run.history if h["phase"] == "finetune"])
        save_checkpoint(paths.checkpoint, model.state_dict(), meta, epoch=epochs_run,
                        metrics={f"val_{k}": v for k, v in (run.best_metrics or {}).items()})
        fp = file_fingerprint(paths.checkpoint)
        for k, path in (("val", paths.pred_val), ("test", paths.pred_test)):
            tables[k].frame["checkpoint"] = fp
            write_predictions(tables[k], path)
        test = evaluate_logits(task, logits["test"], targets["test"])
        result = {"config": asdict(cfg), "val": run.best_metrics, "test": test, "threshold": meta.threshold,
                  "wall_s": time.time() - run.t_start, "epochs_run": epochs_run,
                  "checkpoint": str(paths.checkpoint), "fingerprint": fp,
                  "world_size": run.world, "per_rank_batch": cfg.batch_size,
                  "effective_batch": cfg.batch_size * run.world, "lr_used": run.lr}
        write_json(paths.metrics, result)
        paths.last.unlink(missing_ok=True)
        run.log(f"{cfg.stem} ({cfg.task}) done in {result['wall_s'] / 60:.1f} min: test auroc {test['auroc']:.4f}, "
                f"macro-F1 {test['macro_f1']:.4f}")
    return distributed.broadcast(result)


def _meta(run: _Run) -> CheckpointMeta:
    cfg = run.cfg
    recipe = {k: getattr(cfg, k) for k in ("head_epochs", "epochs", "patience", "lr", "batch_size", "augment",
                                           "hflip", "freeze_fraction", "selection", "limit")}
    if cfg.teacher:
        recipe.update(teacher=[Path(f).name for f in cfg.teacher], distill_alpha=cfg.distill_alpha)
    if run.world > 1:
        recipe.update(world_size=run.world, effective_batch=cfg.batch_size * run.world, lr_used=run.lr,
                      lr_scaling=cfg.lr_scaling, sync_bn=cfg.sync_bn)
    return CheckpointMeta(
        arch=cfg.arch, task=cfg.task, classes=list(run.task.classes), n_outputs=run.task.n_outputs,
        preprocessing=run.prep.to_dict(), seed=cfg.seed,
        init=cfg.init if cfg.init in ("scratch", "imagenet") else f"path:{Path(cfg.init).name}",
        data_fingerprint=data_fingerprint(run.frames["train"]), image_size=cfg.image_size, epochs=cfg.epochs,
        recipe=recipe,
    )


def select_best_seed(out: str | Path, task: str, arch: str) -> Path | None:
    """Copy the rule's best seed (pneumo_core.evaluation.selection: lowest validation log loss on the
    run's fp32 prediction files) to ``{arch}.pt``, the Hub layout's name."""
    seed = selection.best_seed(out, task, arch)
    if seed is None:
        return None
    best = Path(out) / checkpoint_relpath(task, arch, seed)
    return atomic_write(Path(out) / checkpoint_relpath(task, arch), lambda tmp: shutil.copyfile(best, tmp))
