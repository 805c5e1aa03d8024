#!/usr/bin/env bash
# Issue 13's per-seed rule for a 224-px binary model (ARCH: resnet18, the default, or densenet121): of each
# seed's progressive run (PROG, scripts/progressive_224.sh) and its distilled runs (DIST, one or more run folders
# of scripts/distill_224.sh, e.g. one teacher and the ensemble teacher), keep the one with the lowest validation
# log loss (on a tie the first: progressive, then DIST in the order given), copied into PICK; then bundle PICK,
# so the zoo's rule picks the bundled seed among them:
#   DIST="../zoo224_distill1 ../zoo224_distill3" scripts/pick_224.sh \
#     && python -m pneumo_core zoo-bundle ../zoo224_pick --repredict
set -eu
cd "$(dirname "$0")/.."
PROG=${PROG:-../zoo224}
DIST=${DIST:-../zoo224_distill}
PICK=${PICK:-../zoo224_pick}
ARCH=${ARCH:-resnet18}
python - "$ARCH" "$PROG" "$PICK" $DIST <<'PY'
import shutil, sys
from pathlib import Path
from pneumo_core.evaluation.artifacts import load_set, seeds_of
from pneumo_core.evaluation.predictions import align
from pneumo_core.evaluation.selection import val_loss

arch = sys.argv[1]
prog, pick, *dists = map(Path, sys.argv[2:])
seeds = seeds_of(prog, "binary", arch)
if not seeds:
    sys.exit(f"no {arch} run with prediction files under {prog}")
for s in seeds:
    roots = [prog] + [d for d in dists if s in seeds_of(d, "binary", arch)]
    vals = align([load_set(root, "binary", arch, s, "val") for root in roots])  # same images
    loss = {("progressive" if root == prog else f"distilled {root.name}"): val_loss(v) for root, v in zip(roots, vals)}
    kept = min(loss, key=loss.get)  # the first of equals
    src, stem = roots[list(loss).index(kept)], f"{arch}_seed{s}"
    for rel in (f"checkpoints/binary/{stem}.pt", f"predictions/binary/{stem}_val.csv",
                f"predictions/binary/{stem}_test.csv", f"runs/binary/{stem}"):
        dst = pick / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.is_dir():
            shutil.rmtree(dst)
        (shutil.copytree if (src / rel).is_dir() else shutil.copyfile)(src / rel, dst)
    print(f"{arch} seed {s}: validation log loss " + ", ".join(f"{k} {v:.4f}" for k, v in loss.items())
          + f" -> {kept} into {pick}")
PY
