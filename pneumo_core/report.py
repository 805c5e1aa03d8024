"""Metrics of prediction files: one set, several (each + mean ± std + ensemble), and the ``report`` CLI."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Sequence

import numpy as np

from .bootstrap import bootstrap_binary, mean_std
from .calibration import calibration_summary, class_reliability
from .cli import command
from .data import subtype_of
from .errors import PredictionFileError
from .metrics import binary_summary, by_group, multiclass_summary
from .predictions import Predictions, ensemble, read_predictions
from .thresholds import OperatingPoint, choose, parse_rule


def binary_report(pred: Predictions, threshold: float = 0.5, n_bins: int = 15, n_boot: int = 0,
                  operating_point: OperatingPoint | None = None, seed: int = 0) -> dict:
    """Binary metrics (or the binary view of a NORMAL/BACTERIA/VIRUS set) at a threshold."""
    y, p = pred.y_binary, pred.p_positive
    if operating_point is not None:
        threshold = operating_point.threshold
    out = binary_summary(y, p, threshold)
    cal = calibration_summary(y, np.stack([1 - p, p], 1), n_bins)
    out.update({k: cal[k] for k in ("ece", "mce", "brier", "nll")})
    out["n"] = int(len(y))
    if operating_point is not None:
        out["operating_point"] = operating_point.to_dict()
    subtypes = [subtype_of(i) for i in pred.frame["image_id"]]
    if any(subtypes):
        groups = by_group(y, p, threshold, subtypes)
        out["recall_by_subtype"] = {g: v["sensitivity"] for g, v in groups.items() if g != "NORMAL"}
    if n_boot:
        out["ci95"] = bootstrap_binary(y, p, threshold, n_boot, seed, n_bins=n_bins)
    return out


def multiclass_report(pred: Predictions, n_bins: int = 15) -> dict:
    y, probs = pred.y_true, pred.probs
    out = multiclass_summary(y, probs, pred.classes)
    cal = calibration_summary(y, probs, n_bins)
    out.update({k: cal[k] for k in ("ece", "mce", "brier", "nll")})
    out["ece_per_class"] = {c: class_reliability(y, probs, k, n_bins).ece for k, c in enumerate(pred.classes)}
    out["n"] = int(len(y))
    return out


def report(pred: Predictions, threshold: float = 0.5, n_bins: int = 15, n_boot: int = 0,
           operating_point: OperatingPoint | None = None) -> dict:
    head = {"file": pred.source, "model": pred.name, "task": pred.task, "classes": list(pred.classes)}
    if pred.is_binary:
        return {**head, **binary_report(pred, threshold, n_bins, n_boot, operating_point)}
    out = {**head, **multiclass_report(pred, n_bins)}
    if pred.classes[0] == "NORMAL":
        out["binary_view"] = binary_report(pred, threshold, n_bins, n_boot, operating_point)
    return out


def _flat_numbers(d: dict) -> dict:
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def report_many(preds: Sequence[Predictions], thresholds: Sequence[float], ops: Sequence[OperatingPoint | None],
                n_bins: int = 15, n_boot: int = 0) -> dict:
    each = [report(p, t, n_bins, n_boot, op) for p, t, op in zip(preds, thresholds, ops)]
    if len(preds) == 1:
        return each[0]
    out: dict = {"runs": each, "mean_std": mean_std(_flat_numbers(e) for e in each)}
    if not preds[0].is_binary:
        out["mean_std_per_class_f1"] = mean_std({c: v["f1"] for c, v in e["per_class"].items()} for e in each)
    try:
        ens = ensemble(preds)
        # the ensemble's threshold: the mean of the members' (they are 0.5 unless chosen on validation)
        out["ensemble"] = report(ens, float(np.mean(thresholds)), n_bins, n_boot)
    except PredictionFileError as exc:
        out["ensemble"] = {"error": str(exc)}
    return out


def _clean(obj):
    """JSON-safe: NaN -> null, numpy -> Python."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else (
        f"{v:.4f}" if isinstance(v, float) else str(v))


def _print_text(r: dict, header: bool = True) -> None:
    if "runs" in r:
        for run in r["runs"]:
            _print_text(run)
            print()
        print("mean ± std over the files:")
        for k, v in r["mean_std"].items():
            print(f"  {k:<20} {v['mean']:.4f} ± {v['std']:.4f}")
        print("\nensemble (probability average):")
        _print_text(r["ensemble"]) if "error" not in r["ensemble"] else print("  " + r["ensemble"]["error"])
        return
    if header:
        print(f"{r.get('file', '')}  [{r.get('model', '')}, {r.get('task', '')}, n={r.get('n')}]")
    if "per_class" in r:
        print(f"  accuracy {_fmt(r['accuracy'])}  macro-F1 {_fmt(r['macro_f1'])}  AUROC (macro) {_fmt(r['auroc_macro'])}"
              f"  ECE {_fmt(r['ece'])}")
        for c, v in r["per_class"].items():
            print(f"  {c:<10} precision {_fmt(v['precision'])}  recall {_fmt(v['recall'])}  F1 {_fmt(v['f1'])}"
                  f"  AUROC {_fmt(v['auroc'])}  n={v['support']}")
        print(f"  confusion (rows true, cols predicted {r['classes']}): {r['confusion_matrix']}")
        if "binary_view" in r:
            print("  binary view (PNEUMONIA = BACTERIA + VIRUS):")
            _print_text(r["binary_view"], header=False)
        return
    op = r.get("operating_point")
    src = f" ({op['rule']} on {op['chosen_on']})" if op else ""
    print(f"  threshold {r['threshold']:.4f}{src}: TP {r['tp']} FP {r['fp']} TN {r['tn']} FN {r['fn']}")
    for k in ("sensitivity", "specificity", "precision", "npv", "f1", "accuracy", "auroc", "average_precision",
              "ece", "brier"):
        ci = r.get("ci95", {}).get(k)
        extra = f"  [{_fmt(ci['low'])}, {_fmt(ci['high'])}]" if ci else ""
        print(f"  {k:<18} {_fmt(r[k])}{extra}")
    if "recall_by_subtype" in r:
        print("  recall by subtype: " + ", ".join(f"{g} {_fmt(v)}" for g, v in r["recall_by_subtype"].items()))


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("files", nargs="+", help="prediction files: ours (.csv/.parquet), *_probs.json, *_yscores.csv")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--threshold", type=float, default=None, help="decision threshold on P(pneumonia) (default 0.5)")
    g.add_argument("--operating-point", default=None,
                   help="youden | max-f1 | sens=0.95 | spec=0.90 | cost=0.25, chosen on --on")
    p.add_argument("--on", nargs="+", default=None, metavar="VAL_FILE",
                   help="validation prediction file(s) the operating point is chosen on (one, or one per file)")
    p.add_argument("--bins", type=int, default=15, help="reliability bins (default 15)")
    p.add_argument("--bootstrap", type=int, default=0, metavar="N", help="stratified bootstrap resamples for 95%% CIs")
    p.add_argument("--json", action="store_true", help="print JSON (keys documented in the README)")


@command("report", _args)
def _run(args: argparse.Namespace) -> int:
    preds = [read_predictions(f) for f in args.files]
    ops: list[OperatingPoint | None] = [None] * len(preds)
    thresholds = [0.5 if args.threshold is None else args.threshold] * len(preds)
    if args.operating_point:
        if not args.on:
            print("error: --operating-point needs --on VAL_FILE (the set it is chosen on)", file=sys.stderr)
            return 2
        try:
            rule = parse_rule(args.operating_point)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        vals = [read_predictions(f) for f in args.on]
        if len(vals) not in (1, len(preds)):
            print(f"error: --on takes one file or one per prediction file ({len(preds)})", file=sys.stderr)
            return 2
        vals = vals * len(preds) if len(vals) == 1 else vals
        for i, v in enumerate(vals):
            try:
                ops[i] = choose(v.y_binary, v.p_positive, rule, chosen_on=v.source)
            except ValueError as exc:
                print(f"error: {v.source}: {exc}", file=sys.stderr)
                return 2
            thresholds[i] = ops[i].threshold
    r = report_many(preds, thresholds, ops, args.bins, args.bootstrap)
    if args.json:
        print(json.dumps(_clean(r), indent=2))
    else:
        _print_text(_clean(r))
    return 0
