#!/usr/bin/env bash
# The hierarchical model's DenseNet121 at 224 px (issue 13): three-class and BACTERIA-vs-VIRUS (stage B),
# each fine-tuned for 2 epochs at 224 px from the bundled 112-px checkpoint of its seed, as
# scripts/progressive_224.sh does for binary. Bundle one only where it beats the 112-px model on validation
# (same seed, same validation images). Resumable; two cores: run nothing else heavy meanwhile.
#   nohup scripts/tasks_224.sh > tasks_224.log 2>&1 &
set -eu
cd "$(dirname "$0")/.."
D=${PNEUMO_DATA:-../shared/data/chest_xray}
OUT=${OUT:-../zoo224}
M=assets/models/checkpoints
seed_of() { python -c "from pneumo_core.models.checkpoints import load_checkpoint as l; print(l('$1').meta.seed)"; }
for pair in "three_class $M/three_class/densenet121.safetensors" \
            "bacteria_virus $M/hierarchical/densenet121_bacteria_virus.safetensors"; do
  set -- $pair
  python train.py --task "$1" --arch densenet121 --seed "$(seed_of "$2")" --init "$2" --image-size 224 \
    --epochs 2 --data-dir "$D" --out "$OUT" --resume
done
echo "done: compare runs/<task>/densenet121*_seed*/metrics.json val loss in $OUT with assets/runs"
