"""``shift``: one model's validation and test figures side by side (pneumo_core.evaluation.shift)."""
from __future__ import annotations

import argparse
import math
import textwrap
from pathlib import Path

from pneumo_core.cli.registry import command, int_range
from pneumo_core.files import ASSETS, dumps


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="KEY",
                   help="binary/resnet18 (its best seed), binary/resnet18/seed1, binary/ensemble, "
                        "three_class/hierarchical, or a page's name such as 'binary · resnet18 · seed 2'")
    p.add_argument("--root", default=str(ASSETS),
                   help="folder with predictions/<task>/*.csv (default: the bundled zoo in assets/)")
    p.add_argument("--bootstrap", type=int_range(1, 100_000), default=1000, metavar="N",
                   help="resamples of patients for the 95%% intervals, 1..100000 (default 1000)")
    p.add_argument("--json", action="store_true", help="print JSON: the figures of each split and the paragraph")


def _fmt(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "n/a"


@command("shift", _args)
def _run(args: argparse.Namespace) -> int:
    """Validation against test for one model: its figures on both splits at its validation threshold, with
    intervals, and what they show."""
    from pneumo_core.evaluation import selection
    from pneumo_core.evaluation.calibration import temperature_on_splits, temperature_sentence
    from pneumo_core.evaluation.shift import (FIGURES, TASKS, choice_key, choice_label, interval_text,
                                              resolve_choice, shift_figures, shift_paragraph)

    root = Path(args.root)
    opt = resolve_choice(root, args.model, TASKS)
    val, test = (selection.load_choice(root, *opt, s).labelled() for s in ("val", "test"))
    v, t = shift_figures(val, test, n_boot=args.bootstrap, seed=0)
    paragraph = shift_paragraph(v, t)
    temp = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs)
    if args.json:
        print(dumps({"model": choice_label(opt), "key": choice_key(opt), "threshold": v.threshold,
                     "validation": v.to_dict(), "test": t.to_dict(), "paragraph": paragraph,
                     "temperature": {"temperature": temp.temperature, **temp.scores,
                                     "sentence": temperature_sentence(temp)}}))
        return 0
    print(f"{choice_label(opt)}: validation against test at the validation threshold "
          f"P(pneumonia) >= {v.threshold:.4f} (95 % intervals over {args.bootstrap} resamples of patients)")
    print(f"  {'':<30}{'validation':<26}test")
    for s_name, s in (("images", lambda x: f"{x.n_images} ({x.n_normal} NORMAL)"),
                      ("patients", lambda x: str(x.n_patients))):
        print(f"  {s_name:<30}{s(v):<26}{s(t)}")
    for k, name in FIGURES.items():
        print(f"  {name:<30}{interval_text(v.figures[k]):<26}{interval_text(t.figures[k])}")
    print(f"  {'NORMAL below the threshold':<30}{_fmt(v.normal_below):<26}{_fmt(t.normal_below)}")
    print(f"  {'median P(pneumonia), NORMAL':<30}{_fmt(v.normal_median):<26}{_fmt(t.normal_median)}")
    for text in (paragraph, temperature_sentence(temp)):
        print()
        print(textwrap.fill(text.replace(" %", "\u00a0%"), 110))  # "57 %" kept on one line
    return 0
