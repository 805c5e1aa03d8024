"""Training on the Kermany data: the published recipe, made practical on a CPU.

Recipe: optional head-only epochs on a frozen backbone (computed from cached pooled features, so
they cost seconds), then fine-tuning with early stopping. Adam, class weights, light augmentation,
checkpoint selection on the patient-aware validation split. On CPU, bf16 autocast (and channels_last
where it pays, measured); on CUDA, AMP and channels_last.
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

from pneumo_core.data.arrays import load_array
from pneumo_core.device import cpu_supports_bf16, pick_device
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
        stage = parts[0] + "." + parts[1] if isinstance(top, (nn.Sequential, nn.ModuleList)) and len(parts) > 2 else parts[0]
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
                  desc: str = "predicting") -> np.ndarray:
    """Logits (N, K) for uint8 images (N, S, S)."""
    model.eval()
    outs = []
    for i in tqdm(range(0, len(arr), batch_size), desc=desc, leave=False):
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


def train(cfg: TrainConfig, resume: bool = False, log: Callable[[str], None] = print) -> dict:
    """Train one (task, arch, seed); returns the run's metrics. Writes checkpoint, history, predictions."""
    t_start = time.time()
    task = get_task(cfg.task)
    device = pick_device(cfg.device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    use_bf16 = (cfg.bf16 == "on") or (cfg.bf16 == "auto" and (device.type == "cuda" or cpu_supports_bf16()))
    channels_last = device.type == "cuda" or cfg.arch in CHANNELS_LAST_ARCHS
    paths = RunPaths.of(cfg)

    splits = kermany_splits(cfg.data_dir, cfg.val_fraction, seed=0)
    frames = {k: _subset(for_task(splits[k], task), cfg.limit, cfg.seed) for k in ("train", "val", "test")}
    arrays = {k: load_array(f, cfg.image_size, cfg.cache_dir, k) for k, f in frames.items()}
    targets = {k: f["target"].to_numpy() for k, f in frames.items()}
    prep = Preprocessing(cfg.image_size, 3, IMAGENET_MEAN, IMAGENET_STD)

    model = build_model(cfg.arch, task.n_outputs, cfg.init).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    crit = loss_fn(task, targets["train"]).to(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict] = []
    best_metrics: dict | None = None
    best_state: dict | None = None
    start_epoch = 0
    phase_head_done = False

    stale = 0  # fine-tuning epochs since the selection metric last improved
    frozen = freeze(model, cfg.arch, cfg.freeze_fraction) if cfg.freeze_fraction > 0 else []
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)

    if resume and paths.last.is_file():
        state = torch_load_safe(paths.last)
        model.load_state_dict(state["model_state_dict"])
        optimizer.load_state_dict(state["optimizer_state_dict"])
        gen.set_state(state["generator_state"])
        if "torch_rng_state" in state:  # dropout draws from the global generator
            torch.set_rng_state(state["torch_rng_state"])
        history, start_epoch = state["history"], int(state["epoch"])
        best_metrics, best_state = state.get("best_metrics"), state.get("best_state_dict")
        # early stopping's count of epochs without improvement goes on where it stopped
        stale = int(state["stale"]) if "stale" in state else _stale_from(history, cfg.selection)
        phase_head_done = True
        log(f"resuming {cfg.stem} ({cfg.task}) after epoch {start_epoch}")
    elif paths.checkpoint.is_file() and resume:
        log(f"{cfg.stem} ({cfg.task}) is already trained: {paths.checkpoint}")
        return json.loads(paths.metrics.read_text()) if paths.metrics.is_file() else {}

    # ---- head-only epochs from cached pooled features (the backbone is frozen, so they never change)
    if cfg.head_epochs > 0 and not phase_head_done:
        head = head_of(model, cfg.arch)
        feats: dict[str, torch.Tensor] = {}
        captured: list[torch.Tensor] = []
        hook = head.register_forward_pre_hook(lambda m, inp: captured.append(inp[0].detach().float().cpu()))
        for k in ("train", "val"):
            captured.clear()
            predict_array(model, arrays[k], prep, device, autocast=use_bf16, channels_last=channels_last,
                          desc=f"features {k}")
            feats[k] = torch.cat(captured)
        hook.remove()
        head_opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
        ytr = torch.from_numpy(targets["train"])
        for ep in range(cfg.head_epochs):
            head.train()
            perm = torch.randperm(len(ytr), generator=gen)
            for i in range(0, len(perm), cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                loss = compute_loss(crit, head(feats["train"][idx].to(device)), ytr[idx].to(device))
                head_opt.zero_grad()
                loss.backward()
                head_opt.step()
            head.eval()
            with torch.no_grad():
                val = evaluate_logits(task, head(feats["val"].to(device)).float().cpu().numpy(), targets["val"])
            history.append({"phase": "head", "epoch": ep + 1, **{f"val_{k}": v for k, v in val.items()}})
            log(f"{cfg.stem} head epoch {ep + 1}/{cfg.head_epochs}: val loss {val['loss']:.4f} "
                f"auroc {val['auroc']:.4f} macro-F1 {val['macro_f1']:.4f}")
            if _better(cfg.selection, val, best_metrics):
                best_metrics, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}

    # ---- fine-tuning
    for ep in range(start_epoch, cfg.epochs):
        set_train_mode(model, frozen)
        perm = torch.randperm(len(arrays["train"]), generator=gen).numpy()
        running, seen = 0.0, 0
        bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            idx = perm[i:i + cfg.batch_size]
            x = to_input(torch.from_numpy(arrays["train"][np.sort(idx)]), prep,
                         gen if cfg.augment else None, cfg.hflip).to(device)
            y = torch.from_numpy(targets["train"][np.sort(idx)]).to(device)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                logits = model(x)
            loss = compute_loss(crit, logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(idx)
            seen += len(idx)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        val_logits = predict_array(model, arrays["val"], prep, device, autocast=use_bf16,
                                   channels_last=channels_last, desc="validating")
        val = evaluate_logits(task, val_logits, targets["val"])
        history.append({"phase": "finetune", "epoch": ep + 1, "train_loss": running / max(seen, 1),
                        **{f"val_{k}": v for k, v in val.items()}, "elapsed_s": time.time() - t_start})
        if _better(cfg.selection, val, best_metrics):
            best_metrics, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
            stale = 0
        else:
            stale += 1
        save_checkpoint(paths.last, model.state_dict(), _meta(cfg, task, prep, frames), epoch=ep + 1,
                        extra={"optimizer_state_dict": optimizer.state_dict(), "generator_state": gen.get_state(),
                               "torch_rng_state": torch.get_rng_state(), "stale": stale,
                               "history": history, "best_metrics": best_metrics, "best_state_dict": best_state})
        write_json(paths.history, history)
        log(f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}: train loss {running / max(seen, 1):.4f}, val loss "
            f"{val['loss']:.4f} auroc {val['auroc']:.4f} macro-F1 {val['macro_f1']:.4f}")
        if stale >= cfg.patience:
            log(f"{cfg.stem}: early stop after epoch {ep + 1} (no better {cfg.selection} for {cfg.patience} epochs)")
            break

    # ---- best weights -> predictions, threshold on val, checkpoint
    if best_state is not None:
        model.load_state_dict(best_state)
    # the saved predictions in fp32: bf16 moves EfficientNet's probabilities by up to ~0.2 (inference bench)
    logits = {k: predict_array(model, arrays[k], prep, device, autocast=False, channels_last=channels_last,
                               desc=f"predicting {k}") for k in ("val", "test")}
    probs = {k: logits_to_probs(v) for k, v in logits.items()}
    meta = _meta(cfg, task, prep, frames)
    tables = {k: make_table(frames[k]["image_id"], targets[k], probs[k], task.classes, paths=list(frames[k]["image_id"]),
                            split=k, model=cfg.arch, task=cfg.task, seed=cfg.seed, checkpoint="")
              for k in ("val", "test")}
    t = selection.threshold_on(tables["val"])
    meta.threshold = 0.5 if t is None else t
    save_checkpoint(paths.checkpoint, model.state_dict(), meta, epoch=len([h for h in history if h["phase"] == "finetune"]),
                    metrics={f"val_{k}": v for k, v in (best_metrics or {}).items()})
    fp = file_fingerprint(paths.checkpoint)
    for k, path in (("val", paths.pred_val), ("test", paths.pred_test)):
        tables[k].frame["checkpoint"] = fp
        write_predictions(tables[k], path)
    test = evaluate_logits(task, logits["test"], targets["test"])
    result = {"config": asdict(cfg), "val": best_metrics, "test": test, "threshold": meta.threshold,
              "wall_s": time.time() - t_start, "epochs_run": len([h for h in history if h["phase"] == "finetune"]),
              "checkpoint": str(paths.checkpoint), "fingerprint": fp}
    write_json(paths.metrics, result)
    paths.last.unlink(missing_ok=True)
    log(f"{cfg.stem} ({cfg.task}) done in {result['wall_s'] / 60:.1f} min: test auroc {test['auroc']:.4f}, "
        f"macro-F1 {test['macro_f1']:.4f}")
    return result


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


def _meta(cfg: TrainConfig, task: Task, prep: Preprocessing, frames: dict[str, pd.DataFrame]) -> CheckpointMeta:
    return CheckpointMeta(
        arch=cfg.arch, task=cfg.task, classes=list(task.classes), n_outputs=task.n_outputs,
        preprocessing=prep.to_dict(), seed=cfg.seed, init=cfg.init if cfg.init in ("scratch", "imagenet") else f"path:{Path(cfg.init).name}",
        data_fingerprint=data_fingerprint(frames["train"]), image_size=cfg.image_size, epochs=cfg.epochs,
        recipe={k: getattr(cfg, k) for k in ("head_epochs", "epochs", "patience", "lr", "batch_size", "augment",
                                             "hflip", "freeze_fraction", "selection", "limit")},
    )


def select_best_seed(out: str | Path, task: str, arch: str) -> Path | None:
    """Copy the rule's best seed (pneumo_core.evaluation.selection: lowest validation log loss on the
    run's fp32 prediction files) to ``{arch}.pt``, the Hub layout's name."""
    seed = selection.best_seed(out, task, arch)
    if seed is None:
        return None
    best = Path(out) / checkpoint_relpath(task, arch, seed)
    return atomic_write(Path(out) / checkpoint_relpath(task, arch), lambda tmp: shutil.copyfile(best, tmp))
