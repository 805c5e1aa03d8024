"""A dataset table as one uint8 array (N, S, S), decoded once and cached on disk."""
from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pneumo_core.data.datasets import content_fingerprint
from pneumo_core.data.images import load_grayscale
from pneumo_core.data.preprocessing import resize_gray
from pneumo_core.files import atomic_write, cache_root, write_cache


def load_array(frame: pd.DataFrame, size: int, cache_dir: str | None = None, desc: str = "images") -> np.ndarray:
    """All images of ``frame`` as uint8 (N, size, size), cached on disk by content fingerprint and size."""
    key = f"{content_fingerprint(frame)}_{size}_{len(frame)}"
    path = cache_root(cache_dir) / "arrays" / f"{key}.npy"
    if path.is_file():
        arr = np.load(path)
        if arr.shape == (len(frame), size, size):
            return arr
    arr = np.empty((len(frame), size, size), dtype=np.uint8)
    for i, p in enumerate(tqdm(frame["path"], desc=f"loading {desc}", leave=False)):
        arr[i] = np.rint(resize_gray(load_grayscale(p), size) * 255).astype(np.uint8)
    def save(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to a name
            np.save(f, arr)

    # a cache that cannot be written costs a recomputation, not the array
    write_cache(path, lambda: atomic_write(path, save))
    return arr
