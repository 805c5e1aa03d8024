"""Turn a grayscale array into the tensor a model expects (size, channels, mean/std)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """What a checkpoint's model was trained on. Defaults match the published checkpoints."""

    image_size: int = 224
    channels: int = 3
    mean: tuple[float, ...] = field(default=IMAGENET_MEAN)
    std: tuple[float, ...] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, not {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError("mean and std need one value per channel")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "Preprocessing":
        if not d:
            return cls()
        keys = {"image_size", "channels", "mean", "std"}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in keys})

    def key(self) -> str:
        """A short string that identifies this preprocessing (cache keys)."""
        return f"{self.image_size}-{self.channels}-" + ",".join(f"{v:.4f}" for v in self.mean + self.std)


def resize_gray(gray: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a [0, 1] grayscale array to size x size (no aspect preservation, as trained)."""
    if gray.shape == (size, size):
        return gray.astype(np.float32, copy=False)
    img = Image.fromarray(np.asarray(gray, dtype=np.float32), mode="F")
    return np.asarray(img.resize((size, size), Image.BILINEAR), dtype=np.float32)


def gray_tensor(gray: np.ndarray, size: int) -> torch.Tensor:
    """Grayscale [0, 1] array -> (1, size, size) float tensor, resized, not yet normalised."""
    return torch.from_numpy(np.array(resize_gray(gray, size), dtype=np.float32)).unsqueeze(0)


def normalise(x: torch.Tensor, prep: Preprocessing = Preprocessing()) -> torch.Tensor:
    """(..., 1, S, S) grayscale in [0, 1] -> (..., C, S, S) with the checkpoint's mean/std (works on batches)."""
    mean = torch.tensor(prep.mean).view(-1, 1, 1)
    std = torch.tensor(prep.std).view(-1, 1, 1)
    return (x - mean) / std  # broadcasting a single channel to C


def to_tensor(gray: np.ndarray, prep: Preprocessing = Preprocessing()) -> torch.Tensor:
    """Grayscale [0, 1] array (H, W) -> normalised float tensor (C, S, S)."""
    return normalise(gray_tensor(gray, prep.image_size), prep).contiguous()


def denormalise(t: torch.Tensor, prep: Preprocessing = Preprocessing()) -> np.ndarray:
    """Inverse of :func:`to_tensor`: a (C, S, S) tensor back to a grayscale [0, 1] array."""
    mean = torch.tensor(prep.mean).view(-1, 1, 1)
    std = torch.tensor(prep.std).view(-1, 1, 1)
    x = (t.detach().cpu().float() * std + mean).mean(0)
    return x.clamp(0, 1).numpy()
