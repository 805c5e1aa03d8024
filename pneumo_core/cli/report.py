"""``report``: metrics of prediction files in the terminal or as JSON."""
from __future__ import annotations

import argparse
import math
import sys
from typing import TYPE_CHECKING

from pneumo_core.cli.registry import command, int_range, probability
from pneumo_core.errors import PredictionFileError
from pneumo_core.files import dumps, json_safe

if TYPE_CHECKING:  # the command imports the evaluation modules when it runs, not when the parser is built
    from pneumo_core.evaluation.thresholds import OperatingPoint


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
        if r.get("note"):
            print(f"  note: {r['note']}")
    if "per_class" in r:
        print(f"  accuracy {_fmt(r['accuracy'])}  macro-F1 {_fmt(r['macro_f1'])}"
              f"  AUROC (macro) {_fmt(r['auroc_macro'])}  ECE {_fmt(r['ece'])}")
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
    g.add_argument("--threshold", type=probability, default=None,
                   help="decision threshold on P(pneumonia) (default 0.5)")
    g.add_argument("--operating-point", default=None,
                   help="youden | max-f1 | sens=0.95 | spec=0.90 | cost=0.25, chosen on --on")
    p.add_argument("--on", nargs="+", default=None, metavar="VAL_FILE",
                   help="validation prediction file(s) the operating point is chosen on (one, or one per file)")
    p.add_argument("--bins", type=int_range(1, 1000), default=15, help="reliability bins, 1..1000 (default 15)")
    p.add_argument("--bootstrap", type=int_range(0, 100_000), default=0, metavar="N",
                   help="bootstrap resamples of the patients for 95%% CIs, 0..100000 (default 0: none)")
    p.add_argument("--json", action="store_true", help="print JSON (keys documented in docs/commands.md)")


@command("report", _args)
def _run(args: argparse.Namespace) -> int:
    """Metrics of prediction files (ours, published *_probs.json, Kaggle *_yscores.csv), with intervals."""
    from pneumo_core.evaluation.predictions import ensemble, read_predictions
    from pneumo_core.evaluation.report import report_many
    from pneumo_core.evaluation.thresholds import choose, parse_rule

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
        vals = [read_predictions(f).labelled() for f in args.on]
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
    ens_threshold, ens_op = thresholds[0], None
    if args.operating_point and len(preds) > 1:
        try:
            ens_val = ensemble(vals) if len(args.on) > 1 else vals[0]
            ens_op = choose(ens_val.y_binary, ens_val.p_positive, rule,
                            chosen_on="ensemble of " + ", ".join(args.on) if len(args.on) > 1 else args.on[0])
        except (ValueError, PredictionFileError) as exc:
            print(f"error: ensemble of the --on files: {exc}", file=sys.stderr)
            return 2
        ens_threshold = ens_op.threshold
    r = report_many(preds, thresholds, ops, args.bins, args.bootstrap, ens_threshold, ens_op)
    if args.json:
        print(dumps(r, indent=2))
    else:
        _print_text(json_safe(r))
    return 0
