"""Explanation quality, measured: where a CAM puts its mass, whether it depends on the weights, how
faithful it is, and whether two models agree.

- **Lung focus** (:func:`lung_focus`): the share of a map's positive mass inside the lung fields
  (:func:`pneumo_core.explain.lungs.lung_mask`, approximate) and on the image's border band (the outer 8 %
  of each side, where markers and text sit). A map spread evenly would put ``lung_area`` inside the lungs.
- **Sanity check** (:func:`randomized_copy`, :func:`randomization_spearman`; Adebayo et al., NeurIPS 2018,
  "Sanity checks for saliency maps"): the Spearman correlation between a model's map and the map of the
  same architecture with its last block and head re-initialised. A map that survives randomisation
  shows the image (edges), not what the model learned: low is good.
- **Deletion / insertion** (:func:`deletion_insertion`): the class probability as the most-heated pixels
  are blurred away, or put back onto a blurred image; areas under the curves.
- **Agreement** (:func:`agreement`): Spearman correlation and IoU of the top-20 % regions of two maps.

Every function except those that run a model is pure over arrays.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr

from pneumo_core.data.images import ImageSource, load_grayscale
from pneumo_core.data.preprocessing import resize_gray
from pneumo_core.errors import IncompatibleModelsError
from pneumo_core.explain.cams import CamResult, explain
from pneumo_core.explain.lungs import lung_mask
from pneumo_core.inference.predictors import Predictor
from pneumo_core.models.networks import get_arch

BORDER = 0.08  # the border band: this fraction of the image on each side
TOP = 0.2  # agreement: the hottest fraction of pixels compared by IoU

RANDOMIZATION_HELP = ("Randomisation: Spearman correlation between the map and the map of the same network with its "
                      "last block and head re-initialised; near 0 means the map depends on what the model learned.")

Progress = Callable[[int, int], None]


# ---------------------------------------------------------------- pure functions over maps

def to_shape(heat: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float32 map resized (bilinear) to ``shape`` = (H, W)."""
    heat = np.asarray(heat, dtype=np.float32)
    if heat.shape == tuple(shape):
        return heat
    return cv2.resize(heat, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def border_band(shape: tuple[int, int], fraction: float = BORDER) -> np.ndarray:
    """Boolean mask of the outer ``fraction`` of each side of an image of ``shape``."""
    h, w = shape
    bh, bw = max(1, round(h * fraction)), max(1, round(w * fraction))
    band = np.ones((h, w), bool)
    band[bh:h - bh, bw:w - bw] = False
    return band


def mass_share(heat: np.ndarray, region: np.ndarray) -> float:
    """The share of ``heat``'s positive mass inside ``region`` (heat resized to the region's shape);
    NaN for a map with no positive mass."""
    pos = np.maximum(to_shape(heat, region.shape), 0).astype(np.float64)
    total = pos.sum()
    return float(pos[region].sum() / total) if total > 0 else float("nan")


@dataclass(frozen=True)
class LungFocus:
    lung_share: float  # positive CAM mass inside the lung mask
    border_share: float  # positive CAM mass on the border band
    lung_area: float  # the mask's share of the image: lung_share of an evenly spread map


def lung_focus(heat: np.ndarray, lungs: np.ndarray, border: float = BORDER) -> LungFocus:
    """Where a map's mass lies, against a lung mask of the image (the map is resized to it); an empty
    mask (no lungs found) gives a NaN lung share."""
    lungs = np.asarray(lungs, bool)
    inside = mass_share(heat, lungs) if lungs.any() else float("nan")
    return LungFocus(inside, mass_share(heat, border_band(lungs.shape, border)), float(lungs.mean()))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (``b`` resized to ``a``'s shape).

    Undefined for a constant map; by convention 0.0 when only one of the two is constant (a flat map
    shares no ranking with a structured one) and NaN when both are.
    """
    a = np.asarray(a, dtype=np.float32)
    b = to_shape(b, a.shape)
    flat_a, flat_b = float(np.ptp(a)) <= 0, float(np.ptp(b)) <= 0
    if flat_a or flat_b:
        return float("nan") if flat_a and flat_b else 0.0
    return float(spearmanr(a.ravel(), b.ravel()).statistic)


def top_region(heat: np.ndarray, fraction: float = TOP) -> np.ndarray:
    """Boolean mask of the ``fraction`` hottest pixels (exactly that many; ties by position)."""
    flat = np.asarray(heat, dtype=np.float32).ravel()
    k = max(1, round(fraction * flat.size))
    out = np.zeros(flat.size, bool)
    out[np.argsort(-flat, kind="stable")[:k]] = True
    return out.reshape(np.shape(heat))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


@dataclass(frozen=True)
class Agreement:
    spearman: float
    iou: float  # of the two maps' top-``TOP`` regions


def agreement(a: np.ndarray, b: np.ndarray, shape: tuple[int, int] | None = None, top: float = TOP) -> Agreement:
    """How much two maps of one image agree, both resized to ``shape`` (default: the larger map's)."""
    if shape is None:
        shape = max(np.shape(a), np.shape(b), key=lambda s: s[0] * s[1])
    a, b = to_shape(a, shape), to_shape(b, shape)
    return Agreement(spearman(a, b), iou(top_region(a, top), top_region(b, top)))


def chance_iou(top: float = TOP) -> float:
    """The expected IoU of two independent random regions each covering ``top`` of the image: the overlap is
    top² and the union 2·top − top², so top / (2 − top) (0.11 for the hottest 20 %)."""
    if not 0 < top <= 1:
        raise ValueError(f"top must be in (0, 1], got {top}")
    return top / (2 - top)


AGREE_IOU = 0.5  # IoU of the hottest regions from which two maps "agree" (half their union shared)


def agreement_sentence(a: str, b: str, ag: Agreement, top: float = TOP) -> str:
    """One sentence saying whether two models' maps agree, worded from the numbers: "disagree" at or below
    the IoU two random regions reach by chance (:func:`chance_iou`) or with a negative Spearman, "agree" from
    :data:`AGREE_IOU` with a positive Spearman, "partly agree" between."""
    ref = chance_iou(top)
    if not (np.isfinite(ag.iou) and np.isfinite(ag.spearman)):
        return f"{a} and {b} cannot be compared: a map is flat."
    if ag.iou <= ref or ag.spearman <= 0:
        verb = "disagree"
    elif ag.iou >= AGREE_IOU:
        verb = "agree"
    else:
        verb = "partly agree"
    overlap = ("no more than" if ag.iou <= ref else "more than") + f" two random regions of that size would ({ref:.2f})"
    order = ("the opposite ordering" if ag.spearman < 0 else "unrelated orderings" if ag.spearman < 0.1
             else "a similar ordering" if ag.spearman >= 0.5 else "a weakly similar ordering")
    return (f"{a} and {b} {verb}: their hottest {top:.0%} overlap by IoU {ag.iou:.2f}, {overlap}; "
            f"Spearman {ag.spearman:.2f} over the whole maps ({order} of the pixels).")


@dataclass(frozen=True)
class Curve:
    kind: str  # "deletion" or "insertion"
    fractions: np.ndarray  # share of pixels changed, 0..1
    scores: np.ndarray  # the target class's probability at each step
    auc: float  # area under the curve (trapezoid over fractions)


def perturbation_steps(gray: np.ndarray, heat: np.ndarray, kind: str, steps: int = 20,
                       blur_sigma: float | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The images of a deletion or insertion curve: ``steps + 1`` copies of ``gray`` (at the map's size)
    with the hottest 0, 1/steps, ... 100 % of pixels blurred away (deletion) or restored onto a blurred
    copy (insertion). The blur (Gaussian, sigma ``size / 20``) keeps the images X-ray-like, not black."""
    if kind not in ("deletion", "insertion"):
        raise ValueError("kind must be 'deletion' or 'insertion'")
    s = heat.shape[0]
    img = resize_gray(gray, s)
    sigma = blur_sigma if blur_sigma is not None else s / 20
    blurred = cv2.GaussianBlur(img, (0, 0), sigma)
    order = np.argsort(-np.asarray(heat, np.float32).ravel(), kind="stable")
    fractions = np.linspace(0, 1, steps + 1)
    start, end = (img, blurred) if kind == "deletion" else (blurred, img)
    out = []
    for f in fractions:
        x = start.ravel().copy()
        idx = order[:round(f * order.size)]
        x[idx] = end.ravel()[idx]
        out.append(x.reshape(img.shape))
    return fractions, out


# ---------------------------------------------------------------- with a model

def randomized_layers(arch: str) -> tuple[str, ...]:
    """The modules re-initialised by the sanity check: the block holding the CAM layer, and the head."""
    return get_arch(arch).sanity_layers


def randomized_copy(predictor: Predictor, seed: int = 0) -> Predictor:
    """A copy of ``predictor`` whose last block and head are re-initialised (fixed seed; the global RNG is
    left as it was). Same preprocessing and classes; the original is untouched."""
    twin = copy.copy(predictor)
    with predictor.lock:
        twin.model = copy.deepcopy(predictor.model)
    twin.lock, twin._fast_lock = threading.RLock(), threading.Lock()
    twin._fast, twin.use_fast, twin._cam_grid = None, False, None
    twin.fingerprint = f"{predictor.fingerprint}-randomized{seed}"
    twin.name = f"{predictor.name} (randomized)"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name in randomized_layers(predictor.meta.arch):
            for m in twin.model.get_submodule(name).modules():
                if hasattr(m, "reset_parameters"):
                    m.reset_parameters()
    twin.model.eval()
    return twin


def randomization_spearman(predictor: Predictor, gray: np.ndarray, method: str = "gradcam",
                           randomized: Predictor | None = None, cam: CamResult | None = None) -> float:
    """Spearman correlation of ``predictor``'s map and its randomised copy's map for the same class."""
    cam = cam if cam is not None else explain(predictor, gray, method, faithfulness=False)
    randomized = randomized if randomized is not None else randomized_copy(predictor)
    other = explain(randomized, gray, method, target=cam.target, faithfulness=False)
    return spearman(cam.raw, other.raw)


def deletion_insertion(predictor: Predictor, gray: np.ndarray, heat: np.ndarray, target: int,
                       steps: int = 10) -> tuple[Curve, Curve]:
    """Deletion and insertion curves of a map (at the model's input size) for class ``target``.

    Both end on the same image for any map (all blurred, or all restored), so compare areas between
    maps or models on the same images. A fully blurred X-ray can itself look like pneumonia to a model:
    for that class the deletion curve may barely fall; the insertion curve reads better there."""
    curves = []
    for kind in ("deletion", "insertion"):
        fractions, images = perturbation_steps(gray, heat, kind, steps)
        scores = np.concatenate([predictor.predict_grays(images[i:i + 32])[:, target]
                                 for i in range(0, len(images), 32)])
        curves.append(Curve(kind, fractions, scores, float(np.trapezoid(scores, fractions))))
    return curves[0], curves[1]


@dataclass(frozen=True)
class ImageAudit:
    cam_class: str
    probability: float  # of cam_class
    lung_share: float
    border_share: float
    lung_area: float
    randomization_spearman: float  # NaN when not computed
    randomized_flat: bool  # the randomised model's map was flat (Spearman 0 by convention)
    deletion_auc: float  # NaN when not computed
    insertion_auc: float
    cam_flat: bool


def audit_image(predictor: Predictor, gray: np.ndarray, method: str = "gradcam",
                randomized: Predictor | None = None, curves: bool = True,
                lungs: np.ndarray | None = None) -> tuple[ImageAudit, CamResult, np.ndarray]:
    """Every figure for one image (the predicted class's map): the figures, the CAM and the lung mask.
    Without ``randomized`` the sanity check is skipped (NaN)."""
    cam = explain(predictor, gray, method, faithfulness=False)
    lungs = lung_mask(gray) if lungs is None else lungs
    focus = lung_focus(cam.raw, lungs)
    rho, rand_flat = float("nan"), False
    if randomized is not None:
        other = explain(randomized, gray, method, target=cam.target, faithfulness=False)
        rho, rand_flat = spearman(cam.raw, other.raw), other.degenerate
    dele = ins = float("nan")
    if curves and not cam.degenerate:
        d, i = deletion_insertion(predictor, gray, cam.raw, cam.target)
        dele, ins = d.auc, i.auc
    return (ImageAudit(cam.class_name, float(cam.probs[cam.target]), focus.lung_share, focus.border_share,
                       focus.lung_area, rho, rand_flat, dele, ins, cam.degenerate), cam, lungs)


AGREEMENT_FIELDS = ("agreement_spearman", "agreement_iou")


def audit_images(predictor: Predictor, images: Sequence[ImageSource], method: str = "gradcam",
                 sanity: bool = True, curves: bool = True, seed: int = 0,
                 progress: Progress | None = None, agree_with: Predictor | None = None) -> pd.DataFrame:
    """One row of :class:`ImageAudit` figures per image (column ``image``: its position in ``images``);
    with ``agree_with`` (a model of the same classes) also :func:`agreement` of its map for the same class
    (NaN where either map is flat)."""
    if agree_with is not None and tuple(agree_with.classes) != tuple(predictor.classes):
        raise IncompatibleModelsError(f"cannot compare heatmaps of {predictor.name} {tuple(predictor.classes)} "
                                      f"and {agree_with.name} {tuple(agree_with.classes)}: the classes differ")
    randomized = randomized_copy(predictor, seed) if sanity else None
    rows = []
    for k, src in enumerate(images):
        gray = load_grayscale(src)
        fig, cam, _ = audit_image(predictor, gray, method, randomized, curves)
        row = {"image": k, **asdict(fig)}
        if agree_with is not None:  # a flat map has no hottest region: no agreement figure
            other = explain(agree_with, gray, method, target=cam.target, faithfulness=False)
            ag = (Agreement(float("nan"), float("nan")) if cam.degenerate or other.degenerate
                  else agreement(cam.raw, other.raw, gray.shape))
            row.update(agreement_spearman=ag.spearman, agreement_iou=ag.iou)
        rows.append(row)
        if progress:
            progress(k + 1, len(images))
    extra = AGREEMENT_FIELDS if agree_with is not None else ()
    return pd.DataFrame(rows, columns=["image", *ImageAudit.__dataclass_fields__, *extra])


SUMMARY_FIELDS = ("lung_share", "border_share", "lung_area", "randomization_spearman", "deletion_auc",
                  "insertion_auc")


def summarise(table: pd.DataFrame) -> dict:
    """Means over the images (NaN ignored; NaN where none), the median lung share and the counts."""
    out: dict = {"n_images": int(len(table))}
    for c in SUMMARY_FIELDS + tuple(c for c in AGREEMENT_FIELDS if c in table):
        v = table[c].to_numpy(dtype=float) if c in table and len(table) else np.array([np.nan])
        out[c] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    out["lung_share_median"] = float(table["lung_share"].median()) if len(table) else float("nan")
    for c in ("cam_flat", "randomized_flat"):
        out[c] = int(table[c].sum()) if c in table and len(table) else 0
    out["no_lung_mask"] = int((table["lung_area"] == 0).sum()) if len(table) else 0
    return out


def least_focused(table: pd.DataFrame, k: int = 6) -> pd.DataFrame:
    """The ``k`` rows with the smallest lung share (likely shortcuts); flat maps and images without a lung
    mask left out."""
    return table[~table["cam_flat"] & table["lung_share"].notna()].nsmallest(k, "lung_share")
