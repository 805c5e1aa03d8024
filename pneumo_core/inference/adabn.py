"""AdaBN (Li et al., 2016): a model's BatchNorm running statistics re-estimated on target images.

Label-free: the target images go through the network with only its BatchNorm layers in train mode (dropout and
everything else in eval mode), under ``torch.no_grad``; no label is read, no parameter changes. The running mean
and variance become the cumulative average over the target batches (``momentum=None``). Batches are drawn in a
shuffled order (seeded): a dataset table sorted by class would otherwise give class-pure batches whose variances
miss the spread between classes.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import replace
from typing import Iterable

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader

from pneumo_core.data.loader import ImageDataset
from pneumo_core.data.preprocessing import normalise
from pneumo_core.errors import CheckpointError
from pneumo_core.inference.predictors import Predictor, Progress

BATCH_SIZE = 32


def batchnorm_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm)]


def adapt_batchnorm(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """A copy of ``model`` (in eval mode) whose BatchNorm running statistics are those of ``batches`` (normalised
    input tensors); its parameters equal the original's, and ``model`` itself is left untouched. A
    :class:`CheckpointError` when the model has no BatchNorm layer or no batch is given."""
    adapted = copy.deepcopy(model).eval()
    layers = batchnorm_layers(adapted)
    if not layers:
        raise CheckpointError(f"{type(model).__name__} has no BatchNorm layer: AdaBN does not apply")
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over every target batch
        m.train()
    seen = 0
    with torch.no_grad():
        for x in batches:
            adapted(x)
            seen += len(x)
    if not seen:
        raise CheckpointError("AdaBN needs at least one target image")
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    return adapted.eval()


def adabn_predictor(predictor: Predictor, frame: pd.DataFrame, batch_size: int = BATCH_SIZE, seed: int = 0,
                    num_workers: int = 0, progress: Progress | None = None) -> Predictor:
    """A new fp32 :class:`Predictor` of ``predictor``'s checkpoint whose BatchNorm statistics are re-estimated on
    the images of ``frame`` (its ``path`` column; labels are never read), in a shuffled order drawn from ``seed``.
    Its key names the adaptation, so its cached predictions are never taken for the original model's."""
    order = np.random.default_rng(seed).permutation(len(frame))
    images = frame.iloc[order][["path"]].reset_index(drop=True)
    loader = DataLoader(ImageDataset(images, predictor.prep), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)

    def batches() -> Iterable[torch.Tensor]:
        done = 0
        for x, _, _ in loader:
            yield normalise(x, predictor.prep).to(predictor.device)
            done += len(x)
            if progress:
                progress(done, len(images))

    out = Predictor(predictor.ckpt, str(predictor.device), precision="fp32", channels_last=predictor.channels_last,
                    fast=predictor.use_fast)
    out.model = adapt_batchnorm(out.model, batches())  # before any forward pass: the fast copy folds these
    out.ckpt = replace(out.ckpt, state_dict=out.model.state_dict())  # the adapted tensors, not the copy's source
    paths = hashlib.sha256("\n".join(sorted(map(str, frame["path"]))).encode()).hexdigest()[:16]
    out.fingerprint = f"{predictor.fingerprint}-adabn{seed}-{batch_size}-{paths}"
    out.name = f"{predictor.name} (AdaBN)"
    return out
