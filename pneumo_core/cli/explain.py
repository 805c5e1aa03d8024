"""``explain-audit``: how good a model's heatmaps are on a dataset split (pneumo_core.explain.audit)."""
from __future__ import annotations

import argparse
import sys

from pneumo_core.cli.registry import command, tqdm_progress


def _audit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True,
                   help="a checkpoint file, DIR/task/arch (e.g. assets/models/checkpoints/binary/resnet18) or "
                        "hub:REPO_ID/task/arch")
    p.add_argument("--data-dir", required=True, help="a Kermany folder (chest_xray/{train,val,test}/...)")
    p.add_argument("--split", default="test", choices=["train", "val", "test", "val_official"])
    p.add_argument("--n", type=int, default=20, help="images: the first N by image id (default 20; 0 = all)")
    p.add_argument("--sample", action="store_true", help="a seeded random sample of N images instead of the first N")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and of the randomised copy")
    p.add_argument("--method", default="gradcam", help="CAM method (default gradcam)")
    p.add_argument("--no-sanity", action="store_true", help="skip the randomisation check")
    p.add_argument("--no-curves", action="store_true", help="skip the deletion / insertion curves")
    p.add_argument("--agree-with", metavar="SRC", default=None,
                   help="a second model of the same classes: how much its map (for the first model's class) "
                        "agrees with the first's (Spearman, IoU of the hottest 20 %%)")
    p.add_argument("--json", action="store_true")


SUMMARY_HELP = {
    "lung_share": "share of the map's positive mass inside the (approximate) lung mask; high is good",
    "lung_area": "the lung mask's share of the image: the lung_share of a map spread evenly",
    "border_share": "share on the outer 8 % of each side (markers, text); low is good",
    "randomization_spearman": "Spearman of the map vs the map with the last block and head re-initialised; "
                              "low is good",
    "deletion_auc": "probability as the hottest pixels are blurred away; low is good",
    "insertion_auc": "probability as the hottest pixels are restored onto a blurred image; high is good",
}


@command("explain-audit", _audit_args)
def _explain_audit(args: argparse.Namespace) -> int:
    """How good a model's heatmaps are on a dataset split: lung focus, border share, sanity check, curves."""
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.explain.audit import AGREEMENT_FIELDS, audit_images, summarise
    from pneumo_core.files import dumps
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import resolve_checkpoint

    from pneumo_core.explain.cams import METHODS

    if args.method not in METHODS:  # before any model loads
        print(f"error: unknown CAM method {args.method!r}; choose one of {', '.join(METHODS)}", file=sys.stderr)
        return 2
    predictor = Predictor(resolve_checkpoint(args.checkpoint))
    other = Predictor(resolve_checkpoint(args.agree_with)) if args.agree_with else None
    frame = kermany_splits(args.data_dir)[args.split].sort_values("image_id").reset_index(drop=True)
    if 0 < args.n < len(frame):
        frame = (frame.sample(args.n, random_state=args.seed).sort_values("image_id") if args.sample
                 else frame.iloc[:args.n]).reset_index(drop=True)
    with tqdm_progress(f"auditing {predictor.name}") as progress:
        table = audit_images(predictor, list(frame["path"]), args.method, sanity=not args.no_sanity,
                             curves=not args.no_curves, seed=args.seed, progress=progress,
                             agree_with=other)
    table.insert(0, "image_id", frame["image_id"].to_numpy())
    table.insert(1, "label", frame["label"].to_numpy())
    table = table.drop(columns="image")
    summary = summarise(table)
    if args.json:
        print(dumps({"checkpoint": args.checkpoint, "model": predictor.name, "task": predictor.task.name,
                     "split": args.split, "method": args.method, "agree_with": args.agree_with, "summary": summary,
                     "images": table.to_dict(orient="records")}, indent=2))
        return 0
    cols = ["image_id", "label", "cam_class", "probability", "lung_share", "border_share", "lung_area",
            "randomization_spearman", "deletion_auc", "insertion_auc", *(AGREEMENT_FIELDS if other else ())]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{predictor.name} ({args.method}) on {summary['n_images']} {args.split} images: means")
    for k, text in SUMMARY_HELP.items():
        print(f"  {k:<24}{summary[k]:>7.3f}   {text}")
    if other is not None:
        print(f"  agreement with {other.name}: Spearman {summary['agreement_spearman']:.3f}, IoU of the hottest "
              f"20 % {summary['agreement_iou']:.3f} (its map for the first model's class; 1 = the same map)")
    if summary["randomized_flat"]:
        print(f"  ({summary['randomized_flat']} randomised maps were flat: Spearman 0 by convention)")
    if summary["no_lung_mask"]:
        print(f"  ({summary['no_lung_mask']} images had no lung mask (too white) and no lung share)")
    if summary["cam_flat"]:
        print(f"  ({summary['cam_flat']} maps were flat and have no lung or border share)")
    return 0
