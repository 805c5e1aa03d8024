#!/usr/bin/env python
"""Server time per threshold-slider move on the Thresholds page (AppTest), and cold start.

    python bench/app_bench.py
Targets (issue 6): <= 150 ms per move on the 624 test predictions, <= 300 ms on 100,000; cold start of the
embedded default <= 5 s to the first page rendered. The 100,000-prediction case writes a synthetic
prediction set into a temporary folder and points the app at it as a local folder.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from streamlit.testing.v1 import AppTest  # noqa: E402

from pneumo_core.evaluation.predictions import make_table, write_predictions  # noqa: E402


def slider_ms(state: dict, moves: int = 10) -> float:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    at.switch_page("pages/thresholds.py")
    at.run()
    times = []
    for t in np.linspace(0.1, 0.9, moves):
        t0 = time.perf_counter()
        at.slider(key="threshold").set_value(float(t)).run()
        times.append((time.perf_counter() - t0) * 1e3)
        assert not at.exception, at.exception
    return statistics.median(times)


def synthetic(folder: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        y = rng.integers(0, 2, n)
        p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
        t = make_table([f"{split}/{i}" for i in range(n)], y, np.stack([1 - p, p], 1), ["NORMAL", "PNEUMONIA"],
                       split=split, model="synthetic", task="binary", seed=0)
        write_predictions(t, folder / "predictions" / "binary" / f"synthetic_seed0_{split}.csv")
    (folder / "checkpoints").mkdir(exist_ok=True)


def main() -> None:
    t0 = time.perf_counter()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    cold = time.perf_counter() - t0
    print(f"cold start (first page rendered, embedded default): {cold:.2f} s")
    print(f"slider move, 624 test predictions: {slider_ms({}):.0f} ms (median server time)")
    with tempfile.TemporaryDirectory() as d:
        synthetic(Path(d), 100_000)
        ms = slider_ms({"source_kind": "Local checkpoints folder", "local_dir": d})
        print(f"slider move, 100,000 predictions: {ms:.0f} ms (median server time)")


if __name__ == "__main__":
    main()
