"""A zoo folder's artifacts (what ``train.py --out`` writes, or the committed ``assets/``): prediction
files, run logs and which best checkpoints it holds.

Layout under a root: ``predictions/<task>/<stem>_{val,test}.csv``, ``runs/<task>/<stem>/{history,metrics}.json``,
``checkpoints/<folder>/<stem>.pt`` (a local zoo) or ``models/checkpoints/<folder>/<stem>.safetensors`` (assets).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd

from pneumo_core.data.tasks import TASK_FOLDERS
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.predictions import Predictions, read_predictions
from pneumo_core.files import ASSETS
from pneumo_core.models.sources import checkpoint_stem, parse_stem

_PRED = re.compile(r"^(?P<stem>.+?)_(?P<split>val|test)$")
COMBINED = -1  # the seed of sets that combine models (the hierarchical model)


def prediction_index(root: str | Path = ASSETS) -> pd.DataFrame:
    """One row per prediction file: task, arch, seed (-1 for combined sets), split, path."""
    rows = []
    for f in sorted(Path(root).glob("predictions/*/*.csv")):
        m = _PRED.match(f.stem)
        if not m:
            continue
        arch, _, seed = parse_stem(m.group("stem"))
        rows.append({"task": f.parent.name, "arch": arch, "seed": COMBINED if seed is None else seed,
                     "split": m.group("split"), "path": str(f)})
    return pd.DataFrame(rows, columns=["task", "arch", "seed", "split", "path"])


def load_set(root: str | Path, task: str, arch: str, seed: int, split: str) -> Predictions:
    idx = prediction_index(root)
    hit = idx[(idx.task == task) & (idx.arch == arch) & (idx.seed == seed) & (idx.split == split)]
    if hit.empty:
        raise FileNotFoundError(f"no {split} predictions for {task}/{arch} seed {seed} under {root}")
    return read_predictions(hit.path.iloc[0])


def seeds_of(root: str | Path, task: str, arch: str) -> list[int]:
    """The seeds of one architecture with both a val and a test file."""
    idx = prediction_index(root)
    g = idx[(idx.task == task) & (idx.arch == arch) & (idx.seed >= 0)]
    return sorted(int(s) for s, h in g.groupby("seed") if set(h.split) >= {"val", "test"})


def archs_of(root: str | Path, task: str) -> list[str]:
    idx = prediction_index(root)
    return sorted(a for a in idx[(idx.task == task) & (idx.seed >= 0)].arch.unique() if seeds_of(root, task, a))


def has_checkpoint(root: str | Path, task: str, arch: str) -> bool:
    """Whether the folder holds the architecture's best checkpoint (``<arch>.pt`` or the fp16 bundle)."""
    stem = checkpoint_stem(task, arch)
    root = Path(root)
    return any((base / "checkpoints" / TASK_FOLDERS[task] / f"{stem}{ext}").is_file()
               for base in (root, root / "models") for ext in (".pt", ".safetensors"))


def has_predictions(root: str | Path) -> bool:
    """Whether a folder holds prediction files (``predictions/<task>/*.csv``)."""
    return any(Path(root).glob("predictions/*/*.csv"))


#: what a run's recipe line shows, from its metrics.json config
RECIPE_KEYS = ("init", "image_size", "head_epochs", "epochs", "freeze_fraction", "lr", "batch_size")
_CURVE_KEYS = ("epoch", "train_loss", "val_loss", "val_auroc")


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_run_file(name: str, obj, where: Path) -> None:
    """A :class:`PredictionFileError` naming ``where`` when a run log is not of the shape train.py writes."""
    if name == "history":
        if not isinstance(obj, list) or not all(isinstance(h, dict) for h in obj):
            raise PredictionFileError(f"{where}: not a run history (a list of epoch records)")
        for h in obj:
            if h.get("phase") == "finetune" and not all(_is_number(h.get(k)) or h.get(k) is None for k in _CURVE_KEYS):
                raise PredictionFileError(f"{where}: an epoch record lacks a number for one of "
                                          f"{', '.join(_CURVE_KEYS)}")
            if h.get("phase") == "finetune" and not _is_number(h.get("epoch")):
                raise PredictionFileError(f"{where}: an epoch record has no epoch number")
    elif not isinstance(obj, dict) or not isinstance(obj.get("config", {}), dict):
        raise PredictionFileError(f"{where}: not a run's metrics (an object with a config object)")


def run_info(root: str | Path, task: str, stem: str) -> dict:
    """history (learning curve) and metrics of a run, as far as they exist; a file that is not valid JSON
    of the shape train.py writes is a :class:`PredictionFileError` naming it."""
    d = Path(root) / "runs" / task / stem
    out = {}
    for name in ("history", "metrics"):
        f = d / f"{name}.json"
        if f.is_file():
            try:
                obj = json.loads(f.read_text())
            except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
                raise PredictionFileError(f"{f}: not readable JSON ({type(exc).__name__})") from None
            _check_run_file(name, obj, f)
            out[name] = obj
    return out


def recipe_line(metrics: dict) -> str:
    """A run's recipe in one line (init, image size, epochs, ..., wall time), from its metrics.json; what is
    missing or not a number is left out."""
    cfg = metrics.get("config") if isinstance(metrics.get("config"), dict) else {}
    parts = [f"{k} {cfg[k]}" for k in RECIPE_KEYS if k in cfg and isinstance(cfg[k], (str, int, float))]
    wall = metrics.get("wall_s")
    if _is_number(wall) and math.isfinite(wall):
        parts.append(f"wall time {wall / 60:.1f} min on the training machine's CPU")
    return ", ".join(parts)


def runs(root: str | Path) -> list[tuple[str, str]]:
    """(task, stem) of every seeded run with prediction files, e.g. ("binary", "resnet18_seed2")."""
    idx = prediction_index(root)
    return sorted({(r.task, checkpoint_stem(r.task, r.arch, int(r.seed))) for r in idx.itertuples() if r.seed >= 0})
