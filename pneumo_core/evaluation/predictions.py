"""The canonical prediction table (CSV or parquet) and importers for the two public formats.

Columns: ``image_id, path, split, y_true, prob_<CLASS>...`` (one per class, rows sum to 1), then
``model, task, seed, checkpoint``. ``y_true`` is the class index (-1 when unknown).
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from pneumo_core.files import atomic_write
from pneumo_core.errors import PredictionFileError
from pneumo_core.data.tasks import TASKS

REQUIRED = ["image_id", "y_true"]
META_COLUMNS = ["model", "task", "seed", "checkpoint"]
PROB_PREFIX = "prob_"
#: most classes a prediction file may have (ours have 2 or 3): 8000 columns once took 4.3 GB in `report`
MAX_CLASSES = 64


@dataclass
class Predictions:
    """A validated prediction table with its class names."""

    frame: pd.DataFrame
    classes: tuple[str, ...]
    source: str = ""

    @property
    def probs(self) -> np.ndarray:
        return self.frame[[PROB_PREFIX + c for c in self.classes]].to_numpy(dtype=np.float64)

    @property
    def y_true(self) -> np.ndarray:
        return self.frame["y_true"].to_numpy(dtype=np.int64)

    @property
    def is_binary(self) -> bool:
        return len(self.classes) == 2

    @property
    def n_unknown(self) -> int:
        """Rows whose label is unknown (``y_true = -1``): no metric may count them."""
        return int((self.frame["y_true"].to_numpy() < 0).sum())

    def labelled(self) -> "Predictions":
        """The rows with a known label (all of them when none is -1); an error when none has one."""
        if self.n_unknown == 0:
            return self
        known = self.frame[self.frame["y_true"].to_numpy() >= 0].reset_index(drop=True)
        if known.empty:
            raise PredictionFileError(f"{self.source}: every row has an unknown label (y_true = -1); "
                                      "no metric to compute")
        return Predictions(known, self.classes, self.source)

    @property
    def p_positive(self) -> np.ndarray:
        """P(classes[1]) for a binary table; P(not NORMAL) for a NORMAL/BACTERIA/VIRUS table."""
        if self.is_binary:
            return self.probs[:, 1]
        if self.classes[0] == "NORMAL":
            return 1.0 - self.probs[:, 0]
        raise PredictionFileError(f"{self.source}: no binary view of classes {self.classes}")

    @property
    def y_binary(self) -> np.ndarray:
        return self.y_true if self.is_binary else (self.y_true > 0).astype(np.int64)

    @property
    def task(self) -> str:
        t = self.frame["task"].iloc[0] if "task" in self.frame and len(self.frame) else ""
        if t in TASKS:
            return str(t)
        return {("NORMAL", "PNEUMONIA"): "binary", ("NORMAL", "BACTERIA", "VIRUS"): "three_class",
                ("BACTERIA", "VIRUS"): "bacteria_virus"}.get(tuple(self.classes), "unknown")

    @property
    def name(self) -> str:
        if "model" in self.frame and len(self.frame):
            m = str(self.frame["model"].iloc[0])
            s = self.frame["seed"].iloc[0] if "seed" in self.frame else None
            return (m if s is None or (isinstance(s, float) and np.isnan(s)) or str(s) in ("", "-1")
                    else f"{m}/seed{int(s)}")
        return Path(self.source).stem if self.source else "predictions"


def make_table(
    image_ids: Sequence[str],
    y_true: Sequence[int] | np.ndarray,
    probs: np.ndarray,
    classes: Sequence[str],
    *,
    paths: Sequence[str] | None = None,
    split: str | Sequence[str] = "",
    model: str = "",
    task: str = "",
    seed: int | None = None,
    checkpoint: str = "",
) -> Predictions:
    probs = np.asarray(probs, dtype=np.float64)
    df = pd.DataFrame({"image_id": list(map(str, image_ids)),
                       "path": list(paths) if paths is not None else [""] * len(image_ids),
                       "split": split if isinstance(split, str) else list(split),
                       "y_true": np.asarray(y_true, dtype=np.int64)})
    for i, c in enumerate(classes):
        df[PROB_PREFIX + c] = probs[:, i]
    df["model"], df["task"] = model, task
    df["seed"] = -1 if seed is None else int(seed)
    df["checkpoint"] = checkpoint
    return validate(df, "<new table>")


def validate(df: pd.DataFrame, source: str) -> Predictions:
    """Check columns, labels and probabilities; one clear message per problem."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise PredictionFileError(f"{source}: missing column(s) {', '.join(missing)}")
    classes = tuple(c[len(PROB_PREFIX):] for c in df.columns if c.startswith(PROB_PREFIX))
    if len(classes) < 2:
        raise PredictionFileError(f"{source}: needs one {PROB_PREFIX}<CLASS> column per class (found {len(classes)})")
    if len(classes) > MAX_CLASSES:
        raise PredictionFileError(f"{source}: {len(classes)} {PROB_PREFIX}<CLASS> columns; at most {MAX_CLASSES} "
                                  "classes are read")
    if len(df) == 0:
        raise PredictionFileError(f"{source}: no rows")
    probs = df[[PROB_PREFIX + c for c in classes]]
    try:
        p = probs.to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise PredictionFileError(f"{source}: probability columns hold non-numbers") from None
    if not np.isfinite(p).all():
        raise PredictionFileError(f"{source}: probabilities contain NaN or infinity")
    if (p < 0).any() or (p > 1).any():
        bad = int(np.argmax(((p < 0) | (p > 1)).any(1)))
        raise PredictionFileError(f"{source}: probabilities must lie in [0, 1] (row {bad + 1})")
    sums = p.sum(1)
    if not np.allclose(sums, 1.0, atol=1e-3):
        bad = int(np.argmax(np.abs(sums - 1) > 1e-3))
        raise PredictionFileError(f"{source}: class probabilities of row {bad + 1} sum to {sums[bad]:.4f}, not 1")
    try:
        y = pd.to_numeric(df["y_true"], errors="raise").to_numpy()
    except (ValueError, TypeError):
        raise PredictionFileError(f"{source}: y_true must hold class indices") from None
    if not np.all(np.equal(np.mod(y, 1), 0)) or ((y < -1) | (y >= len(classes))).any():
        raise PredictionFileError(f"{source}: y_true must be integers in 0..{len(classes) - 1} (or -1 for unknown)")
    df = df.copy()
    df["y_true"] = y.astype(np.int64)
    df["image_id"] = df["image_id"].astype(str)
    if df["image_id"].duplicated().any():
        dup = df.loc[df["image_id"].duplicated(), "image_id"].iloc[0]
        raise PredictionFileError(f"{source}: image id {dup!r} appears more than once")
    for c in META_COLUMNS:
        if c not in df:
            df[c] = -1 if c == "seed" else ""
    for c in ("path", "split"):
        if c not in df:
            df[c] = ""
    return Predictions(df, classes, source)


def write_predictions(pred: Predictions, path: str | Path) -> Path:
    """Write CSV or parquet (by suffix) atomically."""
    def write(tmp: str) -> None:
        if Path(path).suffix == ".parquet":
            pred.frame.to_parquet(tmp, index=False)
        else:
            pred.frame.to_csv(tmp, index=False, float_format="%.8g")

    return atomic_write(path, write)


def _from_probs_json(obj: dict, source: str) -> Predictions:
    if not isinstance(obj, dict) or "y_true" not in obj or "y_prob" not in obj:
        raise PredictionFileError(f"{source}: a *_probs.json needs keys y_true and y_prob")
    if not isinstance(obj["y_true"], list) or not isinstance(obj["y_prob"], list):
        raise PredictionFileError(f"{source}: y_true and y_prob must be lists "
                                  f"(found {type(obj['y_true']).__name__} and {type(obj['y_prob']).__name__})")
    try:
        y = np.asarray(obj["y_true"], dtype=np.float64)
        p = np.asarray(obj["y_prob"], dtype=np.float64)
    except (ValueError, TypeError):
        raise PredictionFileError(f"{source}: y_true must hold class indices and y_prob numbers "
                                  "or rows of numbers") from None
    if y.ndim != 1 or not np.isfinite(y).all() or not np.all(np.mod(y, 1) == 0):
        raise PredictionFileError(f"{source}: y_true must be a flat list of integer class indices")
    if len(y) != len(p):
        raise PredictionFileError(f"{source}: y_true has {len(y)} entries but y_prob has {len(p)}")
    if p.ndim == 1 or (p.ndim == 2 and p.shape[1] == 1):
        p1 = p.reshape(-1)
        probs, classes, task = np.stack([1 - p1, p1], 1), ("NORMAL", "PNEUMONIA"), "binary"
    elif p.ndim == 2 and p.shape[1] == 3:
        probs, classes, task = p, ("NORMAL", "BACTERIA", "VIRUS"), "three_class"
    elif p.ndim == 2 and p.shape[1] == 2:
        probs, classes, task = p, ("NORMAL", "PNEUMONIA"), "binary"
    else:
        raise PredictionFileError(f"{source}: y_prob must be a list of numbers or of 2/3-class rows")
    if not np.isfinite(probs).all():
        raise PredictionFileError(f"{source}: probabilities contain NaN or infinity")
    if ((probs < 0) | (probs > 1)).any():
        raise PredictionFileError(f"{source}: probabilities must lie in [0, 1]")
    df = pd.DataFrame({"image_id": [f"{i:05d}" for i in range(len(y))], "y_true": y.astype(np.int64)})
    for i, c in enumerate(classes):
        df[PROB_PREFIX + c] = probs[:, i]
    df["model"] = str(obj.get("model", Path(source).stem.replace("_probs", "")))
    df["task"] = task
    df["seed"] = int(obj["seed"]) if obj.get("seed") is not None else -1
    df["checkpoint"] = "published"
    return validate(df, source)


def _from_yscores_csv(df: pd.DataFrame, source: str) -> Predictions:
    p1 = pd.to_numeric(df["y_scores"], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(p1).any():
        raise PredictionFileError(f"{source}: y_scores holds non-numbers")
    out = pd.DataFrame({"image_id": [f"{i:05d}" for i in range(len(df))], "y_true": df["y_true"],
                        "prob_NORMAL": 1 - p1, "prob_PNEUMONIA": p1})
    out["model"], out["task"], out["seed"], out["checkpoint"] = (
        Path(source).stem.replace("_yscores", ""), "binary", -1, "published")
    return validate(out, source)


def read_predictions(path: str | Path | io.IOBase, name: str | None = None) -> Predictions:
    """Read ours (CSV/parquet), a published ``*_probs.json`` or a Kaggle ``*_yscores.csv``."""
    source = name or str(getattr(path, "name", path))
    suffix = Path(source).suffix.lower()
    try:
        if suffix == ".json":
            text = path.read() if hasattr(path, "read") else Path(path).read_text()
            return _from_probs_json(json.loads(text), source)
        if suffix == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path)
    except FileNotFoundError:
        raise PredictionFileError(f"{source}: file not found") from None
    except UnicodeDecodeError as exc:
        raise PredictionFileError(f"{source}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise PredictionFileError(f"{source}: not valid JSON ({exc})") from None
    except RecursionError:
        raise PredictionFileError(f"{source}: JSON nested too deeply to be a prediction file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, OSError, ValueError) as exc:
        raise PredictionFileError(f"{source}: cannot be read as a table ({str(exc).splitlines()[0]})") from None
    if {"y_true", "y_scores"} <= set(df.columns) and not any(c.startswith(PROB_PREFIX) for c in df.columns):
        return _from_yscores_csv(df, source)
    return validate(df, source)


def align(preds: Sequence[Predictions]) -> list[Predictions]:
    """The same tables sorted by image id; an error unless they hold the same images and labels."""
    if not preds:
        raise PredictionFileError("no prediction sets given")
    first = preds[0]
    ids = sorted(first.frame["image_id"])
    out = []
    for p in preds:
        if p.classes != first.classes:
            raise PredictionFileError(f"{p.source}: classes {p.classes} differ from {first.source}'s {first.classes}")
        if sorted(p.frame["image_id"]) != ids:
            raise PredictionFileError(f"{p.source}: holds other images than {first.source}")
        f = p.frame.set_index("image_id").loc[ids].reset_index()
        out.append(Predictions(f, p.classes, p.source))
    y0 = out[0].y_true
    for p in out[1:]:
        if not np.array_equal(p.y_true, y0):
            raise PredictionFileError(f"{p.source}: labels differ from {out[0].source}'s for the same images")
    return out


def ensemble(preds: Sequence[Predictions], model: str = "ensemble") -> Predictions:
    """Average the class probabilities of several prediction sets of the same images."""
    al = align(preds)
    probs = np.mean([p.probs for p in al], axis=0)
    f = al[0].frame
    return make_table(f["image_id"], f["y_true"], probs, al[0].classes, paths=list(f["path"]),
                      split=list(f["split"]), model=model, task=al[0].task, seed=None,
                      checkpoint="+".join(str(p.frame["checkpoint"].iloc[0]) for p in al))
