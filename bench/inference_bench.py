#!/usr/bin/env python
"""Dataset inference (batched) vs the per-image loop, and Grad-CAM time per image, at 224 px on this CPU.

    python bench/inference_bench.py [--n 160] [--data-dir ../shared/data/chest_xray]
Targets (issue 5): batched >= 3x the per-image loop; GradCAM <= 0.3 s ResNet18, <= 0.8 s DenseNet121.
Models are built with random weights: speed does not depend on the values.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pneumo_core.checkpoints import Checkpoint, CheckpointMeta  # noqa: E402
from pneumo_core.data import kermany_splits  # noqa: E402
from pneumo_core.gradcam import explain  # noqa: E402
from pneumo_core.images import load_grayscale  # noqa: E402
from pneumo_core.inference import Predictor, predict_frame, predict_loop  # noqa: E402
from pneumo_core.models import build_model  # noqa: E402


def checkpoint(arch: str) -> Checkpoint:
    torch.manual_seed(0)
    m = build_model(arch, 1)
    return Checkpoint(m.state_dict(), CheckpointMeta(arch=arch, task="binary", classes=["NORMAL", "PNEUMONIA"],
                                                     n_outputs=1))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/chest_xray"))
    a = ap.parse_args()
    test = kermany_splits(a.data_dir)["test"]
    frame = test.iloc[np.linspace(0, len(test) - 1, a.n).astype(int)].reset_index(drop=True)
    gray = load_grayscale(frame["path"].iloc[-1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.n} test images at 224 px")
    print(f"{'arch':<20}{'loop img/s':>12}{'batched img/s':>15}{'speed-up':>10}{'max |dp|':>10}{'GradCAM s/img':>15}")
    for arch in ("resnet18", "densenet121", "efficientnet_lite0"):
        ck = checkpoint(arch)
        base = Predictor(ck, precision="fp32", channels_last=False)  # the published loop: fp32, one by one
        p = Predictor(ck)  # ours: bf16 autocast where the CPU has it, channels_last
        base.predict_grays([gray]), p.predict_grays([gray])  # warm-up
        t0 = time.perf_counter()
        loop_probs = predict_loop(base, frame)
        loop = a.n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        table = predict_frame(p, frame, batch_size=16, use_cache=False)
        batched = a.n / (time.perf_counter() - t0)
        diff = float(np.abs(table.probs - loop_probs).max())
        explain(p, gray, "gradcam", target=1, faithfulness=False)  # warm-up
        t0 = time.perf_counter()
        for _ in range(5):
            explain(p, gray, "gradcam", target=1, faithfulness=False)
        cam = (time.perf_counter() - t0) / 5
        print(f"{arch:<20}{loop:>12.1f}{batched:>15.1f}{batched / loop:>9.1f}x{diff:>10.4f}{cam:>15.3f}")


if __name__ == "__main__":
    main()
