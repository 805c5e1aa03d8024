#!/usr/bin/env bash
# Binary ResNet18 (3 seeds) and DenseNet121 (2 seeds) at 224 px by progressive resizing (issue 13):
# each seed starts from its own 128-px (ResNet18) / 112-px (DenseNet121) checkpoint of the same seed and is
# fine-tuned at 224 px. Resumable: run it again to continue (train.py --resume skips finished runs).
# The seeds the zoo bundled at low resolution start from those weights (from git: assets/models now holds the
# 224-px models); other seeds train at low resolution first (into $LOW). Two cores: run nothing else heavy meanwhile.
#   nohup scripts/progressive_224.sh > progressive_224.log 2>&1 &
set -eu
cd "$(dirname "$0")/.."
. scripts/lib_224.sh
D=${PNEUMO_DATA:-../shared/data/chest_xray}
LOW=${LOW:-../zoo128}
OUT=${OUT:-../zoo224}
mkdir -p "$LOW" "$OUT"
T="python train.py --task binary --data-dir $D --resume --image-size 224"
low() {  # arch seed size epochs: the low-resolution run of one seed (skipped when done)
  python train.py --task binary --data-dir "$D" --resume --arch "$1" --seed "$2" --init scratch \
    --image-size "$3" --epochs "$4" --out "$LOW"
}
read -r RPX REP <<< "$(recipe_224 resnet18)"; read -r DPX DEP <<< "$(recipe_224 densenet121)"
RI=$(bundled_low binary/resnet18); RI=$(low_res "$RI" "$RPX")
DI=$(bundled_low binary/densenet121); DI=$(low_res "$DI" "$DPX")
RS=$(ck_meta "$RI" seed); DS=$(ck_meta "$DI" seed)
$T --arch resnet18 --seed "$RS" --init "$RI" --epochs "$REP" --out "$OUT"
$T --arch densenet121 --seed "$DS" --init "$DI" --epochs "$DEP" --out "$OUT"
for s in 0 1 2; do
  [ "$s" = "$RS" ] && continue
  low resnet18 "$s" "$RPX" 8
  $T --arch resnet18 --seed "$s" --init "$LOW/checkpoints/binary/resnet18_seed$s.pt" --epochs "$REP" --out "$OUT"
done
S2=$(( DS == 0 ? 1 : 0 ))
low densenet121 "$S2" "$DPX" 5
$T --arch densenet121 --seed "$S2" --init "$LOW/checkpoints/binary/densenet121_seed$S2.pt" --epochs "$DEP" --out "$OUT"
echo "done: python -m pneumo_core results $OUT"
