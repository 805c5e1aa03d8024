"""Predictors (one checkpoint, ensembles, the hierarchical model) and cached dataset inference."""
from __future__ import annotations

import hashlib
import threading
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from pneumo_core.models.checkpoints import Checkpoint
from pneumo_core.data.datasets import content_fingerprint, for_task
from pneumo_core.data.loader import ImageDataset
from pneumo_core.device import cpu_supports_bf16
from pneumo_core.errors import CheckpointError, NonFiniteOutputError
from pneumo_core.files import cache_root, write_cache
from pneumo_core.inference.fast_copy import fast_copy
from pneumo_core.data.images import load_grayscale
from pneumo_core.evaluation.predictions import Predictions, make_table, read_predictions, write_predictions
from pneumo_core.data.preprocessing import Preprocessing, normalise, to_tensor
from pneumo_core.data.tasks import THREE_CLASS, get_task, logits_to_probs

Progress = Callable[[int, int], None]  # (done, total)


class Predictor:
    """One checkpoint's model with its own preprocessing. ``lock`` serialises every use of the eager
    model (forward passes and CAMs), so one predictor can be shared between threads.

    precision: ``fp32`` (default) gives exact probabilities. ``bf16`` (or ``auto``: bf16 where the CPU
    has it natively) is about 2x faster here but approximate: measured on the bundled models
    (bench/inference_bench.py), probabilities move by up to 0.02 for ResNet18/DenseNet121 and up to
    0.19 for EfficientNet-Lite0, enough to flip decisions; use it for quick looks, not for operating points.
    Dataset inference (``batch_logits``) runs a fast copy of the model (pneumo_core.fast_copy: BatchNorm
    folded; built on first use); single images and CAMs run the eager model.
    """

    def __init__(self, ckpt: Checkpoint, device: str = "cpu", precision: str = "fp32",
                 channels_last: bool = True, fast: bool = True) -> None:
        self.ckpt = ckpt
        self.meta = ckpt.meta
        self.task = get_task(ckpt.meta.task)
        self.classes = tuple(ckpt.meta.classes)
        self.prep: Preprocessing = ckpt.meta.prep
        self.device = torch.device(device)
        self.model = ckpt.build().to(self.device)
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError("precision must be fp32, bf16 or auto")
        self.bf16 = precision == "bf16" or (precision == "auto" and (self.device.type == "cuda" or cpu_supports_bf16()))
        self.channels_last = channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        # the checkpoint keeps the model's own tensors, not a second copy of the weights (7 bundled models: 150 MB)
        self.ckpt = replace(ckpt, state_dict=self.model.state_dict())
        self.lock = threading.RLock()
        self.use_fast = fast and self.device.type == "cpu"
        self._fast: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._fast_lock = threading.Lock()
        self.fingerprint = ckpt.fingerprint or "unsaved"
        self.name = f"{self.meta.arch}" + (f"/seed{self.meta.seed}" if self.meta.seed is not None else "")

    @property
    def key(self) -> str:
        """Identifies weights + preprocessing + precision (cache keys)."""
        return f"{self.fingerprint}-{self.prep.key()}" + ("-bf16" if self.bf16 else "")

    def tensor(self, gray: np.ndarray) -> torch.Tensor:
        return to_tensor(gray, self.prep)

    @torch.inference_mode()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch through the eager model. Holds :attr:`lock`: a CAM's hooks on
        the same model (another thread, another visitor) must never see this forward pass."""
        x = batch.to(self.device)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with self.lock, torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return self.model(x).float().cpu()

    def _fast_copy(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        with self._fast_lock:
            if self._fast is None and self.use_fast:
                try:
                    self._fast = fast_copy(self.model, self.prep.image_size, self.prep.channels, self.bf16)
                except Exception:  # noqa: BLE001 - a model TorchScript cannot trace runs eagerly
                    self.use_fast = False
            return self._fast

    @torch.inference_mode()
    def batch_logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits of a normalised batch through the fast copy (the eager model where there is none).
        In fp32 they equal ``logits`` within ~1e-5 (BatchNorm folding reorders the arithmetic)."""
        fast = self._fast_copy() if self.use_fast else None
        return fast(batch.to(self.device)).cpu() if fast is not None else self.logits(batch)

    def probs_of(self, logits: torch.Tensor) -> np.ndarray:
        """Class probabilities of this model's logits; NaN or infinity anywhere is an error naming the model,
        never a number."""
        if not bool(torch.isfinite(logits).all()):
            raise NonFiniteOutputError(f"{self.name} ({Path(self.ckpt.path or 'unsaved').name}): the model gave NaN or "
                                       f"infinite outputs; its weights or preprocessing are broken, no verdict")
        return logits_to_probs(logits)

    def predict_grays(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        """Class probabilities (N, K) of grayscale [0, 1] arrays."""
        return self.probs_of(self.logits(torch.stack([self.tensor(g) for g in grays])))


class Ensemble:
    """The mean of several predictors' probabilities (same task, any architectures)."""

    def __init__(self, members: Sequence[Predictor]) -> None:
        if not members:
            raise CheckpointError("an ensemble needs at least one model")
        tasks = {m.task.name for m in members}
        if len(tasks) > 1:
            raise CheckpointError(f"an ensemble needs models of one task, not {sorted(tasks)}")
        self.members = list(members)
        self.task = members[0].task
        self.classes = members[0].classes
        self.name = "ensemble(" + "+".join(m.name for m in members) + ")"
        self.key = "ens-" + hashlib.sha256("|".join(m.key for m in members).encode()).hexdigest()[:16]

    def predict_grays(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        return np.mean([m.predict_grays(grays) for m in self.members], axis=0)


class Hierarchical:
    """Stage A (NORMAL vs PNEUMONIA) x stage B (BACTERIA vs VIRUS | pneumonia) -> three classes.

    Stage B decides at its validated threshold ``threshold_b`` (Youden's J on its validation predictions, the
    threshold its checkpoint stores; :func:`pneumo_core.evaluation.selection.hierarchical_plan` gives the
    rule's), not at 0.5: see :meth:`combine`. Without ``threshold_b``, a :class:`Predictor` stage B's stored
    threshold is used (0.5 for an ensemble, which stores none).
    """

    def __init__(self, stage_a: Predictor | Ensemble, stage_b: Predictor | Ensemble,
                 threshold_b: float | None = None) -> None:
        if stage_a.task.name != "binary" or stage_b.task.name != "bacteria_virus":
            raise CheckpointError("the hierarchical model needs a binary stage A and a bacteria_virus stage B, "
                                  f"not {stage_a.task.name} and {stage_b.task.name}")
        self.stage_a, self.stage_b = stage_a, stage_b
        if threshold_b is None:
            meta = getattr(stage_b, "meta", None)
            threshold_b = getattr(meta, "threshold", None)
        self.threshold_b = 0.5 if threshold_b is None else float(threshold_b)
        self.task = THREE_CLASS
        self.classes = THREE_CLASS.classes
        self.name = f"hierarchical({stage_a.name} > {stage_b.name} at {self.threshold_b:.3f})"
        # the threshold is part of the key: cached predictions at another stage-B threshold are not these
        self.key = f"hier-{stage_a.key}-{stage_b.key}-tb{self.threshold_b:.8f}"

    @staticmethod
    def combine(p_pneumonia: np.ndarray, p_virus_given_pneumonia: np.ndarray,
                threshold_b: float = 0.5) -> np.ndarray:
        """(N, 3) probabilities NORMAL, BACTERIA, VIRUS: ``[1 - a, a (1 - v'), a v']``, where ``v'`` is stage B's
        P(VIRUS) with its odds divided by the odds of ``threshold_b`` (a prior shift), so that ``v' = 0.5``
        exactly where ``v = threshold_b``: between BACTERIA and VIRUS the larger probability is VIRUS iff
        stage B's P(VIRUS) > its threshold. At ``threshold_b = 0.5`` this is the plain product."""
        a, v = np.asarray(p_pneumonia, dtype=np.float64), np.asarray(p_virus_given_pneumonia, dtype=np.float64)
        t = float(np.clip(threshold_b, 1e-6, 1 - 1e-6))
        v = v * (1 - t) / (v * (1 - t) + (1 - v) * t)
        return np.stack([1 - a, a * (1 - v), a * v], axis=1)

    def predict_grays(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        return self.combine(self.stage_a.predict_grays(grays)[:, 1], self.stage_b.predict_grays(grays)[:, 1],
                            self.threshold_b)


# ---------------------------------------------------------------- dataset inference

def _loader(frame: pd.DataFrame, prep: Preprocessing, batch_size: int, num_workers: int) -> DataLoader:
    return DataLoader(ImageDataset(frame, prep), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      persistent_workers=False)


def _table(model, frame: pd.DataFrame, probs: np.ndarray, split: str) -> Predictions:
    meta = getattr(model, "meta", None)
    return make_table(frame["image_id"], frame["target"] if "target" in frame else np.full(len(frame), -1), probs,
                      model.classes, paths=list(frame["path"]), split=split,
                      model=getattr(meta, "arch", model.name), task=model.task.name,
                      seed=getattr(meta, "seed", None), checkpoint=getattr(model, "fingerprint", model.key))


def _batched_probs(model, frame: pd.DataFrame, batch_size: int, num_workers: int,
                   progress: Progress | None) -> np.ndarray:
    members = model.members if isinstance(model, Ensemble) else [model]
    if isinstance(model, Hierarchical):
        a = _batched_probs(model.stage_a, frame, batch_size, num_workers, progress)[:, 1]
        b = _batched_probs(model.stage_b, frame, batch_size, num_workers, progress)[:, 1]
        return Hierarchical.combine(a, b, model.threshold_b)
    out = []
    total = len(frame) * len(members)
    done = 0
    for m in members:
        chunks = []
        for x, _, _ in _loader(frame, m.prep, batch_size, num_workers):
            chunks.append(m.probs_of(m.batch_logits(normalise(x, m.prep))))
            done += len(x)
            if progress:
                progress(done, total)
        out.append(np.concatenate(chunks))
    return np.mean(out, axis=0)


def predict_frame(model: Predictor | Ensemble | Hierarchical, frame: pd.DataFrame, split: str = "",
                  batch_size: int = 16, num_workers: int = 0, progress: Progress | None = None,
                  cache_dir: str | Path | None = None, use_cache: bool = True) -> Predictions:
    """Predict every image of a dataset table; cached on disk by (model key, content fingerprint).

    Rows whose label has no meaning for the model's task are dropped (e.g. NORMAL for bacteria_virus).
    """
    frame = for_task(frame, model.task) if "label" in frame else frame
    name = f"{model.key}-{content_fingerprint(frame)}-{model.task.name}.parquet"
    cache = cache_root(cache_dir) / "predictions" / name
    if use_cache and cache.is_file():
        try:
            return read_predictions(cache)
        except Exception:  # a damaged cache entry is recomputed, never fatal
            cache.unlink(missing_ok=True)
    probs = _batched_probs(model, frame, batch_size, num_workers, progress)
    table = _table(model, frame, probs, split)
    if use_cache:
        write_cache(cache, lambda: write_predictions(table, cache))
    return table


def predict_loop(predictor: Predictor, frame: pd.DataFrame) -> np.ndarray:
    """Image by image, as the published evaluation does (with an fp32 predictor without channels_last,
    the baseline of bench/inference_bench.py)."""
    out = []
    for p in frame["path"]:
        out.append(predictor.predict_grays([load_grayscale(p)])[0])
    return np.array(out)
