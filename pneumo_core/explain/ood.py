"""Out-of-distribution gate: "this does not look like a frontal chest X-ray".

Features: ImageNet EfficientNet-Lite0 (packaged weights, works offline), global-average pooled, on the
same preprocessing as the models. Fitted on training X-rays only: PCA to a few dimensions, then the
Mahalanobis distance (Ledoit-Wolf covariance) in that space plus the PCA reconstruction error. The
threshold is a high percentile of held-out training scores. The app warns above it and still predicts.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.decomposition import PCA

from pneumo_core.data.images import MIN_SIDE
from pneumo_core.files import ASSETS, atomic_write
from pneumo_core.models.networks import FEATURE_ARCH, build_model
from pneumo_core.data.preprocessing import Preprocessing, to_tensor

DEFAULT_PATH = ASSETS / "models" / "ood_gate.npz"
_EXTRACTOR: dict[str, torch.nn.Module] = {}


def _extractor() -> torch.nn.Module:
    if "m" not in _EXTRACTOR:
        m = build_model(FEATURE_ARCH, 1, "imagenet").eval()
        _EXTRACTOR["m"] = m
    return _EXTRACTOR["m"]


@torch.inference_mode()
def features(grays: Sequence[np.ndarray] | np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(N, 1280) pooled ImageNet features of grayscale [0, 1] images (or uint8 arrays)."""
    m = _extractor()
    prep = Preprocessing()
    out = []
    for i in range(0, len(grays), batch_size):
        chunk = grays[i:i + batch_size]
        x = torch.stack([to_tensor(g.astype(np.float32) / 255.0 if g.dtype == np.uint8 else g, prep) for g in chunk])
        f = m.extract_features(x)
        out.append(f.mean(dim=(2, 3)).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)


def layout(grays: Sequence[np.ndarray] | np.ndarray, grid: int = 12) -> np.ndarray:
    """(N, grid*grid) mean intensities on a coarse grid, z-scored per image: where a film is bright and dark.

    ImageNet features barely see polarity; this does (an inverted film has bright lungs). The per-image
    z-score removes exposure and contrast, so only the pattern counts.
    """
    out = []
    for g in grays:
        g = g.astype(np.float32) / 255.0 if g.dtype == np.uint8 else np.asarray(g, np.float32)
        h, w = g.shape
        g = g[: h - h % grid, : w - w % grid]
        cells = g.reshape(grid, g.shape[0] // grid, grid, g.shape[1] // grid).mean(axis=(1, 3)).ravel()
        out.append((cells - cells.mean()) / (cells.std() + 1e-6))
    return np.array(out, dtype=np.float64)


@dataclass
class OODGate:
    """Score = max(feature distance / its threshold, layout distance / its threshold); flagged above 1."""

    mean: np.ndarray
    components: np.ndarray  # (k, 1280)
    precision: np.ndarray  # (k, k)
    center: np.ndarray  # (k,) mean in PCA space
    residual_scale: float
    feature_threshold: float
    layout_center: np.ndarray
    layout_precision: np.ndarray
    layout_threshold: float
    percentile: float
    threshold: float = 1.0

    def feature_distance(self, f: np.ndarray) -> np.ndarray:
        z = (f - self.mean) @ self.components.T
        d = z - self.center
        maha = np.sqrt(np.einsum("ij,jk,ik->i", d, self.precision, d))
        resid = np.linalg.norm((f - self.mean) - z @ self.components, axis=1) / self.residual_scale
        return maha + resid

    def layout_distance(self, lay: np.ndarray) -> np.ndarray:
        d = lay - self.layout_center
        return np.sqrt(np.einsum("ij,jk,ik->i", d, self.layout_precision, d))

    def score_parts(self, f: np.ndarray, lay: np.ndarray) -> np.ndarray:
        return np.maximum(self.feature_distance(f) / self.feature_threshold,
                          self.layout_distance(lay) / self.layout_threshold)

    def score(self, grays: Sequence[np.ndarray]) -> np.ndarray:
        """Higher is stranger; above :attr:`threshold` (1.0) the image is flagged. An image we cannot score
        (under :data:`~pneumo_core.data.images.MIN_SIDE` px a side, NaN pixels, a NaN distance) scores
        infinity: flagged, never silently passed."""
        grays = list(grays)
        out = np.full(len(grays), np.inf)
        ok = [i for i, g in enumerate(grays)
              if np.ndim(g) == 2 and min(np.shape(g)) >= MIN_SIDE and np.isfinite(g).all()]
        if ok:
            s = self.score_parts(features([grays[i] for i in ok]), layout([grays[i] for i in ok]))
            out[ok] = np.where(np.isfinite(s), s, np.inf)
        return out

    def flagged(self, scores: np.ndarray | float) -> np.ndarray:
        """The gate's one rule: a score above :attr:`threshold` (or NaN) is out of distribution."""
        return ~(np.asarray(scores, dtype=float) <= self.threshold)

    _ARRAYS = ("mean", "components", "precision", "center", "layout_center", "layout_precision")
    _SCALARS = ("residual_scale", "feature_threshold", "layout_threshold", "percentile", "threshold")

    def save(self, path: str | Path = DEFAULT_PATH) -> Path:
        def write(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
                np.savez_compressed(f, **{k: getattr(self, k).astype(np.float32) for k in self._ARRAYS},
                                    meta=np.array(json.dumps({k: float(getattr(self, k)) for k in self._SCALARS})))

        return atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "OODGate":
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            return cls(**{k: z[k].astype(np.float64) for k in cls._ARRAYS}, **meta)


def fit(train_features: np.ndarray, train_layouts: np.ndarray, holdout_features: np.ndarray,
        holdout_layouts: np.ndarray, k: int = 32, percentile: float = 99.0) -> OODGate:
    """Fit on training X-rays; each threshold is ``percentile`` of the held-out training distances."""
    pca = PCA(n_components=k, random_state=0).fit(train_features)
    z = pca.transform(train_features)
    lw = LedoitWolf().fit(z)
    recon = (train_features - pca.mean_) - z @ pca.components_
    resid_scale = (float(np.median(np.linalg.norm(recon, axis=1))) or 1.0) / np.sqrt(k)
    lay = LedoitWolf().fit(train_layouts)
    gate = OODGate(pca.mean_, pca.components_, lw.precision_, lw.location_, resid_scale, 1.0,
                   lay.location_, lay.precision_, 1.0, percentile)
    gate.feature_threshold = float(np.percentile(gate.feature_distance(holdout_features), percentile))
    gate.layout_threshold = float(np.percentile(gate.layout_distance(holdout_layouts), percentile))
    return gate


_LOADED: dict[str, OODGate] = {}


def default_gate() -> OODGate | None:
    """The bundled gate, or None when it has not been built (``python -m pneumo_core.ood_build``)."""
    if "g" not in _LOADED and DEFAULT_PATH.is_file():
        _LOADED["g"] = OODGate.load(DEFAULT_PATH)
    return _LOADED.get("g")


def _to_gray(img: np.ndarray) -> np.ndarray:
    from PIL import Image

    arr = np.asarray(img)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.dtype != np.uint8:
        arr = (255 * (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-9)).astype(np.uint8)
    pil = Image.fromarray(arr)
    return np.asarray(pil.convert("L").resize((224, 224)), dtype=np.float32) / 255.0


def reference_non_xrays(xray_examples: Sequence[np.ndarray] = ()) -> dict[str, np.ndarray]:
    """Images that are not frontal chest X-rays: scikit-image's bundled pictures, drawn ones, and
    inverted / rotated versions of given X-rays. Used to measure the gate."""
    import skimage.data as skd
    from PIL import Image, ImageDraw

    out: dict[str, np.ndarray] = {}
    for name in ("astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
                 "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon",
                 "page", "retina", "rocket", "shepp_logan_phantom", "text", "binary_blobs", "microaneurysms",
                 "motorcycle_left", "lfw_subset"):  # all ship inside the scikit-image wheel (no download)
        img = getattr(skd, name)() if name != "motorcycle_left" else skd.stereo_motorcycle()[0]
        if name == "lfw_subset":
            for i in range(0, 200, 20):
                out[f"skimage:lfw_face_{i}"] = _to_gray(img[i])
            continue
        out[f"skimage:{name}"] = _to_gray(img)
    rng = np.random.default_rng(0)
    out["drawn:black"] = np.zeros((224, 224), np.float32)
    out["drawn:white"] = np.ones((224, 224), np.float32)
    out["drawn:gray"] = np.full((224, 224), 0.5, np.float32)
    out["drawn:noise"] = rng.uniform(0, 1, (224, 224)).astype(np.float32)
    out["drawn:gradient"] = np.tile(np.linspace(0, 1, 224, dtype=np.float32), (224, 1))
    for i in range(4):
        canvas = Image.new("L", (224, 224), 255)
        d = ImageDraw.Draw(canvas)
        for line in range(18):
            y = 8 + line * 12
            d.text((8, y), "".join(rng.choice(list("abcdefghij klmnopqrstuvwxyz.,")) for _ in range(34)), fill=0)
        out[f"drawn:document_{i}"] = np.asarray(canvas, np.float32) / 255
    for i in range(3):
        canvas = Image.new("L", (224, 224), int(rng.integers(0, 255)))
        d = ImageDraw.Draw(canvas)
        for _ in range(12):
            x0, y0 = rng.integers(0, 200, 2)
            d.ellipse([x0, y0, x0 + rng.integers(10, 80), y0 + rng.integers(10, 80)], fill=int(rng.integers(0, 255)))
        out[f"drawn:shapes_{i}"] = np.asarray(canvas, np.float32) / 255
    for i, g in enumerate(xray_examples):
        out[f"inverted_xray_{i}"] = 1.0 - g
    return out


def build(data_dir: str | Path, n_train: int = 1500, n_holdout: int = 400, k: int = 64, percentile: float = 99.0,
          seed: int = 0) -> OODGate:
    """Fit the gate on the training split of a Kermany folder (train for the fit, our val for thresholds)."""
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.data.arrays import load_array

    splits = kermany_splits(data_dir)
    rng = np.random.default_rng(seed)
    train = splits["train"].iloc[np.sort(rng.choice(len(splits["train"]), min(n_train, len(splits["train"])),
                                                    replace=False))]
    hold = splits["val"].iloc[np.sort(rng.choice(len(splits["val"]), min(n_holdout, len(splits["val"])),
                                                 replace=False))]
    tr, ho = load_array(train, 224), load_array(hold, 224)
    return fit(features(tr), layout(tr), features(ho), layout(ho), k, percentile)


def measure(gate: OODGate, xrays: Sequence[np.ndarray], xray_examples_for_inversion: int = 11) -> dict:
    """Accepted share of real X-rays and rejected share of :func:`reference_non_xrays`."""
    xs = list(xrays)
    inv = [xs[i].astype(np.float32) / 255 if xs[i].dtype == np.uint8 else xs[i]
           for i in np.linspace(0, len(xs) - 1, xray_examples_for_inversion).astype(int)]
    non = reference_non_xrays(inv)
    s_x, s_n = gate.score(xs), gate.score(list(non.values()))
    return {"xrays": len(xs), "accepted": float((~gate.flagged(s_x)).mean()),
            "non_xrays": len(non), "rejected": float(gate.flagged(s_n).mean()),
            "missed": [n for n, f in zip(non, gate.flagged(s_n)) if not f]}
