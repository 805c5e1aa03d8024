"""The zoo's artifacts in a folder (what ``train.py --out`` writes, or the committed ``assets/``):
prediction files, histories, metrics; the results table; bundling into ``assets/``.

Layout under a root: ``predictions/<task>/<stem>_{val,test}.csv``, ``runs/<task>/<stem>/{history,metrics}.json``,
``checkpoints/...`` (local) or ``models/checkpoints/...safetensors`` (assets).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd

from .bootstrap import mean_std
from .metrics import binary_at, auroc, multiclass_summary
from .predictions import Predictions, ensemble, make_table, read_predictions, write_predictions
from .thresholds import choose

ASSETS = Path(__file__).resolve().parent.parent / "assets"
_PRED = re.compile(r"^(?P<stem>.+?)_(?P<split>val|test)$")
_STEM = re.compile(r"^(?P<arch>.+?)(?:_bacteria_virus)?(?:_seed(?P<seed>\d+))?$")


def prediction_index(root: str | Path = ASSETS) -> pd.DataFrame:
    """One row per prediction file: task, arch, seed (-1 for combined sets), split, path."""
    rows = []
    for f in sorted(Path(root).glob("predictions/*/*.csv")):
        m = _PRED.match(f.stem)
        if not m:
            continue
        s = _STEM.match(m.group("stem"))
        rows.append({"task": f.parent.name, "arch": s.group("arch"),
                     "seed": int(s.group("seed")) if s.group("seed") else -1,
                     "split": m.group("split"), "path": str(f)})
    return pd.DataFrame(rows, columns=["task", "arch", "seed", "split", "path"])


def load_set(root: str | Path, task: str, arch: str, seed: int, split: str) -> Predictions:
    idx = prediction_index(root)
    hit = idx[(idx.task == task) & (idx.arch == arch) & (idx.seed == seed) & (idx.split == split)]
    if hit.empty:
        raise FileNotFoundError(f"no {split} predictions for {task}/{arch} seed {seed} under {root}")
    return read_predictions(hit.path.iloc[0])


def run_info(root: str | Path, task: str, stem: str) -> dict:
    """history (learning curve) and metrics of a run, as far as they exist."""
    d = Path(root) / "runs" / task / stem
    out = {}
    for name in ("history", "metrics"):
        f = d / f"{name}.json"
        if f.is_file():
            out[name] = json.loads(f.read_text())
    return out


def _val_score(val: Predictions) -> float:
    """Validation figure for picking the best seed: AUROC (binary) or macro-F1."""
    if val.is_binary:
        return auroc(val.y_binary, val.p_positive)
    return multiclass_summary(val.y_true, val.probs, val.classes)["macro_f1"]


def best_seed(root: str | Path, task: str, arch: str) -> int | None:
    idx = prediction_index(root)
    seeds = sorted(idx[(idx.task == task) & (idx.arch == arch) & (idx.seed >= 0)].seed.unique())
    if not seeds:
        return None
    return max(seeds, key=lambda s: _val_score(load_set(root, task, arch, s, "val")))


def test_metrics(val: Predictions, test: Predictions) -> dict:
    """Test metrics with the binary threshold chosen on validation (Youden)."""
    if test.is_binary:
        t = choose(val.y_binary, val.p_positive, "youden").threshold
        m = binary_at(test.y_binary, test.p_positive, t)
        return {"accuracy": m["accuracy"], "recall": m["sensitivity"], "specificity": m["specificity"],
                "f1": m["f1"], "auroc": auroc(test.y_binary, test.p_positive), "threshold": t}
    s = multiclass_summary(test.y_true, test.probs, test.classes)
    out = {"accuracy": s["accuracy"], "macro_f1": s["macro_f1"], "auroc": s["auroc_macro"]}
    out.update({f"f1_{c}": v["f1"] for c, v in s["per_class"].items()})
    return out


def ensemble_sets(root: str | Path, task: str) -> tuple[Predictions, Predictions] | None:
    """The probability average of each architecture's best seed (val, test)."""
    idx = prediction_index(root)
    archs = sorted(idx[(idx.task == task) & (idx.seed >= 0)].arch.unique())
    members = [(a, best_seed(root, task, a)) for a in archs]
    members = [(a, s) for a, s in members if s is not None]
    if len(members) < 2:
        return None
    sets = [tuple(load_set(root, task, a, s, split) for split in ("val", "test")) for a, s in members]
    name = "ensemble(" + "+".join(a for a, _ in members) + ")"
    return ensemble([v for v, _ in sets], name), ensemble([t for _, t in sets], name)


def seed_ensemble_sets(root: str | Path, task: str, arch: str) -> tuple[Predictions, Predictions] | None:
    """The probability average of all seeds of one architecture (val, test); None under two seeds."""
    idx = prediction_index(root)
    seeds = sorted(idx[(idx.task == task) & (idx.arch == arch) & (idx.seed >= 0)].seed.unique())
    if len(seeds) < 2:
        return None
    name = f"{arch} ({len(seeds)}-seed ensemble)"
    return tuple(ensemble([load_set(root, task, arch, s, split) for s in seeds], name) for split in ("val", "test"))


def results_table(root: str | Path = ASSETS) -> pd.DataFrame:
    """Per (task, model): mean ± std over seeds on test (thresholds from validation), plus ensembles
    and the hierarchical model; recipe columns from each run's metrics.json."""
    idx = prediction_index(root)
    rows = []
    for (task, arch), g in idx.groupby(["task", "arch"], sort=True):
        seeds = sorted(s for s in g.seed.unique() if s >= 0)
        if not seeds and arch != "hierarchical":
            continue
        if arch == "hierarchical":
            runs = [test_metrics(load_set(root, task, arch, -1, "val"), load_set(root, task, arch, -1, "test"))]
            recipe = {"init": f"stage A binary {best_binary_arch(root) or '?'} (best val AUROC) x stage B bacteria_virus",
                      "image_size": "", "epochs": ""}
        else:
            runs = [test_metrics(load_set(root, task, arch, s, "val"), load_set(root, task, arch, s, "test")) for s in seeds]
            cfg = run_info(root, task, Path(g.path.iloc[0]).stem.rsplit("_", 1)[0]).get("metrics", {}).get("config", {})
            recipe = {"init": cfg.get("init", ""), "image_size": cfg.get("image_size", ""),
                      "epochs": f"{cfg.get('head_epochs', 0)} head + {cfg.get('epochs', '')}" if cfg else ""}
        ms = mean_std(runs)
        rows.append({"task": task, "model": arch, "seeds": len(runs), **recipe,
                     **{k: f"{v['mean']:.3f} ± {v['std']:.3f}" if len(runs) > 1 else f"{v['mean']:.3f}"
                        for k, v in ms.items() if k != "threshold"}})
    for (task, arch), g in idx[idx.seed >= 0].groupby(["task", "arch"], sort=True):
        ens = seed_ensemble_sets(root, task, arch)
        if ens is not None:
            rows.append(_ensemble_row(task, ens, g.seed.nunique(), "mean of the seeds' probabilities"))
    for task in sorted(idx.task.unique()):
        ens = ensemble_sets(root, task)
        if ens is not None:
            rows.append(_ensemble_row(task, ens, 1, "best seed of each"))
    cols = ["task", "model", "seeds", "init", "image_size", "epochs", "accuracy", "recall", "specificity", "f1",
            "macro_f1", "f1_NORMAL", "f1_BACTERIA", "f1_VIRUS", "auroc"]
    df = pd.DataFrame(rows)
    return df[[c for c in cols if c in df.columns]].fillna("")


def _ensemble_row(task: str, ens: tuple[Predictions, Predictions], seeds: int, init: str) -> dict:
    m = test_metrics(*ens)
    return {"task": task, "model": ens[1].frame["model"].iloc[0], "seeds": seeds, "init": init, "image_size": "",
            "epochs": "", **{k: f"{v:.3f}" for k, v in m.items() if k != "threshold"}}


def best_binary_arch(root: str | Path) -> str | None:
    """The binary architecture whose best seed has the highest validation AUROC."""
    idx = prediction_index(root)
    archs = sorted(idx[(idx.task == "binary") & (idx.seed >= 0)].arch.unique())
    scored = [(_val_score(load_set(root, "binary", a, best_seed(root, "binary", a), "val")), a) for a in archs]
    return max(scored)[1] if scored else None


def hierarchical_sets(zoo: str | Path, data_dir: str | Path, progress=None) -> tuple[Predictions, Predictions] | None:
    """Stage A = the best binary model on validation (AUROC), stage B = the bacteria_virus model; val and test."""
    from .data import kermany_splits
    from .inference import Hierarchical, Predictor
    from .sources import LocalSource

    src = LocalSource(zoo)
    refs = src.list()
    arch = best_binary_arch(zoo)
    a_refs = [r for r in refs if r.task == "binary" and r.seed is None and r.arch == arch]
    b_refs = [r for r in refs if r.task == "bacteria_virus" and r.seed is None]
    if not a_refs or not b_refs:
        return None
    hier = Hierarchical(Predictor(src.load(a_refs[0])), Predictor(src.load(b_refs[0])))
    splits = kermany_splits(data_dir)
    val, test = (_predict_split(hier, splits[split], split, progress, model="hierarchical", task="three_class",
                                seed=None, checkpoint=hier.key) for split in ("val", "test"))
    return val, test


def _predict_split(predictor, frame: pd.DataFrame, split: str, progress, **labels) -> Predictions:
    """Fresh (uncached) predictions of one split, as a table fit to commit: image ids as paths, ``labels``
    (model, task, seed, checkpoint) as given."""
    from .inference import predict_frame

    t = predict_frame(predictor, frame, split=split, progress=progress, use_cache=False)
    f = t.frame
    return make_table(f["image_id"], f["y_true"], t.probs, t.classes, paths=list(f["image_id"]), split=split, **labels)


def repredict(zoo: str | Path, data_dir: str | Path, progress=None) -> list[Path]:
    """Rewrite each seed's val/test prediction files from its checkpoint through the inference path in
    fp32 (what the app computes), e.g. for runs whose training loop predicted under bf16."""
    from .data import kermany_splits
    from .inference import Predictor
    from .sources import LocalSource

    zoo = Path(zoo)
    splits = kermany_splits(data_dir)
    src = LocalSource(zoo)
    written = []
    for ref in src.list():
        if ref.seed is None:
            continue
        predictor = Predictor(src.load(ref), precision="fp32")
        for split in ("val", "test"):
            table = _predict_split(predictor, splits[split], split, progress, model=ref.arch, task=ref.task,
                                   seed=ref.seed, checkpoint=predictor.fingerprint)
            dst = zoo / "predictions" / ref.task / f"{Path(ref.relpath).stem}_{split}.csv"
            write_predictions(table, dst)
            written.append(dst)
    return written


def bundle(zoo: str | Path, data_dir: str | Path, assets: str | Path = ASSETS,
           leave_out: Sequence[str] = ()) -> pd.DataFrame:
    """Copy the zoo's prediction files and run logs into ``assets``, export each best checkpoint as fp16
    safetensors (but those named ``task/arch`` in ``leave_out``, e.g. to keep assets/models under 100 MB),
    add the hierarchical predictions, and write the results table (CSV + Markdown)."""
    from .sources import LocalSource
    from .training import bundle as export_best

    zoo, assets = Path(zoo), Path(assets)
    for f in zoo.glob("predictions/*/*.csv"):
        dst = assets / f.relative_to(zoo)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    for f in list(zoo.glob("runs/*/*/history.json")) + list(zoo.glob("runs/*/*/metrics.json")):
        dst = assets / f.relative_to(zoo)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, dst)
    for ref in LocalSource(zoo).list():
        if ref.seed is None and ref.key not in leave_out:
            export_best(zoo / ref.relpath, assets / "models")
    hier = hierarchical_sets(zoo, data_dir)
    if hier is not None:
        for t in hier:
            write_predictions(t, assets / "predictions" / "three_class" / f"hierarchical_{t.frame['split'].iloc[0]}.csv")
    table = results_table(assets)
    table.to_csv(assets / "results.csv", index=False)
    (assets / "results.md").write_text(to_markdown(table))
    return table


def to_markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"
