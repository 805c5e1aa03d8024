"""The torch side of a dataset table: images decoded and preprocessed for a model."""
from __future__ import annotations

from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from pneumo_core.data.images import load_grayscale
from pneumo_core.data.preprocessing import Preprocessing, gray_tensor, resize_gray


class ImageDataset(Dataset):
    """Rows of a dataset table -> (grayscale (1, S, S) tensor in [0, 1], target, index).

    Normalisation to the model's channels and mean/std is done per batch (``preprocessing.normalise``),
    which is cheaper than per image. Unreadable files raise with their name.
    """

    def __init__(
        self,
        frame: pd.DataFrame,
        prep: Preprocessing = Preprocessing(),
        augment: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.frame = frame.reset_index(drop=True)
        self.prep = prep
        self.augment = augment
        self.targets = (self.frame["target"].to_numpy() if "target" in self.frame
                        else np.full(len(self.frame), -1))

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        gray = load_grayscale(self.frame.at[i, "path"])
        if self.augment is not None:
            gray = self.augment(resize_gray(gray, self.prep.image_size))
        return gray_tensor(gray, self.prep.image_size), int(self.targets[i]), i
