"""Approximate lung fields of a frontal chest X-ray by classical segmentation (scikit-image, no model).

On these X-rays air is dark and body is bright. :func:`lung_mask` smooths the image, finds the body
(each row from its first to its last bright pixel, so the air beside the patient is left out), takes the
dark pixels inside it (Otsu over the body), opens them to cut thin bridges, and keeps on each side of
the midline the largest dark region whose centre is below the top quarter (one touching the top edge,
usually neck or shoulder, only when there is no other); each is closed and its holes filled. It is a
rough outline for judging where a heatmap falls, not a clinical segmentation: dense consolidations are
bright and fall outside it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage import filters, measure, morphology


BAND = 0.05  # no lung within this fraction of each side of the image


def _row_span(mask: np.ndarray) -> np.ndarray:
    """Each row filled from its first to its last ``True`` pixel."""
    cols = np.arange(mask.shape[1])
    first = np.argmax(mask, axis=1)
    last = mask.shape[1] - 1 - np.argmax(mask[:, ::-1], axis=1)
    return mask.any(axis=1)[:, None] & (cols >= first[:, None]) & (cols <= last[:, None])


def lung_mask(gray: np.ndarray, min_area: float = 0.01, work_size: int = 256) -> np.ndarray:
    """Boolean (H, W) mask of the lung fields of a grayscale [0, 1] image; at most two regions, one a side.

    ``min_area``: the smallest region kept, as a fraction of the image. An image with no dark region in
    the body gives an empty mask. Images larger than ``work_size`` are segmented at that size and the
    mask scaled back (nearest neighbour).
    """
    g = np.asarray(gray, dtype=np.float32)
    if g.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, not shape {g.shape}")
    if max(g.shape) > work_size:
        import cv2

        f = work_size / max(g.shape)
        small = cv2.resize(g, (max(1, round(g.shape[1] * f)), max(1, round(g.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)
        m = lung_mask(small, min_area, work_size).astype(np.uint8)
        return cv2.resize(m, (g.shape[1], g.shape[0]), interpolation=cv2.INTER_NEAREST).astype(bool)
    h, w = g.shape
    s = min(h, w)
    g = filters.gaussian(g, sigma=s / 112)
    r = max(1, round(s * 0.02))
    if float(g.max() - g.min()) <= 1e-6:
        return np.zeros((h, w), bool)
    t_all = filters.threshold_otsu(g)
    bright = ndi.binary_opening(g > t_all, morphology.disk(r))  # body, text and markers removed
    body = ndi.binary_erosion(_row_span(bright) & _row_span(bright.T).T, morphology.disk(r))
    inside = g[body]
    t = filters.threshold_otsu(inside) if inside.size > 100 and np.ptp(inside) > 1e-6 else t_all
    dark = ndi.binary_opening((g < t) & body, morphology.disk(max(1, round(s * 0.03))))
    band = max(1, round(s * BAND))
    dark[:band], dark[-band:], dark[:, :band], dark[:, -band:] = False, False, False, False
    cols = np.nonzero(body)[1]
    mid = int(np.median(cols)) if cols.size else w // 2
    half = max(1, round(w * 0.01))
    dark[:, max(0, mid - half):mid + half + 1] = False  # the two lungs never merge across the spine
    lab, n = ndi.label(dark)
    out = np.zeros((h, w), bool)
    if n == 0:
        return out
    idx = np.arange(1, n + 1)
    areas = ndi.sum(dark, lab, idx)
    centres = ndi.center_of_mass(dark, lab, idx)
    tops = [sl[0].start for sl in ndi.find_objects(lab)]
    for left in (True, False):
        cand = [(areas[i] * (0.2 if tops[i] <= band else 1.0), i + 1) for i in range(n)
                if (centres[i][1] < mid) == left and areas[i] >= min_area * h * w and centres[i][0] >= 0.25 * h]
        if cand:
            region = ndi.binary_closing(lab == max(cand)[1], morphology.disk(r), border_value=0)
            out |= ndi.binary_fill_holes(region)
    return out


def lung_contours(mask: np.ndarray) -> list[np.ndarray]:
    """Outlines of a mask as (K, 2) arrays of (row, col) points (``skimage.measure.find_contours``)."""
    padded = np.pad(np.asarray(mask, dtype=np.float32), 1)
    return [c - 1 for c in measure.find_contours(padded, 0.5)]


def draw_contours(rgb: np.ndarray, contours: list[np.ndarray], color: tuple[int, int, int] = (0, 255, 0),
                  width: int = 1) -> np.ndarray:
    """A copy of an RGB uint8 picture (H, W, 3) with contours (in that picture's pixels) drawn on it."""
    import cv2

    out = np.ascontiguousarray(rgb.copy())
    for c in contours:
        pts = np.round(c[:, ::-1]).astype(np.int32).reshape(-1, 1, 2)  # (x, y) for OpenCV
        cv2.polylines(out, [pts], isClosed=True, color=tuple(int(v) for v in color), thickness=width)
    return out
