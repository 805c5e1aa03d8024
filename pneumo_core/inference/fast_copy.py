"""A fast inference-only copy of a model for CPU batches: BatchNorm folded into the convolutions
(torch.fx), channels_last, and in bf16 the weights cast and the graph frozen with TorchScript.

The eager model stays as it is: Grad-CAM hooks need its unfused modules. Speed-ups are measured in
bench/inference_bench.py (fp32 frozen TorchScript was no faster than the folded eager copy, so fp32
stays eager).
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable

import torch
from torch import nn


# (conv, bn) attributes that a module's forward applies back to back, where fx cannot see the convolution
# as a module: EfficientNet-Lite's Conv2dStaticSamePadding pads inside its own forward.
_NAMED_PAIRS = (("_conv_stem", "_bn0"), ("_conv_head", "_bn1"), ("_expand_conv", "_bn0"),
                ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))


def _fold_named_pairs(model: nn.Module) -> None:
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    for module in list(model.modules()):
        for c, b in _NAMED_PAIRS:
            conv, bn = getattr(module, c, None), getattr(module, b, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean,
                                                              bn.running_var, bn.eps, bn.weight, bn.bias)
                setattr(module, b, nn.Identity())


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (in eval mode) with each Conv2d -> BatchNorm2d pair folded into one Conv2d
    (pairs neither torch.fx nor the named pairs find are left as they are)."""
    from torch.fx.experimental.optimization import fuse

    folded = copy.deepcopy(model).eval()
    _fold_named_pairs(folded)
    try:
        return fuse(folded, inplace=True)
    except Exception:  # noqa: BLE001 - a model fx cannot trace keeps the pairs folded so far
        return folded


def fast_copy(model: nn.Module, image_size: int, channels: int,
              bf16: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The fast copy of ``model``: takes a (N, C, S, S) float batch, returns float32 logits (N, K)."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    fast = _Cast(fold_batchnorm(model).to(dtype=dtype, memory_format=torch.channels_last), dtype).eval()
    if not bf16:
        return fast
    example = torch.zeros(2, channels, image_size, image_size)
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated; torch.compile costs 20 s here
        return torch.jit.freeze(torch.jit.trace(fast, example))


class _Cast(nn.Module):
    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype).contiguous(memory_format=torch.channels_last)
        return self.model(x).float()
