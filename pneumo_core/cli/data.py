"""``dataset`` and ``ood-build``."""
from __future__ import annotations

import argparse

from pneumo_core.cli.registry import command
from pneumo_core.files import dumps


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="a Kermany-layout folder: ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/")
    p.add_argument("--val-fraction", type=float, default=0.12, help="patient-aware validation share per class")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON")


@command("dataset", _dataset_args)
def _dataset(args: argparse.Namespace) -> int:
    """Images per split and class, patients per split, and the patient-aware validation split of a dataset."""
    from pneumo_core.data.datasets import dataset_summary

    s = dataset_summary(args.root, args.val_fraction, args.seed)
    if args.json:
        print(dumps(s, indent=2))
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
    from pneumo_core.explain import ood as ood
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.data.arrays import load_array

    from pneumo_core.files import writable_file

    writable_file(args.out or ood.DEFAULT_PATH)
    gate = ood.build(args.data_dir)
    path = gate.save(args.out or ood.DEFAULT_PATH)
    m = ood.measure(gate, load_array(kermany_splits(args.data_dir)["test"], 224))
    print(f"wrote {path}")
    print(f"test X-rays accepted: {m['accepted']:.1%} of {m['xrays']}; non-X-rays rejected: {m['rejected']:.1%} "
          f"of {m['non_xrays']} (missed: {', '.join(m['missed']) or 'none'})")
    return 0
