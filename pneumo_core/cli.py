"""``python -m pneumo_core <command>``: each subcommand registers itself in :data:`COMMANDS`.

Errors that pneumo_core raises on purpose print one line and exit 2; they never show a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from .errors import PneumoError

#: name -> (add_arguments, run); run returns the exit code
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (add_arguments, run)
        return run
    return register


@contextmanager
def tqdm_progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` progress callback (what pneumo_core's long work takes) drawn as a tqdm bar."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="img") as bar:
        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        yield progress


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="a Kermany-layout folder: ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/")
    p.add_argument("--val-fraction", type=float, default=0.12, help="patient-aware validation share per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")


@command("dataset", _dataset_args)
def _dataset(args: argparse.Namespace) -> int:
    from .data import dataset_summary

    s = dataset_summary(args.root, args.val_fraction, args.seed)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['root']}")
    print(f"{'split':<12}{'NORMAL':>8}{'BACTERIA':>10}{'VIRUS':>8}{'total':>8}{'patients':>10}")
    rows = list(s["splits"].items()) + [(f"{k} (ours)", v) for k, v in s["patient_split"].items()
                                         if k in ("train", "val")]
    for name, c in rows:
        print(f"{name:<12}{c['NORMAL']:>8}{c['BACTERIA']:>10}{c['VIRUS']:>8}{c['total']:>8}{c['patients']:>10}")
    print(f"patient overlap train/val: {s['patient_split']['patient_overlap']}")
    return 0


def _ood_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--out", default=None, help="where to write the gate (default: assets/models/ood_gate.npz)")


@command("ood-build", _ood_args)
def _ood_build(args: argparse.Namespace) -> int:
    """Fit the out-of-distribution gate on the training X-rays and print its figures on the test split."""
    from . import ood
    from .data import kermany_splits
    from .training import load_array

    gate = ood.build(args.data_dir)
    path = gate.save(args.out or ood.DEFAULT_PATH)
    m = ood.measure(gate, load_array(kermany_splits(args.data_dir)["test"], 224))
    print(f"wrote {path}")
    print(f"test X-rays accepted: {m['accepted']:.1%} of {m['xrays']}; non-X-rays rejected: {m['rejected']:.1%} "
          f"of {m['non_xrays']} (missed: {', '.join(m['missed']) or 'none'})")
    return 0


def _results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", default=None, help="a zoo folder (train.py --out) or assets/ (default)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")


@command("results", _results_args)
def _results(args: argparse.Namespace) -> int:
    """The results table: per model mean ± std over seeds on test, ensembles, hierarchical."""
    from .zoo import ASSETS, results_table, to_markdown

    table = results_table(args.root or ASSETS)
    print(table.to_csv(index=False) if args.csv else to_markdown(table), end="")
    return 0


def _bundle_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("zoo", help="the folder train.py --zoo wrote")
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--assets", default=None, help="default: the repo's assets/")
    p.add_argument("--leave-out", nargs="*", default=[], metavar="TASK/ARCH",
                   help="best checkpoints not to export (e.g. three_class/resnet18: assets/models stays under 100 MB)")
    p.add_argument("--repredict", action="store_true",
                   help="first rewrite every seed's prediction files through the fp32 inference path")


@command("zoo-bundle", _bundle_args)
def _bundle(args: argparse.Namespace) -> int:
    """Copy a trained zoo's predictions and logs into assets/, export best seeds as fp16 safetensors,
    add the hierarchical model's predictions, write assets/results.{csv,md}."""
    from .zoo import ASSETS, bundle, repredict, to_markdown

    if args.repredict:
        with tqdm_progress("re-predicting") as progress:
            print(f"re-predicted {len(repredict(args.zoo, args.data_dir, progress))} prediction files")
    print(to_markdown(bundle(args.zoo, args.data_dir, args.assets or ASSETS, args.leave_out)), end="")
    return 0


def _load_plugins() -> None:
    """Subcommands that live next to their concept register on import."""
    import importlib

    for mod in ("report", "inference_cli"):
        try:
            importlib.import_module(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise


def build_parser() -> argparse.ArgumentParser:
    _load_plugins()
    parser = argparse.ArgumentParser(prog="python -m pneumo_core",
                                     description="Pneumo Explorer command line (not for clinical use).")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
