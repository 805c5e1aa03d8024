"""One epoch: head-only epochs on cached features, a fine-tuning epoch, validation."""
from __future__ import annotations

import time

import numpy as np
import torch
from tqdm.auto import tqdm

from pneumo_core import distributed
from pneumo_core.data.tasks import Task, logits_to_probs
from pneumo_core.evaluation.metrics import auroc, log_loss, multiclass_summary
from pneumo_core.models.networks import head_of
from pneumo_core.training.config import Runtime, TrainConfig
from pneumo_core.training.inputs import Inputs, to_input
from pneumo_core.training.learner import Learner, compute_loss, predict_array, set_train_mode, sharded
from pneumo_core.training.resume import Progress


def evaluate_logits(task: Task, logits: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Log loss, AUROC (macro over classes for more than two), macro-F1 and accuracy."""
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


def scores(entry: dict) -> str:
    """A history entry's validation scores, for the log."""
    return f"val loss {entry['val_loss']:.4f} auroc {entry['val_auroc']:.4f} macro-F1 {entry['val_macro_f1']:.4f}"


def head_epochs(cfg: TrainConfig, rt: Runtime, inputs: Inputs, learner: Learner, progress: Progress) -> None:
    """Head-only epochs from cached pooled features (the backbone is frozen, so they never change).
    Under torchrun every rank trains the head on all features alike; rank 0's validation decides."""
    model = learner.model
    head = head_of(model, cfg.arch)
    captured: list[torch.Tensor] = []

    def features(part: np.ndarray, desc: str) -> np.ndarray:
        captured.clear()
        predict_array(model, part, rt.prep, rt.device, autocast=rt.bf16, channels_last=rt.channels_last,
                      desc=desc, quiet=rt.quiet)
        return torch.cat(captured).numpy()

    hook = head.register_forward_pre_hook(lambda m, inp: captured.append(inp[0].detach().float().cpu()))
    feats = {k: torch.from_numpy(sharded(rt, inputs.arrays[k], lambda a: features(a, f"features {k}")))
             for k in ("train", "val")}
    hook.remove()
    head_opt = torch.optim.Adam(head.parameters(), lr=cfg.head_lr)
    ytr = torch.from_numpy(inputs.targets["train"])
    for ep in range(cfg.head_epochs):
        head.train()
        perm = torch.randperm(len(ytr), generator=learner.generator)
        for i in range(0, len(perm), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = compute_loss(learner.crit, head(feats["train"][idx].to(rt.device)), ytr[idx].to(rt.device))
            head_opt.zero_grad()
            loss.backward()
            head_opt.step()
        head.eval()
        with torch.no_grad():
            logits = head(feats["val"].to(rt.device)).float().cpu().numpy()
        val = distributed.broadcast(evaluate_logits(rt.task, logits, inputs.targets["val"]))
        entry = {"phase": "head", "epoch": ep + 1, **{f"val_{k}": v for k, v in val.items()}}
        progress.record(entry, model, cfg.selection)
        rt.log(f"{cfg.stem} head epoch {ep + 1}/{cfg.head_epochs}: {scores(entry)}")


def _rank_seed(seed: int, epoch: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def fit_epoch(cfg: TrainConfig, rt: Runtime, inputs: Inputs, learner: Learner, ep: int) -> float:
    """One fine-tuning epoch; returns the mean training loss (over all ranks' images).

    Under torchrun every rank draws the same seeded permutation and takes its ``DistributedSampler``
    share; augmentation and dropout draw from per-(seed, epoch, rank) generators, so ranks differ and a
    resumed run repeats an uninterrupted one."""
    set_train_mode(learner.model, learner.frozen)
    perm = torch.randperm(len(inputs.arrays["train"]), generator=learner.generator).numpy()
    aug = learner.generator
    if rt.world > 1:
        perm = np.asarray(distributed.strided_padded(perm))
        aug = torch.Generator().manual_seed(_rank_seed(cfg.seed, ep, rt.rank))
        torch.manual_seed(_rank_seed(cfg.seed, ep, rt.rank))
    running, seen = 0.0, 0
    bar = tqdm(range(0, len(perm), cfg.batch_size), desc=f"{cfg.stem} epoch {ep + 1}/{cfg.epochs}", leave=False,
               disable=rt.quiet)
    for i in bar:
        idx = perm[i:i + cfg.batch_size]
        rows = np.sort(idx)
        x = to_input(torch.from_numpy(inputs.arrays["train"][rows]), rt.prep,
                     aug if cfg.augment else None, cfg.hflip).to(rt.device)
        y = torch.from_numpy(inputs.targets["train"][rows]).to(rt.device)
        if rt.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.bf16):
            logits = learner.net(x)
        soft = None if inputs.soft is None else torch.from_numpy(inputs.soft[rows]).to(rt.device)
        loss = learner.loss(logits, y, soft)
        learner.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        learner.optimizer.step()
        running += loss.item() * len(idx)
        seen += len(idx)
        bar.set_postfix(loss=f"{running / seen:.4f}")
    if rt.world > 1:
        running, seen = distributed.all_reduce_sum([running, seen], rt.device)
    return running / max(seen, 1)


def validate(cfg: TrainConfig, rt: Runtime, inputs: Inputs, learner: Learner, ep: int, train_loss: float) -> dict:
    """The fine-tuning epoch's history entry: its training loss, validation scores and the time so far."""
    distributed.broadcast_module(learner.model)  # BatchNorm statistics: rank 0's, as in last.pt
    logits = learner.predict(rt, inputs.arrays["val"], "validating", rt.bf16)
    val = distributed.broadcast(evaluate_logits(rt.task, logits, inputs.targets["val"]))
    return {"phase": "finetune", "epoch": ep + 1, "train_loss": train_loss,
            **{f"val_{k}": v for k, v in val.items()}, "elapsed_s": time.time() - rt.started}
