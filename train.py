#!/usr/bin/env python
"""Train the model zoo locally (logic in pneumo_core.training). Not for clinical use.

Examples:
    python train.py --task binary --arch efficientnet_lite0 --seed 0 1 2
    python train.py --zoo --out .            # the demo zoo, resumable: run it again to continue
    torchrun --nproc-per-node 2 train.py --task binary --arch resnet18   # DistributedDataParallel
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from pneumo_core import distributed
from pneumo_core.cli.registry import int_range, positive_number, probability
from pneumo_core.errors import PneumoError
from pneumo_core.models.checkpoints import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from pneumo_core.models.networks import ARCHS
from pneumo_core.data.tasks import TASKS
from pneumo_core.training.loop import TrainConfig, select_best_seed, train
from pneumo_core.training.study import DEMO_ZOO, load_study, plan as study_plan
from pneumo_core.training.zoo import export_best

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", choices=list(TASKS), default="binary")
    p.add_argument("--arch", choices=list(ARCHS), default="efficientnet_lite0")
    p.add_argument("--init", default=None, help="imagenet | scratch | PATH (default: imagenet where available)")
    p.add_argument("--seed", type=int, nargs="+", default=[0])
    p.add_argument("--data-dir", default="../shared/data/chest_xray")
    p.add_argument("--out", default="checkpoints", help="writes OUT/checkpoints/<task>/<arch>_seed<n>.pt, "
                   "OUT/runs/, OUT/predictions/ (default: ./checkpoints)")
    p.add_argument("--image-size", type=int_range(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE), default=224)
    p.add_argument("--epochs", type=int_range(0, 10_000), default=5)
    p.add_argument("--head-epochs", type=int_range(0, 10_000), default=0,
                   help="head-only epochs on the frozen backbone first")
    p.add_argument("--patience", type=int_range(0, 10_000), default=3)
    p.add_argument("--lr", type=positive_number, default=1e-4)
    p.add_argument("--batch-size", type=int_range(1, 4096), default=32)
    p.add_argument("--freeze-fraction", type=probability, default=0.0, help="share of backbone stages kept frozen")
    p.add_argument("--select", choices=["auto", "val_loss", "macro_f1", "auroc"], default="auto")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--hflip", action="store_true", help="random horizontal flips (off: left/right matters)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--limit", type=int_range(1, 10_000_000), default=None,
                   help="at most this many images per split (quick runs)")
    p.add_argument("--resume", action="store_true", help="continue interrupted runs; skip finished ones")
    p.add_argument("--zoo", action="store_true", help="train the whole demo zoo (implies --resume)")
    p.add_argument("--sync-bn", action="store_true",
                   help="under torchrun on GPUs: SyncBatchNorm (batch statistics over all processes)")
    p.add_argument("--lr-scaling", choices=["none", "linear"], default="none",
                   help="under torchrun: linear multiplies --lr by the number of processes (the effective "
                        "batch is --batch-size x processes); default none")
    p.add_argument("--teacher", nargs="+", default=[], metavar="PRED_FILE",
                   help="distillation: prediction files of the training split (python -m pneumo_core evaluate "
                        "--split train), e.g. one per EfficientNet-Lite0 seed; their mean probabilities are "
                        "soft targets beside the labels")
    p.add_argument("--distill-alpha", type=probability, default=0.5, help="weight of the teacher's soft targets (0..1)")
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="after training, export each best seed as fp16 safetensors into DIR (e.g. assets/models)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    base = TrainConfig(data_dir=a.data_dir, out=a.out, device=a.device, limit=a.limit, batch_size=a.batch_size,
                       augment=not a.no_augment, hflip=a.hflip, patience=a.patience, select=a.select,
                       sync_bn=a.sync_bn, lr_scaling=a.lr_scaling, teacher=tuple(a.teacher),
                       distill_alpha=a.distill_alpha)
    if a.zoo:
        # seed 0 of every model first, so a partial run already covers every architecture
        zoo = study_plan(load_study(DEMO_ZOO))  # experiments/demo_zoo/study.toml
        plan = ([dict(e, seeds=e["seeds"][:1]) for e in zoo]
                + [dict(e, seeds=e["seeds"]) for e in zoo if len(e["seeds"]) > 1])
    else:
        init = a.init or ("imagenet" if a.arch == "efficientnet_lite0" else "scratch")
        plan = [dict(task=a.task, arch=a.arch, init=init, image_size=a.image_size, epochs=a.epochs,
                     head_epochs=a.head_epochs, lr=a.lr, freeze_fraction=a.freeze_fraction, seeds=a.seed)]
    if a.zoo and a.teacher:
        print("error: --teacher distils one task and architecture, not the whole --zoo", file=sys.stderr)
        return 2
    try:
        distributed.init(a.device)  # under torchrun (more than one process): join its process group
        for entry in plan:
            entry = dict(entry)
            seeds = entry.pop("seeds")
            for seed in seeds:
                train(replace(base, seed=seed, **entry), resume=a.resume or a.zoo)
            if distributed.is_main():
                best = select_best_seed(a.out, entry["task"], entry["arch"])
                if best is not None:
                    print(f"best seed -> {best}")
                    if a.bundle:
                        print(f"bundled -> {export_best(a.out, entry['task'], entry['arch'], a.bundle)}")
            distributed.barrier()
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
