"""A zoo folder's artifacts (what ``train.py --out`` writes, or the committed ``assets/``): prediction
files, run logs and which best checkpoints it holds.

Layout under a root: ``predictions/<task>/<stem>_{val,test}.csv``, ``runs/<task>/<stem>/{history,metrics}.json``,
``checkpoints/<folder>/<stem>.pt`` (a local zoo) or ``models/checkpoints/<folder>/<stem>.safetensors`` (assets).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from pneumo_core.data.tasks import TASK_FOLDERS
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


def run_info(root: str | Path, task: str, stem: str) -> dict:
    """history (learning curve) and metrics of a run, as far as they exist."""
    d = Path(root) / "runs" / task / stem
    out = {}
    for name in ("history", "metrics"):
        f = d / f"{name}.json"
        if f.is_file():
            out[name] = json.loads(f.read_text())
    return out


def runs(root: str | Path) -> list[tuple[str, str]]:
    """(task, stem) of every seeded run with prediction files, e.g. ("binary", "resnet18_seed2")."""
    idx = prediction_index(root)
    return sorted({(r.task, checkpoint_stem(r.task, r.arch, int(r.seed))) for r in idx.itertuples() if r.seed >= 0})
