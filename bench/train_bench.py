#!/usr/bin/env python
"""Local training speed: a binary model from nothing to test AUROC >= 0.95 within 20 minutes on this CPU.

    python bench/train_bench.py [--epochs 2] [--head-epochs 3] [--freeze-fraction 0.4] [--out /tmp/train_bench]
Prints wall time (image decoding included; the decoded-array cache is cleared first), peak memory and test AUROC.
Recipe: EfficientNet-Lite0 with its packaged ImageNet weights, head-only epochs from cached pooled
features, then fine-tuning with the first stages frozen, bf16 autocast on CPU.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from pneumo_core.training.loop import TrainConfig, train  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/chest_xray"))
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--head-epochs", type=int, default=3)
    ap.add_argument("--freeze-fraction", type=float, default=0.4)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    out = Path(a.out or tempfile.mkdtemp(prefix="train_bench_"))
    cache = out / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    cfg = TrainConfig(task="binary", arch="efficientnet_lite0", init="imagenet", seed=0, data_dir=a.data_dir,
                      out=str(out), image_size=224, head_epochs=a.head_epochs, epochs=a.epochs,
                      freeze_fraction=a.freeze_fraction, cache_dir=str(cache))
    t0 = time.perf_counter()
    r = train(cfg)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wall time {wall / 60:.1f} min, peak memory {peak:.0f} MiB, test AUROC {r['test']['auroc']:.4f}, "
          f"test accuracy {r['test']['accuracy']:.4f} (target: AUROC >= 0.95 within 20 min)")


if __name__ == "__main__":
    main()
