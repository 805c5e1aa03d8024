#!/usr/bin/env bash
# Issue 13's per-seed rule for the 224-px binary ResNet18: of each seed's progressive run (PROG,
# scripts/progressive_224.sh) and distilled run (DIST, scripts/distill_224.sh), keep the one with the lower
# validation log loss (the progressive one on a tie, or where the seed has no distilled run), copied into
# PICK; then bundle PICK, so the zoo's rule picks the bundled seed among them:
#   DIST=../zoo224_distill1 scripts/pick_224.sh && python -m pneumo_core zoo-bundle ../zoo224_pick --repredict
set -eu
cd "$(dirname "$0")/.."
PROG=${PROG:-../zoo224}
DIST=${DIST:-../zoo224_distill}
PICK=${PICK:-../zoo224_pick}
python - "$PROG" "$DIST" "$PICK" <<'PY'
import shutil, sys
from pathlib import Path
from pneumo_core.evaluation.artifacts import load_set, seeds_of
from pneumo_core.evaluation.predictions import align
from pneumo_core.evaluation.selection import val_loss

prog, dist, pick = map(Path, sys.argv[1:])
seeds = seeds_of(prog, "binary", "resnet18")
if not seeds:
    sys.exit(f"no ResNet18 run with prediction files under {prog}")
for s in seeds:
    loss = {"progressive": val_loss(load_set(prog, "binary", "resnet18", s, "val"))}
    if s in seeds_of(dist, "binary", "resnet18"):
        vals = align([load_set(root, "binary", "resnet18", s, "val") for root in (prog, dist)])  # same images
        loss["distilled"] = val_loss(vals[1])
    kept = min(loss, key=loss.get)
    src, stem = (prog if kept == "progressive" else dist), f"resnet18_seed{s}"
    for rel in (f"checkpoints/binary/{stem}.pt", f"predictions/binary/{stem}_val.csv",
                f"predictions/binary/{stem}_test.csv", f"runs/binary/{stem}"):
        dst = pick / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():
            shutil.rmtree(dst)
        (shutil.copytree if (src / rel).is_dir() else shutil.copyfile)(src / rel, dst)
    print(f"ResNet18 seed {s}: validation log loss " + ", ".join(f"{k} {v:.4f}" for k, v in loss.items())
          + f" -> {kept} into {pick}")
PY
