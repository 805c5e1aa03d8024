#!/usr/bin/env python
"""Grad-CAM seconds per image on this CPU: warm, one image, ResNet18, DenseNet121 and both side by side
(as the Compare page draws them), with the faithfulness score off and on; plus the audit's lung mask.

    python bench/cam_bench.py [--repeats 7] [--threads N] [--data-dir ../shared/data/chest_xray]
Targets (issue 13), at 224 px, faithfulness off: ResNet18 <= 0.10 s, DenseNet121 <= 0.25 s, both <= 0.35 s.
Two model sets: the bundled trained models at their own input size (224 px since issue 13; 128 / 112 px
before), and the same architectures at 224 px (random weights: speed does not depend on the values).
Each figure is the median of ``--repeats`` timed runs after one warm-up run: wall seconds, and the process's
CPU seconds (all threads) in brackets. On a host shared with other work the wall time swells with the load;
CPU seconds / threads is close to the wall time this work would take on idle cores.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from pneumo_core.data.images import load_grayscale
from pneumo_core.explain.cams import explain
from pneumo_core.explain.lungs import lung_mask
from pneumo_core.inference.predictors import Predictor
from pneumo_core.models.checkpoints import Checkpoint, CheckpointMeta
from pneumo_core.models.networks import build_model
from pneumo_core.models.sources import bundled_source

TARGETS = {"resnet18": 0.10, "densenet121": 0.25, "both": 0.35}


def at_224(arch: str) -> Predictor:
    torch.manual_seed(0)
    meta = CheckpointMeta(arch=arch, task="binary", classes=["NORMAL", "PNEUMONIA"], n_outputs=1, image_size=224)
    return Predictor(Checkpoint(build_model(arch, 1).state_dict(), meta))


def median_seconds(fn, repeats: int) -> tuple[float, float]:
    """Median (wall, CPU) seconds of ``fn`` after a warm-up call."""
    fn()  # warm-up
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice); 1 is steadier "
                                                           "on a host busy with other work")
    ap.add_argument("--data-dir", default=str(Path(__file__).resolve().parent.parent.parent / "shared/data/chest_xray"))
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    gray = load_grayscale(sorted((Path(a.data_dir) / "test" / "PNEUMONIA").glob("*.jpeg"))[0])
    print(f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
          f"load average {os.getloadavg()[0]:.1f} at start; median of {a.repeats} warm runs, one image, Grad-CAM")
    src = bundled_source()
    sets = {
        "bundled": {arch: Predictor(src.load(f"binary/{arch}")) for arch in ("resnet18", "densenet121")},
        "224 px": {arch: at_224(arch) for arch in ("resnet18", "densenet121")},
    }
    print(f"{'models':<10}{'model':<24}{'faithfulness off':>20}{'on':>20}{'target (off)':>16}")
    for label, preds in sets.items():
        rows = {arch: p for arch, p in preds.items()}
        for name in ("resnet18", "densenet121", "both"):
            group = list(rows.values()) if name == "both" else [rows[name]]
            size = " + ".join(f"{p.prep.image_size}" for p in group)
            off = median_seconds(lambda: [explain(p, gray, "gradcam", faithfulness=False) for p in group], a.repeats)
            on = median_seconds(lambda: [explain(p, gray, "gradcam", faithfulness=True) for p in group], a.repeats)
            target = (f"<= {TARGETS[name]:.2f}" + (" ok" if off[0] <= TARGETS[name] else " missed")
                      if label == "224 px" else "")
            print(f"{label:<10}{name + f' ({size} px)':<24}{off[0]:>9.3f} s ({off[1]:.3f}){on[0]:>9.3f} s ({on[1]:.3f})"
                  f"{target:>16}")
    t = median_seconds(lambda: lung_mask(gray), a.repeats)
    print(f"lung mask (explain/lungs.py, {gray.shape[0]} px): {t[0]:.3f} s ({t[1]:.3f})")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
