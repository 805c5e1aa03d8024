"""Class activation maps through pytorch-grad-cam: raw and normalised maps, overlays, faithfulness.

Each call builds its own CAM object inside a ``with`` block (its hooks are removed on exit) and holds
the predictor's lock, because hooks on a shared model would see another session's forward pass.
"""
from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import cv2
import numpy as np
import torch
from pytorch_grad_cam import (
    AblationCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
    XGradCAM,
)
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.utils.image import show_cam_on_image

from pneumo_core.errors import PneumoError
from pneumo_core.inference.predictors import Predictor
from pneumo_core.models.networks import cam_layer_of

#: name -> (class, label, slow)
METHODS: dict[str, tuple[type, str, bool]] = {
    "gradcam": (GradCAM, "Grad-CAM", False),
    "gradcam++": (GradCAMPlusPlus, "Grad-CAM++", False),
    "hirescam": (HiResCAM, "HiResCAM", False),
    "xgradcam": (XGradCAM, "XGrad-CAM", False),
    "layercam": (LayerCAM, "LayerCAM", False),
    "eigencam": (EigenCAM, "EigenCAM (class-agnostic)", False),
    "scorecam": (ScoreCAM, "Score-CAM (slow)", True),
    "ablationcam": (AblationCAM, "Ablation-CAM (slow)", True),
}


class LogitTarget:
    """Output to explain: a class logit; for a single-logit binary model class 0 is the negated logit.
    ``cls=None``: the predicted class, read off the CAM's own forward pass (and kept in :attr:`cls`)."""

    def __init__(self, cls: int | None, single_logit: bool) -> None:
        self.cls, self.single = cls, single_logit

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.cls is None:
            self.cls = predicted_class(out, self.single)
        if self.single:
            return out[..., 0] if self.cls == 1 else -out[..., 0]
        return out[..., self.cls]


def predicted_class(logits: torch.Tensor, single_logit: bool) -> int:
    """The argmax of one image's probabilities from its logits: sigmoid(logit) > 0.5, or the largest logit."""
    logits = logits.reshape(-1)
    return int(logits[0].item() > 0) if single_logit else int(logits.argmax().item())


class ProbTarget:
    """The probability of a class (for the faithfulness score)."""

    def __init__(self, cls: int, single_logit: bool) -> None:
        self.cls, self.single = cls, single_logit

    def __call__(self, out: torch.Tensor) -> torch.Tensor:
        if self.single:
            p = torch.sigmoid(out[..., 0])
            return p if self.cls == 1 else 1 - p
        return torch.softmax(out, dim=-1)[..., self.cls]


@dataclass
class CamResult:
    raw: np.ndarray  # (S, S) non-negative map at input resolution, in the model's own units
    normalised: np.ndarray  # (S, S) in [0, 1]
    target: int
    class_name: str
    method: str
    probs: np.ndarray
    degenerate: bool
    message: str = ""
    faithfulness: float | None = None

    @property
    def ok(self) -> bool:
        return not self.degenerate


def _single_logit(predictor: Predictor) -> bool:
    return predictor.task.n_outputs == 1 and predictor.meta.n_outputs == 1


@contextmanager
def _gradients_from(layer: torch.nn.Module, model: torch.nn.Module) -> Iterator[None]:
    """Backpropagate from the output down to ``layer``'s output only: the weights are frozen and the
    layer's output becomes the graph's leaf, so nothing below it is recorded or differentiated. The
    gradient a CAM reads (d score / d activation at the layer) is the same; at 224 px a ResNet18 Grad-CAM
    costs about one forward pass instead of a forward and a full backward."""
    def leaf(module, inputs, output):  # a leaf that requires grad, cloned so in-place ops after it work
        return output.detach().requires_grad_(True).clone() if torch.is_grad_enabled() else None

    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    hook = layer.register_forward_hook(leaf, prepend=True)  # before the CAM library's own hook
    try:
        yield
    finally:
        hook.remove()
        for p in frozen:
            p.requires_grad_(True)


class Stopped(PneumoError):
    """A CAM stopped before it finished (its visitor pressed Stop)."""


@contextmanager
def _stoppable(model: torch.nn.Module, stop: threading.Event | None) -> Iterator[None]:
    """Every forward pass of ``model`` first checks ``stop``: a slow method's next batch raises :class:`Stopped`
    once it is set. Inside the predictor's lock only: no other thread's pass can see the hook."""
    def check(module, inputs) -> None:
        if stop.is_set():
            raise Stopped("stopped before it finished")

    hook = model.register_forward_pre_hook(check) if stop is not None else None
    try:
        yield
    finally:
        if hook is not None:
            hook.remove()


def explain(predictor: Predictor, gray: np.ndarray, method: str = "gradcam", target: int | None = None,
            faithfulness: bool = True, stop: threading.Event | None = None) -> CamResult:
    """A CAM for ``target`` (default: the predicted class) on one grayscale image; its ``probs`` come from
    the CAM's own forward pass (the eager model, like :meth:`Predictor.predict_grays`). With ``stop``, it
    raises :class:`Stopped` at its next forward pass once ``stop`` is set (a slow method: its next batch)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    cls_, label, _ = METHODS[method]
    if target is not None and not 0 <= int(target) < len(predictor.classes):
        raise ValueError(f"class index {target} out of range for {predictor.classes}")
    x = predictor.tensor(gray).unsqueeze(0).to(predictor.device)
    single = _single_logit(predictor)
    goal = LogitTarget(None if target is None else int(target), single)
    with predictor.lock:
        model = predictor.model
        layer = cam_layer_of(model, predictor.meta.arch)
        raw_maps: list[np.ndarray] = []
        with torch.enable_grad(), _stoppable(model, stop), cls_(model=model, target_layers=[layer]) as cam:
            original = cam.get_cam_image

            def recording(*args, **kwargs):
                out = original(*args, **kwargs)
                raw_maps.append(np.maximum(np.asarray(out, dtype=np.float32), 0))
                return out

            cam.get_cam_image = recording  # keep the map before the library min-max scales it
            if method == "scorecam":
                cam.batch_size = 32
            if cam.uses_gradients:  # the target reads the class off the CAM's own forward pass
                with _gradients_from(layer, model):
                    normalised = cam(input_tensor=x, targets=[goal])[0]
                logits = cam.outputs.detach().float().cpu()
            else:  # masked / ablated passes call the target: the class is fixed first
                logits = predictor.logits(x)
                if goal.cls is None:
                    goal.cls = predicted_class(logits[0], single)
                normalised = cam(input_tensor=x, targets=[goal])[0]
            tgt = goal.cls
            score = None
            if faithfulness:
                score = float(CamMultImageConfidenceChange()(x, normalised[None], [ProbTarget(tgt, single)], model)[0])
        model.zero_grad(set_to_none=True)
    probs = predictor.probs_of(logits)[0]
    s = predictor.prep.image_size
    raw = (cv2.resize(raw_maps[0][0], (s, s), interpolation=cv2.INTER_LINEAR) if raw_maps
           else np.zeros((s, s), np.float32))
    raw = np.maximum(raw, 0)
    degenerate = ((not np.isfinite(raw).all())
                  or float(raw.max() - raw.min()) <= 1e-8 * max(1.0, float(np.abs(raw).max())))
    message = f"no signal for {predictor.classes[tgt]}: the map is flat" if degenerate else ""
    if degenerate:
        normalised = np.zeros((s, s), np.float32)
        raw = np.nan_to_num(raw)
    return CamResult(raw.astype(np.float32), np.asarray(normalised, np.float32), tgt, predictor.classes[tgt], label,
                     probs, degenerate, message, score)


CEILING = 0.99  # from this probability of the class, the faithfulness score cannot show a rise
NEAR_ZERO = 0.05  # a confidence change smaller than this (either way) is "hardly any"

FAITHFULNESS_HELP = ("How much the model's confidence in the class changes when the image is multiplied by the "
                     "heatmap (keeping only the hot regions). Positive: the hot regions alone support the class; "
                     "negative: they do not. When the model is already near certain (P ≥ "
                     f"{CEILING}), the confidence cannot rise: a score near 0 then says nothing (the ceiling).")


def at_ceiling(p_class: float, change: float, ceiling: float = CEILING) -> bool:
    """True when the model is already near certain of the class (``p_class`` ≥ ``ceiling``) and the change is
    not a clear drop: the score cannot show whether the heat alone supports the class."""
    return p_class >= ceiling and change > -NEAR_ZERO


def faithfulness_sentence(change: float, p_class: float, class_name: str, ceiling: float = CEILING) -> str:
    """The faithfulness score (:class:`CamMultImageConfidenceChange`: P(class | image × map) − P(class | image))
    in one sentence, saying when the model's certainty leaves no room for the score to show anything."""
    after = f"from {p_class:.3f} to {p_class + change:.3f} ({change:+.3f})"
    if not np.isfinite(change):
        return f"No faithfulness score for {class_name}: the map is flat."
    if at_ceiling(p_class, change, ceiling):
        return (f"At the ceiling: the model is already {p_class:.3f} sure of {class_name}, so keeping only the heat "
                f"can raise that by at most {1 - p_class:.3f}; the change ({change:+.3f}) cannot show whether the "
                "map is faithful.")
    if change >= NEAR_ZERO:
        return f"Keeping only the heat raises the confidence in {class_name} {after}: the hot regions alone support it."
    if change <= -NEAR_ZERO:
        return (f"Keeping only the heat lowers the confidence in {class_name} {after}: the hot regions alone do not "
                "support it.")
    return f"Keeping only the heat hardly changes the confidence in {class_name} ({after})."


def cam_grid(predictor: Predictor) -> int:
    """Cells per side of the CAM layer's feature map at the model's input size (e.g. 7 for a 224-px
    ResNet18): how coarse the heatmap really is before it is smoothed up to the image."""
    if getattr(predictor, "_cam_grid", None) is None:
        layer = cam_layer_of(predictor.model, predictor.meta.arch)
        seen: dict[str, int] = {}
        with predictor.lock:
            def record(module, inputs, output) -> None:  # a hook that returned a value would replace the output
                seen["side"], seen["channels"] = int(output.shape[-1]), int(output.shape[1])

            hook = layer.register_forward_hook(record)
            try:
                s = predictor.prep.image_size
                predictor.logits(torch.zeros(1, predictor.prep.channels, s, s))
            finally:
                hook.remove()
        predictor._cam_grid, predictor._cam_channels = seen["side"], seen["channels"]
    return predictor._cam_grid


def cam_channels(predictor: Predictor) -> int:
    """Channels of the CAM layer's output: how many masked (Score-CAM) or ablated (Ablation-CAM) copies of the
    image a slow method runs through the model."""
    cam_grid(predictor)
    return predictor._cam_channels


SLOW_CAP_S = 90.0  # a slow method expected to take longer than this here is refused (the page waits for it)
TIMING_BATCH = 8  # images in the one timed batch a slow method's estimate extrapolates from


def seconds_per_image(predictor: Predictor) -> float:
    """Seconds one image's forward pass takes in a batch, timed once per loaded model on one batch of
    :data:`TIMING_BATCH` (the masked / ablated passes of the slow methods run in batches too)."""
    if getattr(predictor, "_image_seconds", None) is None:
        s = predictor.prep.image_size
        x = torch.zeros(TIMING_BATCH, predictor.prep.channels, s, s)
        predictor.logits(x[:1])  # warm-up: the first pass allocates
        start = time.perf_counter()
        predictor.logits(x)
        predictor._image_seconds = (time.perf_counter() - start) / TIMING_BATCH
    return predictor._image_seconds


@dataclass(frozen=True)
class Cost:
    """What a CAM method will cost on one image with one model, before it runs."""
    method: str
    passes: int  # forward passes of one image (the slow methods: one per channel of the CAM layer)
    seconds: float  # expected, from the timed batch
    allowed: bool  # False above the cap: not run
    message: str  # one line for the page


def method_cost(predictor: Predictor, method: str, cap: float | None = None) -> Cost:
    """The expected time of ``method`` on one image: a fast method is about one forward and backward pass; a
    slow one (Score-CAM, Ablation-CAM) one forward pass per channel of the CAM layer, extrapolated from one timed
    batch (:func:`seconds_per_image`). Above ``cap`` seconds (default :data:`SLOW_CAP_S`) it is refused with a
    one-line reason."""
    cap = SLOW_CAP_S if cap is None else cap
    _, label, slow = METHODS[method]
    arch = predictor.meta.arch
    if not slow:
        return Cost(method, 1, 2 * seconds_per_image(predictor), True, f"{label} on {arch}: about one pass.")
    n = cam_channels(predictor)
    seconds = n * seconds_per_image(predictor) + 2 * seconds_per_image(predictor)
    what = "masked" if method == "scorecam" else "ablated"
    head = f"{label.split(' (')[0]} on {arch} runs {n} {what} copies of the image: about {seconds:.0f} s here"
    if seconds > cap:
        return Cost(method, n, seconds, False, f"{head}, above the {cap:.0f} s limit: not run. Choose a faster method "
                                               "or a smaller model.")
    return Cost(method, n, seconds, True, f"{head}.")


def images_cost(predictors: list[Predictor], method: str, images: int, repeats: int = 1,
                cap: float | None = None) -> Cost:
    """The expected time of ``method`` over ``images`` images with each of ``predictors``: :func:`method_cost`
    per map, added up; ``repeats`` maps per image and model (2 with the audit's sanity check, which explains a
    randomised copy too). Above ``cap`` seconds (default :data:`SLOW_CAP_S`) it is refused, saying how many
    images would fit."""
    cap = SLOW_CAP_S if cap is None else cap
    costs = [method_cost(p, method, cap=float("inf")) for p in predictors]
    per_image = repeats * sum(c.seconds for c in costs)
    seconds = images * per_image
    models = predictors[0].meta.arch if len(predictors) == 1 else f"{len(predictors)} models"
    head = f"{METHODS[method][1].split(' (')[0]} on {images} images with {models}: about {seconds:.0f} s here"
    passes = images * repeats * sum(c.passes for c in costs)
    if seconds > cap:
        fit = int(cap // per_image) if per_image > 0 else images
        return Cost(method, passes, seconds, False, f"{head}, above the {cap:.0f} s limit: not run. Choose at most "
                                                    f"{fit} images, fewer models or a smaller one.")
    return Cost(method, passes, seconds, True, f"{head}.")


@dataclass
class SlowRun:
    """A CAM computed in a background thread (a slow method: the page stays live), stoppable between its
    batches with :meth:`stop`. Read :attr:`result` or :attr:`error` once :attr:`done`."""
    method: str
    seconds: float  # expected (:func:`method_cost`)
    halt: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.perf_counter)
    thread: threading.Thread | None = None
    result: CamResult | None = None
    error: Exception | None = None

    @property
    def done(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()

    @property
    def stopped(self) -> bool:
        return isinstance(self.error, Stopped)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stop(self) -> None:
        self.halt.set()


def start_explain(predictor: Predictor, gray: np.ndarray, method: str, target: int | None = None,
                  seconds: float = float("nan")) -> SlowRun:
    """:func:`explain` (no faithfulness score) in a daemon thread; returns at once."""
    run = SlowRun(method, seconds)

    def work() -> None:
        try:
            run.result = explain(predictor, gray, method, target, faithfulness=False, stop=run.halt)
        except Exception as exc:  # noqa: BLE001 - handed to the page, which names it in one line
            run.error = exc

    run.thread = threading.Thread(target=work, name=f"pneumo-{method}", daemon=True)
    run.thread.start()
    return run


def shared_scale(raws: list[np.ndarray]) -> list[np.ndarray]:
    """Maps on one colour scale: each divided by the largest value over all of them."""
    top = max((float(r.max()) for r in raws), default=0.0)
    return [np.zeros_like(r) if top <= 0 else r / top for r in raws]


def own_scale(raw: np.ndarray) -> np.ndarray:
    lo, hi = float(raw.min()), float(raw.max())
    return np.zeros_like(raw) if hi <= lo else (raw - lo) / (hi - lo)


COLORMAPS = {"jet": cv2.COLORMAP_JET, "inferno": cv2.COLORMAP_INFERNO, "viridis": cv2.COLORMAP_VIRIDIS,
             "turbo": cv2.COLORMAP_TURBO, "hot": cv2.COLORMAP_HOT}


def overlay(gray: np.ndarray, heat: np.ndarray, opacity: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """An RGB uint8 picture: the X-ray with ``heat`` ([0, 1], any size) drawn over it."""
    h, w = gray.shape
    if heat.shape != gray.shape:
        heat = cv2.resize(heat.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    rgb = np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    return show_cam_on_image(rgb, np.clip(heat, 0, 1).astype(np.float32), use_rgb=True,
                             colormap=COLORMAPS.get(colormap, cv2.COLORMAP_JET), image_weight=1 - opacity)
