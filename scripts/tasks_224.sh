#!/usr/bin/env bash
# The hierarchical model's DenseNet121 at 224 px (issue 13): three-class and BACTERIA-vs-VIRUS (stage B),
# each fine-tuned for 2 epochs at 224 px from the 112-px checkpoint bundled before (taken from git), as
# scripts/progressive_224.sh does for binary. Bundle one only where it beats the 112-px model on validation
# (same seed, same validation images). Resumable; two cores: run nothing else heavy meanwhile.
#   nohup scripts/tasks_224.sh > tasks_224.log 2>&1 &
set -eu
cd "$(dirname "$0")/.."
D=${PNEUMO_DATA:-../shared/data/chest_xray}
OUT=${OUT:-../zoo224}
LOW=${LOW:-../zoo128}
. scripts/lib_224.sh
run() {  # task FOLDER/STEM of its bundled 112-px checkpoint (from git: assets/models now holds the 224-px ones)
  local init seed px epochs
  read -r px epochs <<< "$(recipe_224 densenet121)"
  init=$(low_res "$(bundled_low "$2")" "$px")
  seed=$(ck_meta "$init" seed)
  python train.py --task "$1" --arch densenet121 --seed "$seed" --init "$init" --image-size 224 \
    --epochs "$epochs" --data-dir "$D" --out "$OUT" --resume
}
run three_class three_class/densenet121
run bacteria_virus hierarchical/densenet121_bacteria_virus
echo "done: compare runs/<task>/densenet121*_seed*/metrics.json val loss in $OUT with assets/runs"
