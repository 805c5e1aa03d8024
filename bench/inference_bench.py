#!/usr/bin/env python
"""Dataset inference (batched) vs the per-image loop, and Grad-CAM time per image, on this CPU.

    python bench/inference_bench.py [--n 160] [--data-dir ../shared/data/chest_xray]
Targets (issue 5): batched >= 3x the per-image loop; GradCAM <= 0.3 s ResNet18, <= 0.8 s DenseNet121.
Speed: models at 224 px with random weights (speed does not depend on the values). Accuracy of the bf16
mode: the bundled trained models (assets/models) on the same test images, against fp32.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from pneumo_core.models.checkpoints import Checkpoint, CheckpointMeta  # noqa: E402
from pneumo_core.data.datasets import kermany_splits  # noqa: E402
from pneumo_core.explain.cams import explain  # noqa: E402
from pneumo_core.data.images import load_grayscale  # noqa: E402
from pneumo_core.inference.predictors import Predictor, predict_frame, predict_loop  # noqa: E402
from pneumo_core.models.networks import build_model  # noqa: E402
from pneumo_core.models.sources import bundled_source  # noqa: E402


def checkpoint(arch: str) -> Checkpoint:
    torch.manual_seed(0)
    m = build_model(arch, 1)
    return Checkpoint(m.state_dict(), CheckpointMeta(arch=arch, task="binary", classes=["NORMAL", "PNEUMONIA"],
                                                     n_outputs=1))


def timed(fn) -> tuple[object, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def speed(frame, gray: np.ndarray) -> None:
    n = len(frame)
    print(f"{'arch':<20}{'loop img/s':>11}{'fp32 batched':>14}{'x':>6}{'bf16 batched':>14}{'x':>6}"
          f"{'fp32 |dp|':>11}{'GradCAM s':>11}")
    for arch in ("resnet18", "densenet121", "efficientnet_lite0"):
        ck = checkpoint(arch)
        base = Predictor(ck, channels_last=False, fast=False)  # the published loop: eager fp32, one by one
        exact, fast = Predictor(ck), Predictor(ck, precision="bf16")
        base.predict_grays([gray])
        for p in (exact, fast):  # warm-up, builds the fast copies
            predict_frame(p, frame.iloc[:2], use_cache=False)
        loop_probs, t_loop = timed(lambda: predict_loop(base, frame))
        table, t_exact = timed(lambda: predict_frame(exact, frame, batch_size=16, use_cache=False))
        _, t_fast = timed(lambda: predict_frame(fast, frame, batch_size=16, use_cache=False))
        diff = float(np.abs(table.probs - loop_probs).max())
        explain(exact, gray, "gradcam", target=1, faithfulness=False)  # warm-up
        _, t_cam = timed(lambda: [explain(exact, gray, "gradcam", target=1, faithfulness=False) for _ in range(5)])
        print(f"{arch:<20}{n / t_loop:>11.1f}{n / t_exact:>14.1f}{t_loop / t_exact:>5.1f}x{n / t_fast:>14.1f}"
              f"{t_loop / t_fast:>5.1f}x{diff:>11.1e}{t_cam / 5:>11.3f}")


def bf16_error(frame) -> None:
    """How far bf16 moves the bundled models' probabilities, and how many decisions it flips."""
    src = bundled_source()
    print(f"\nbf16 vs fp32 on the bundled models ({len(frame)} test images)")
    print(f"{'model':<36}{'max |dp|':>10}{'mean |dp|':>11}{'flips':>7}")
    for ref in src.list():
        if ref.seed is not None or ref.task == "bacteria_virus":
            continue
        ck = src.load(ref)
        p32 = predict_frame(Predictor(ck), frame, use_cache=False).probs
        p16 = predict_frame(Predictor(ck, precision="bf16"), frame, use_cache=False).probs
        d = np.abs(p16 - p32)
        flips = int((p16.argmax(1) != p32.argmax(1)).sum())
        print(f"{ref.task + '/' + ref.arch:<36}{d.max():>10.4f}{d.mean():>11.4f}{flips:>7}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=160)
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/chest_xray"))
    a = ap.parse_args()
    test = kermany_splits(a.data_dir)["test"]
    frame = test.iloc[np.linspace(0, len(test) - 1, a.n).astype(int)].reset_index(drop=True)
    gray = load_grayscale(frame["path"].iloc[-1])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.n} test images at 224 px")
    print("loop: eager fp32, one image at a time; batched: 16 a batch, BatchNorm folded, channels_last")
    speed(frame, gray)
    bf16_error(frame)


if __name__ == "__main__":
    main()
