#!/usr/bin/env python
"""The same tiny training run with 1 process and with N (torchrun, gloo on CPU): wall time and img/s.

    python bench/distributed_bench.py [--nproc 2] [--limit 400] [--epochs 3] [--image-size 64]

Each run gets cores / processes threads (OMP_NUM_THREADS), so both use the whole CPU; a third row, one
process with one thread, separates what the processes gain from what threading costs. Data-parallel
training splits every epoch's images over the processes; on a 2-core CPU the processes share the same two
cores, so no speed-up is expected there (gradient all-reduce and process start-up only add time). On N
GPUs (one process each) an epoch takes about 1/N of the time, minus communication.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        name = next(ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        name = platform.processor() or "unknown CPU"
    return f"{name}, {os.cpu_count()} cores"


def _threads(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // nproc)


def _run(nproc: int, args: argparse.Namespace, out: Path, cache: Path, epochs: int,
         threads: int | None = None) -> tuple[float, dict]:
    train = [str(ROOT / "train.py"), "--task", "binary", "--arch", "custom_cnn", "--init", "scratch",
             "--data-dir", args.data_dir, "--out", str(out), "--limit", str(args.limit), "--image-size",
             str(args.image_size), "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", "1e-3"]
    cmd = [sys.executable, *train] if nproc == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc), *train]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads or _threads(nproc)), "PNEUMO_CACHE": str(cache),
           "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=3600)
    wall = time.perf_counter() - t0
    return wall, json.loads((out / "runs/binary/custom_cnn_seed0/metrics.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/chest_xray"))
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--limit", type=int, default=400)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    a = ap.parse_args()
    from pneumo_core.data.datasets import for_task, kermany_splits
    from pneumo_core.data.tasks import get_task
    from pneumo_core.training.inputs import subset

    n_train = len(subset(for_task(kermany_splits(a.data_dir)["train"], get_task("binary")), a.limit, 0))
    tmp = Path(tempfile.mkdtemp(prefix="distributed_bench_"))
    try:
        _run(1, a, tmp / "warm", tmp / "cache", epochs=0)  # decode the images once, outside the timings
        print(f"{_cpu()}, load average {os.getloadavg()[0]:.1f}; custom_cnn, {n_train} training images at "
              f"{a.image_size} px, {a.epochs} epochs, batch {a.batch_size} per process")
        # the last row: one process with one thread, to tell process parallelism from threading overhead
        for nproc, threads in ((1, _threads(1)), (a.nproc, _threads(a.nproc)), (1, 1)):
            wall, m = _run(nproc, a, tmp / f"p{nproc}t{threads}", tmp / "cache", a.epochs, threads)
            ips = n_train * m["epochs_run"] / m["wall_s"]
            print(f"{nproc} process(es) x {threads} thread(s): {wall:.1f} s wall (start-up included), "
                  f"run {m['wall_s']:.1f} s, {ips:.0f} training img/s, world_size {m.get('world_size', 1)}, "
                  f"test AUROC {m['test']['auroc']:.3f}")
        print("On a 2-core CPU no speed-up is expected: the processes share the same two cores (a busy machine "
              f"makes the figures noisy: load average now {os.getloadavg()[0]:.1f}).")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
