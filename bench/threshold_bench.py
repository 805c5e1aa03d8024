#!/usr/bin/env python
"""Evaluation speed: threshold queries and bootstrap CIs.

    python bench/threshold_bench.py
Prints build time and milliseconds per threshold query at 1k / 100k / 1M predictions (ThresholdSweep.at vs
sklearn.metrics.confusion_matrix per move), and the time of 1000 stratified bootstrap resamples of 624
predictions (AUROC, sensitivity, specificity, F1, ECE).
Targets (issue 3): <= 20 ms per query at 1,000,000 predictions; bootstrap <= 2 s.
"""
from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import confusion_matrix

from pneumo_core.evaluation.bootstrap import bootstrap_binary  # noqa: E402
from pneumo_core.evaluation.thresholds import ThresholdSweep  # noqa: E402


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"{'n':>10} {'build ms':>10} {'sweep ms/query':>15} {'sklearn ms/query':>17} {'speed-up':>9}")
    for n in (1_000, 100_000, 1_000_000):
        y = rng.integers(0, 2, n)
        p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
        taus = rng.uniform(0, 1, 200)
        t0 = time.perf_counter()
        sweep = ThresholdSweep(y, p)
        build = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        for t in taus:
            sweep.at(t)
        ours = (time.perf_counter() - t0) * 1e3 / len(taus)
        k = 20 if n < 1_000_000 else 5
        t0 = time.perf_counter()
        for t in taus[:k]:
            confusion_matrix(y, (p >= t).astype(int), labels=[0, 1])
        sk = (time.perf_counter() - t0) * 1e3 / k
        print(f"{n:>10,} {build:>10.1f} {ours:>15.4f} {sk:>17.2f} {sk / ours:>8.0f}x")
    y = np.array([0] * 234 + [1] * 390)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    t0 = time.perf_counter()
    ci = bootstrap_binary(y, p, 0.5, n_boot=1000, seed=0)
    dt = time.perf_counter() - t0
    print(f"bootstrap: 1000 stratified resamples of 624 predictions (AUROC, sensitivity, specificity, F1, ECE): "
          f"{dt:.2f} s; AUROC {ci['auroc']['value']:.3f} [{ci['auroc']['low']:.3f}, {ci['auroc']['high']:.3f}]")


if __name__ == "__main__":
    main()
