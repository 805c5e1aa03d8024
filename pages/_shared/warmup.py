"""Warm-up at launch: the bundled samples' verdicts and default heatmaps computed once, in the background,
into the very caches the pages read, so no visitor's "Try a sample" runs a model.

The top of ``pages/_shared`` (it uses ``models`` and ``images``). ``pneumo_core.serving.memory.warm_up``
imports the heavy libraries first; then this fills, for each bundled sample, its decoded image, every bundled model's
probabilities (Predict's verdicts) and the OOD gate's score, the best binary model's Grad-CAM (Predict's
heatmap) and the Compare pair's (Compare's maps). A visitor who asks for one of these while it is being
computed waits for that entry (``st.cache_data`` computes a key once), never computes it again.
"""
from __future__ import annotations

import os
import threading
import time

from pages._shared.images import decoded, digest, non_xray_images, read_image_file, sample_images
from pneumo_core.serving.memory import give_back_freed_memory, give_way, page_run, serving, warm_up
from pages._shared.models import BUNDLED_LABEL, cam, member_keys, model_keys, model_probs, ood_score, predictor
from pneumo_core.files import ASSETS

#: the pair Compare opens with, and the method both pages open with
COMPARE_PAIR = ("binary/resnet18", "binary/densenet121")
DEFAULT_METHOD = "gradcam"

_DONE = threading.Event()
_STARTED = False
_LOCK = threading.Lock()
STATS: dict[str, float] = {}


def precompute_samples() -> dict[str, float]:
    """Fill the caches for every bundled sample; returns counts and seconds (for the bench and tests)."""
    from pneumo_core.evaluation import selection
    from pneumo_core.inference.verdicts import zoo_verdicts
    from pneumo_core.models.sources import bundled_source

    t0 = time.perf_counter()
    source = bundled_source()
    keys = model_keys(source, best_only=True)
    best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    cam_keys = list(dict.fromkeys(([best.key] if best is not None and best.key in keys else [])
                                  + [k for k in COMPARE_PAIR if k in keys]))
    from pneumo_core.explain.cams import cam_grid

    for k in cam_keys:  # Compare's "grid is 7 x 7 cells" line: one forward pass per model, remembered
        cam_grid(predictor(source, BUNDLED_LABEL, k))

    def step(fn, *args):
        """One cache entry, after any visitor's page run under way (with two workers warming up, both cores
        are busy) and never alongside an import of the warm-up thread (see memory.page_run)."""
        give_way()
        with page_run():
            return fn(*args)

    def warm(path, prob_keys: list[str]) -> tuple[str, object]:
        """One image's decoding, OOD score, ``prob_keys``' probabilities and the heatmap models' maps."""
        data = read_image_file(path)
        h, gray = digest(data), step(decoded, data, path.name)
        step(ood_score, h, gray)
        for k in prob_keys:
            step(model_probs, source, BUNDLED_LABEL, k, h, gray)
        for k in cam_keys:
            step(cam, source, BUNDLED_LABEL, k, h, DEFAULT_METHOD, None, gray)
        return h, gray

    prob_keys = keys + member_keys(source, ASSETS, keys)  # and a seed ensemble's other seeds
    samples = sample_images()
    for path in samples:
        h, gray = warm(path, prob_keys)
    if samples:  # the results table's rules and thresholds, read once (Predict's verdict rows ask them every run)
        zoo_verdicts(ASSETS, set(prob_keys), lambda k: model_probs(source, BUNDLED_LABEL, k, h, gray))
    others = non_xray_images()
    for path in others:  # the lesson's cat: its verdicts and heatmaps from the heatmap models (step 2)
        warm(path, cam_keys)
    n_probs, n_cams = len(samples) * len(prob_keys), len(samples) * len(cam_keys)
    return {"samples": len(samples), "probabilities": n_probs, "heatmaps": n_cams, "non_xrays": len(others),
            "seconds": time.perf_counter() - t0}


def _run() -> None:
    thread = warm_up()
    if thread is not None:
        thread.join()  # the imports first: they take the gate alone
    try:
        STATS.update(precompute_samples())
    except Exception:  # noqa: BLE001 - a page computes what the warm-up could not, and names any problem
        pass
    finally:
        give_back_freed_memory()  # the forward and backward passes' buffers, returned to the system
        _DONE.set()


def start(server_only: bool = True) -> bool:
    """Once per process, in the background: the imports (``memory.warm_up``), then :func:`precompute_samples`.
    False outside a running server with ``server_only`` (AppTest, a plain import), and with ``PNEUMO_WARM_UP=0``
    (``serve``'s greeter, which answers only the first seconds' pages)."""
    global _STARTED
    if (server_only and not serving()) or os.environ.get("PNEUMO_WARM_UP") == "0":
        return False
    with _LOCK:
        if not _STARTED:
            _STARTED = True
            threading.Thread(target=_run, name="pneumo-precompute", daemon=True).start()
    return True


def done() -> bool:
    """Whether the warm-up has finished (for the bench and the sidebar)."""
    return _DONE.is_set()
