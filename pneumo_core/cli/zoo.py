"""``results``, ``zoo-bundle`` and ``zoo-refresh``."""
from __future__ import annotations

import argparse

from pneumo_core.cli.registry import command, int_range, tqdm_progress


def _results_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", nargs="?", default=None, help="a zoo folder (train.py --out) or assets/ (default)")
    p.add_argument("--csv", action="store_true", help="print CSV instead of Markdown")
    p.add_argument("--bootstrap", type=int_range(0, 100_000), default=1000, metavar="N",
                   help="resamples for the 95%% intervals, 0..100000 (default 1000; 0: none)")


@command("results", _results_args)
def _results(args: argparse.Namespace) -> int:
    """The results table: per model mean ± std over seeds on test with 95 % intervals, ensembles,
    the hierarchical model."""
    from pneumo_core.evaluation.results import results_table
    from pneumo_core.files import ASSETS

    table = results_table(args.root or ASSETS, args.bootstrap)
    print(table.to_csv(index=False) if args.csv else table.to_markdown(index=False))
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
    """Copy a trained zoo's predictions and logs into assets/, export the rule's best seeds as fp16
    safetensors with the rule's thresholds, add the hierarchical model's predictions, write
    assets/results.{csv,md}."""
    from pneumo_core.files import ASSETS
    from pneumo_core.training.zoo import bundle, repredict

    if args.repredict:
        with tqdm_progress("re-predicting") as progress:
            print(f"re-predicted {len(repredict(args.zoo, args.data_dir, progress))} prediction files")
    with tqdm_progress("hierarchical model") as progress:
        table = bundle(args.zoo, args.data_dir, args.assets or ASSETS, args.leave_out, progress)
    print(table.to_markdown(index=False))
    return 0


def _refresh_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--assets", default=None, help="default: the repo's assets/")


@command("zoo-refresh", _refresh_args)
def _refresh(args: argparse.Namespace) -> int:
    """Re-apply the zoo's rules to assets/ without a trained zoo: each bundled checkpoint's threshold,
    the hierarchical model's predictions, the results table."""
    from pneumo_core.files import ASSETS
    from pneumo_core.training.zoo import refresh_thresholds, write_hierarchical, write_results

    assets = args.assets or ASSETS
    for line in refresh_thresholds(assets):
        print(line)
    with tqdm_progress("hierarchical model") as progress:
        write_hierarchical(assets, args.data_dir, progress)
    print(write_results(assets).to_markdown(index=False))
    return 0
