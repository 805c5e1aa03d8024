"""Export a checkpoint's model: TorchScript, ONNX, or fp16 safetensors (the bundled format)."""
from __future__ import annotations

from pathlib import Path

import torch

from pneumo_core.files import atomic_write
from pneumo_core.models.checkpoints import Checkpoint, export_safetensors


def export(ckpt: Checkpoint, fmt: str, out: str | Path) -> Path:
    """Write the model in ``fmt``; TorchScript/ONNX take (N, C, S, S) normalised input, return logits."""
    out = Path(out)
    if fmt == "safetensors":
        return export_safetensors(ckpt, out)
    model = ckpt.build().eval()
    prep = ckpt.meta.prep
    example = torch.zeros(1, prep.channels, prep.image_size, prep.image_size)
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)
        return atomic_write(out, lambda tmp: traced.save(tmp))
    if fmt == "onnx":
        def write(tmp: str) -> None:
            torch.onnx.export(model, (example,), tmp, input_names=["image"], output_names=["logits"],
                              dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                              dynamo=False)
        return atomic_write(out, write)
    raise ValueError(f"unknown export format {fmt!r}; use torchscript, onnx or safetensors")
