"""A zoo folder's artifacts (what ``train.py --out`` writes, or the committed ``assets/``): prediction
files, run logs and which best checkpoints it holds.

Layout under a root: ``predictions/<task>/<stem>_{val,test}.csv``, ``runs/<task>/<stem>/{history,metrics}.json``,
``checkpoints/<task>/<stem>.pt`` (a local zoo) or ``models/checkpoints/<task>/<stem>.safetensors`` (assets); the
names are :class:`~pneumo_core.models.keys.ModelKey`'s.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.predictions import Predictions, read_predictions
from pneumo_core.files import ASSETS
from pneumo_core.models.keys import SPLITS, ModelKey, parse_prediction_file


def prediction_files(root: str | Path = ASSETS) -> dict[ModelKey, dict[str, Path]]:
    """Every prediction set under ``root``: its key (seed None for a set that combines models, such as the
    hierarchical model) -> {split: file}."""
    out: dict[ModelKey, dict[str, Path]] = {}
    for f in sorted(Path(root).glob("predictions/*/*.csv")):
        if (parsed := parse_prediction_file(str(f))) is not None:
            out.setdefault(parsed[0], {})[parsed[1]] = f
    return out


def prediction_index(root: str | Path = ASSETS) -> pd.DataFrame:
    """One row per prediction file: task, arch, seed (<NA> for combined sets), split, path."""
    rows = [{"task": k.task, "arch": k.arch, "seed": k.seed, "split": split, "path": str(f)}
            for k, files in prediction_files(root).items() for split, f in files.items()]
    df = pd.DataFrame(rows, columns=["task", "arch", "seed", "split", "path"])
    df["seed"] = df["seed"].astype("Int64")
    return df


def complete_sets(root: str | Path = ASSETS) -> list[ModelKey]:
    """The keys with both a validation and a test file."""
    return [k for k, files in prediction_files(root).items() if set(files) >= set(SPLITS)]


def load_set(root: str | Path, task: str, arch: str, seed: int | None, split: str) -> Predictions:
    """One prediction set; ``seed`` None for a combined one (``load_set(root, *key, split)``)."""
    key = ModelKey(task, arch, None if seed is None else int(seed))
    f = prediction_files(root).get(key, {}).get(split)
    if f is None:
        raise FileNotFoundError(f"no {split} predictions for {key.source_key} under {root}")
    return read_predictions(f)


def seeds_of(root: str | Path, task: str, arch: str) -> list[int]:
    """The seeds of one architecture with both a val and a test file."""
    return sorted(k.seed for k in complete_sets(root) if k[:2] == (task, arch) and k.seed is not None)


def archs_of(root: str | Path, task: str) -> list[str]:
    """The architectures of a task with at least one seeded run."""
    return sorted({k.arch for k in complete_sets(root) if k.task == task and k.seed is not None})


def combined_sets(root: str | Path, task: str) -> list[ModelKey]:
    """The task's sets that combine models (no seed), e.g. ``three_class/hierarchical``."""
    return sorted(k for k in complete_sets(root) if k.task == task and k.seed is None)


def has_checkpoint(root: str | Path, task: str, arch: str, seed: int | None = None) -> bool:
    """Whether the folder holds the architecture's best checkpoint (``<arch>.pt`` or the fp16 bundle), or with
    ``seed`` that seed's own (``<arch>_seed<n>``), in our layout or the published one."""
    root = Path(root)
    key = ModelKey(task, arch, seed)
    return any((base / rel).is_file() for base in (root, root / "models") for ext in (".pt", ".safetensors")
               for rel in key.checkpoint_relpaths(ext))


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


def run_info(root: str | Path, key: ModelKey) -> dict:
    """history (learning curve) and metrics of a run, as far as they exist; a file that is not valid JSON
    of the shape train.py writes is a :class:`PredictionFileError` naming it."""
    d = next((Path(root) / r for r in key.run_dirs() if (Path(root) / r).is_dir()), Path(root) / key.run_dirs()[0])
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


def runs(root: str | Path) -> dict[ModelKey, list[ModelKey]]:
    """Every seeded run with prediction files, grouped by architecture: ``(binary, resnet18)`` -> its seeds'
    keys, in order."""
    out: dict[ModelKey, list[ModelKey]] = {}
    for k in sorted(k for k in complete_sets(root) if k.seed is not None):
        out.setdefault(k.best, []).append(k)
    return out
