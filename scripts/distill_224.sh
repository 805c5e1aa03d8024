#!/usr/bin/env bash
# Distillation at 224 px (issue 13, the step after progressive resizing): the binary ResNet18 (ARCH=resnet18,
# the default) or DenseNet121 (ARCH=densenet121) of one seed, fine-tuned at 224 px from its own 128-px / 112-px
# checkpoint exactly as scripts/progressive_224.sh does (3 / 2 epochs), but with
# the EfficientNet-Lite0 ensemble's probabilities on the training images as soft targets beside the labels
# (train.py --teacher, alpha 0.5). The script ends by comparing both runs' validation log loss: the distilled
# one is worth keeping (and the other seeds' distillation) only if it wins there. Resumable like train.py --resume.
#   nohup scripts/distill_224.sh > distill_224.log 2>&1 &      (after progressive_224.sh; two cores)
#   TEACHER_SEEDS=2 OUT=../zoo224_distill1 scripts/distill_224.sh   (the bundled teacher alone: no retraining)
#   ARCH=densenet121 SEED=1 OUT=../zoo224_distill3 scripts/distill_224.sh
set -eu
cd "$(dirname "$0")/.."
. scripts/lib_224.sh
D=${PNEUMO_DATA:-../shared/data/chest_xray}
LOW=${LOW:-../zoo128}
PROG=${PROG:-../zoo224}
TEACH=${TEACH:-../teacher}
OUT=${OUT:-../zoo224_distill}
SEED=${SEED:-0}
ARCH=${ARCH:-resnet18}
read -r LOWPX EPOCHS <<< "$(recipe_224 "$ARCH")" && [ -n "$EPOCHS" ] || exit 2
mkdir -p "$TEACH" "$OUT"
A=assets/models/checkpoints/binary
# the teacher: the EfficientNet-Lite0 seeds of the zoo's recipe in TEACHER_SEEDS (default all three; the bundled
# best seed's weights are shipped, the others are trained again: ~40 min each on a 2-core AVX2 CPU in fp32),
# each predicting the training split
BEST=$(ck_meta "$A/efficientnet_lite0.safetensors" seed)
TEACHER_SEEDS=${TEACHER_SEEDS:-0 1 2}
for s in $TEACHER_SEEDS; do
  case $s in *[!0-9]*) echo "error: TEACHER_SEEDS must be seeds separated by spaces, not '$TEACHER_SEEDS'" >&2; exit 2;; esac
done
[ -n "${TEACHER_SEEDS// /}" ] || { echo "error: TEACHER_SEEDS is empty" >&2; exit 2; }
files=()
for s in $TEACHER_SEEDS; do
  ck="$A/efficientnet_lite0.safetensors"
  if [ "$s" != "$BEST" ]; then
    python train.py --task binary --arch efficientnet_lite0 --seed "$s" --init imagenet --image-size 224 \
      --head-epochs 3 --epochs 3 --freeze-fraction 0.4 --data-dir "$D" --out "$TEACH" --resume
    ck="$TEACH/checkpoints/binary/efficientnet_lite0_seed$s.pt"
  fi
  f="$TEACH/efficientnet_lite0_seed${s}_train.csv"
  [ -f "$f" ] || python -m pneumo_core evaluate --checkpoint "$ck" --data-dir "$D" --split train --out "$f"
  files+=("$f")
done
init="$LOW/checkpoints/binary/${ARCH}_seed$SEED.pt"
BI=$(bundled_low "binary/$ARCH")
[ "$SEED" = "$(ck_meta "$BI" seed)" ] && init=$BI
init=$(low_res "$init" "$LOWPX")
python train.py --task binary --arch "$ARCH" --seed "$SEED" --init "$init" --image-size 224 --epochs "$EPOCHS" \
  --data-dir "$D" --out "$OUT" --resume --teacher "${files[@]}" --distill-alpha 0.5
python - "$PROG" "$OUT" "$ARCH" "$SEED" <<'PY'
import json, sys
prog, out, arch, seed = sys.argv[1:]
loss = {name: json.load(open(f"{root}/runs/binary/{arch}_seed{seed}/metrics.json"))["val"]["loss"]
        for name, root in (("progressive", prog), ("distilled", out))}
print(f"validation log loss, {arch} seed {seed} at 224 px: progressive {loss['progressive']:.4f}, "
      f"distilled {loss['distilled']:.4f} -> keep the {min(loss, key=loss.get)} one")
PY
