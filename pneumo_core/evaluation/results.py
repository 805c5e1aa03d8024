"""The results table: every model of a zoo folder on the test split, through the rules of
:mod:`pneumo_core.evaluation.selection`, with 95 % bootstrap intervals.

Binary figures are at each model's own validation threshold (Youden's J); three-class ones at the
largest probability. Rows of several seeds show mean ± std over the seeds and the interval of that mean
(test images resampled, stratified, every seed scored on the same resample).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.bootstrap import bootstrap_runs, patient_groups, resampled_metrics
from pneumo_core.evaluation.predictions import Predictions, ensemble
from pneumo_core.files import ASSETS
from pneumo_core.models.keys import HIERARCHICAL, ModelKey

COLUMNS = ["task", "model", "seeds", "best_seed", "init", "image_size", "epochs", "threshold", "accuracy", "recall",
           "specificity", "f1", "macro_f1", "f1_NORMAL", "f1_BACTERIA", "f1_VIRUS", "auroc"]
HEADLINE = ("accuracy", "auroc", "macro_f1", "f1_VIRUS")  # these carry a 95 % interval


def test_figures(runs: list[tuple[Predictions, Predictions]], n_boot: int = 1000) -> dict[str, dict]:
    """{metric: {mean, std, low, high}} over runs of (val, test) sets of the same test images; the 95 % interval
    resamples test patients and, over several runs, the runs (seeds) too."""
    tests = [t for _, t in runs]
    ids = list(tests[0].frame["image_id"])
    aligned = [t.frame.set_index("image_id").loc[ids] for t in tests]
    classes = tests[0].classes
    y = tests[0].y_true
    scored = []
    for (val, _), f in zip(runs, aligned):
        probs = f[[f"prob_{c}" for c in classes]].to_numpy(np.float64)
        scored.append((probs, selection.threshold_on(val)))
    full = np.ones((1, len(y)))
    each = [{k: float(v[0]) for k, v in resampled_metrics(y, p, t, full, classes).items()} for p, t in scored]
    ci = bootstrap_runs(y, scored, classes, n_boot, groups=patient_groups(ids)) if n_boot else {}
    out = {}
    for k in each[0]:
        vals = np.array([e[k] for e in each])
        out[k] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                  "low": ci.get(k, (np.nan, np.nan))[0], "high": ci.get(k, (np.nan, np.nan))[1]}
    thresholds = [t for _, t in scored]
    out["threshold"] = thresholds[0] if len(thresholds) == 1 else None
    return out


def _cell(v: dict, n: int, metric: str) -> str:
    s = f"{v['mean']:.3f}" + (f" ± {v['std']:.3f}" if n > 1 else "")
    if metric in HEADLINE and np.isfinite(v["low"]):
        s += f" [{v['low']:.3f}, {v['high']:.3f}]"
    return s


def _row(task: str, model: str, runs: list[tuple[Predictions, Predictions]], n_boot: int, **recipe) -> dict:
    figs = test_figures(runs, n_boot)
    t = figs.pop("threshold")
    return {"task": task, "model": model, "seeds": len(runs), **recipe,
            "threshold": "" if t is None else f"{t:.3f}",
            **{k: _cell(v, len(runs), k) for k, v in figs.items()}}


def _recipe(root: str | Path, task: str, arch: str, seed: int) -> dict:
    try:
        cfg = artifacts.run_info(root, ModelKey(task, arch, seed)).get("metrics", {}).get("config", {})
    except PneumoError:  # a malformed run log costs its recipe cells, not the table
        cfg = {}
    if not cfg:
        return {"init": "", "image_size": "", "epochs": ""}
    init = str(cfg.get("init", ""))
    return {"init": init if init in ("scratch", "imagenet") else f"from {Path(init.removeprefix('path:')).name}",
            "image_size": cfg.get("image_size", ""),
            "epochs": f"{cfg.get('head_epochs', 0)} head + {cfg.get('epochs', '')}"}


def results_table(root: str | Path = ASSETS, n_boot: int = 1000) -> pd.DataFrame:
    """Per (task, architecture) over its seeds, each architecture's seed ensemble, each task's ensemble
    (the rule's members) and the hierarchical model; test split, thresholds from validation."""
    root = str(root)
    idx = artifacts.prediction_index(root)
    rows = []
    for task in sorted(idx.task.unique()):
        for arch in artifacts.archs_of(root, task):
            seeds = artifacts.seeds_of(root, task, arch)
            runs = [tuple(artifacts.load_set(root, task, arch, s, sp) for sp in ("val", "test")) for s in seeds]
            best = selection.best_seed(root, task, arch)
            rows.append(_row(task, arch, runs, n_boot, best_seed=best, **_recipe(root, task, arch, best)))
            if len(seeds) > 1:
                name = selection.seed_ensemble_name(arch, len(seeds))
                ens = tuple(ensemble([r[k] for r in runs], name) for k in (0, 1))
                rows.append(_row(task, name, [ens], n_boot, best_seed="",
                                 init="mean of the seeds' probabilities", image_size="", epochs=""))
        members = selection.ensemble_members(root, task)
        if members:
            ens = tuple(selection.ensemble_set(root, members, sp) for sp in ("val", "test"))
            rows.append(_row(task, selection.ensemble_name(members), [ens], n_boot, best_seed="",
                             init="best seed of each: " + ", ".join(f"{m.arch} {m.seed}" for m in members),
                             image_size="", epochs=""))
    if not idx[idx.arch == HIERARCHICAL].empty:
        plan = selection.hierarchical_plan(root)
        try:
            runs = [tuple(artifacts.load_set(root, "three_class", HIERARCHICAL, None, sp) for sp in ("val", "test"))]
            rows.append(_row("three_class", HIERARCHICAL, runs, n_boot, best_seed="",
                             init=plan.description if plan else "", image_size="", epochs=""))
        except FileNotFoundError:
            pass
    df = pd.DataFrame(rows)
    return df[[c for c in COLUMNS if c in df.columns]].fillna("").astype(str)  # one type a column (Arrow)


def load_results(root: str | Path = ASSETS, n_boot: int = 1000) -> pd.DataFrame:
    """``root/results.csv`` when it is newer than every prediction file (what ``zoo-bundle`` wrote),
    else the table computed now."""
    root = Path(root)
    csv = root / "results.csv"
    preds = list(root.glob("predictions/*/*.csv"))
    if csv.is_file() and preds and csv.stat().st_mtime >= max(p.stat().st_mtime for p in preds):
        return pd.read_csv(csv, dtype=str, keep_default_na=False)
    return results_table(root, n_boot)


def task_table(table: pd.DataFrame, task: str) -> pd.DataFrame:
    """One task's rows of the results table, without the task column and the columns empty in every row (the
    three-class scores of a binary model, say)."""
    part = table[table["task"] == task].drop(columns=["task"])
    return part.loc[:, (part != "").any()]
