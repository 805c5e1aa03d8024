#!/usr/bin/env python
"""What a warm app server's memory is made of (issue 25): one process doing, step by step, what a warm server
has done, printing its resident memory after each step (RSS, anonymous, file-backed; MB) and the CPU-s it took.

    python -m bench.memory_parts

Steps: Streamlit's server, pandas, torch, torchvision (which imports torch._dynamo), pytorch-grad-cam (which imports
scikit-learn and SciPy), the rest the pages import; the bundled models loaded; one forward pass each (oneDNN's
buffers); the OOD gate; a Grad-CAM of each heatmap model; the twelve samples decoded. File-backed pages are the
libraries' code and data read from disk: shared with every process mapping the same files and dropped by the kernel
under memory pressure; anonymous pages are this process's own.
"""
from __future__ import annotations

import importlib
import resource
import time


def mem() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for ln in f:
            key = ln.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(ln.split()[1]) / 1024
    return out


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    from pneumo_core.serving.memory import HEAVY, passive_threads

    passive_threads()
    last, c = mem(), cpu()
    print(f"{'step':<44} {'CPU-s':>6} {'RSS':>6} {'+':>5} {'anon':>6} {'+':>5} {'file':>6} {'+':>5}  (MB)")
    print(f"{'python':<44} {'':>6} {last['VmRSS']:6.0f} {'':>5} {last['RssAnon']:6.0f} {'':>5} {last['RssFile']:6.0f}")

    def step(name: str, fn) -> object:
        nonlocal last, c
        out = fn()
        now, c2 = mem(), cpu()
        print(f"{name:<44} {c2 - c:6.2f} {now['VmRSS']:6.0f} {now['VmRSS'] - last['VmRSS']:+5.0f} "
              f"{now['RssAnon']:6.0f} {now['RssAnon'] - last['RssAnon']:+5.0f} {now['RssFile']:6.0f} "
              f"{now['RssFile'] - last['RssFile']:+5.0f}", flush=True)
        last, c = now, c2
        return out

    def imp(*names: str):
        return lambda: [importlib.import_module(n) for n in names]

    step("import streamlit's server", imp("streamlit.web.cli", "streamlit.web.bootstrap"))
    step("import pandas", imp("pandas"))
    step("import torch", imp("torch"))
    step("import torch._dynamo (torchvision.ops needs it)", imp("torch._dynamo"))
    step("import torchvision", imp("torchvision"))
    step("import sklearn.decomposition (grad-cam needs it)", imp("sklearn.decomposition"))
    step("import pytorch_grad_cam", imp("pytorch_grad_cam"))
    step("import the rest of memory.HEAVY", imp(*HEAVY))
    step("pages' modules", imp("pages._shared.warmup", "pages._shared.predictions"))

    import numpy as np

    from pneumo_core.data.images import load_grayscale
    from pneumo_core.evaluation import selection
    from pneumo_core.explain.cams import explain
    from pneumo_core.explain.ood import default_gate
    from pneumo_core.files import ASSETS
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import bundled_source
    from pages._shared.images import sample_images
    from pages._shared.warmup import COMPARE_PAIR, DEFAULT_METHOD

    source = bundled_source()
    keys = [r.key for r in source.list() if r.seed is None]
    models = step(f"load the {len(keys)} bundled models", lambda: {k: Predictor(source.load(k)) for k in keys})
    weights = sum(t.numel() * t.element_size() for m in models.values() for t in m.model.state_dict().values())
    print(f"    (their tensors: {weights / 2**20:.0f} MB)")
    samples = sample_images()
    grays = step(f"decode the {len(samples)} samples", lambda: [load_grayscale(p) for p in samples])
    print(f"    (their arrays: {sum(g.nbytes for g in grays) / 2**20:.1f} MB)")
    step("one forward pass of each model", lambda: [m.predict_grays(grays[:1]) for m in models.values()])
    step("every sample through every model", lambda: [m.predict_grays([g]) for m in models.values() for g in grays])
    gate = step("the OOD gate, one image", lambda: (g := default_gate()) and g.score(grays[:1]))
    best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    cam_keys = list(dict.fromkeys([best.key, *COMPARE_PAIR]))
    step(f"Grad-CAM of {len(cam_keys)} models, one image",
         lambda: [explain(models[k], grays[0], DEFAULT_METHOD, None, faithfulness=False) for k in cam_keys])
    step("Grad-CAM of those models, every sample",
         lambda: [explain(models[k], g, DEFAULT_METHOD, None, faithfulness=False) for k in cam_keys for g in grays])
    from pneumo_core.serving.memory import give_back_freed_memory

    step("malloc_trim", give_back_freed_memory)
    del gate, np
    print(time.strftime("%H:%M:%S"))


if __name__ == "__main__":
    main()
