# Shared by the 224-px scripts (sourced, from the repository root of a git clone).
# The last commit whose assets/models held the low-resolution ResNet18 (128 px) and DenseNet121 (112 px) models:
LOWREV=42c2014
recipe_224() {  # ARCH: "LOW_PX EPOCHS", the resolution a 224-px fine-tuning starts from and its epochs at 224 px
  case $1 in
    resnet18) echo "128 3" ;;
    densenet121) echo "112 2" ;;
    *) echo "error: ARCH must be resnet18 or densenet121, not '$1'" >&2; return 2 ;;
  esac
}
ck_meta() {  # FILE FIELD: seed | image_size of a checkpoint
  python -c "from pneumo_core.models.checkpoints import load_checkpoint as l; m = l('$1').meta; \
print(m.seed if '$2' == 'seed' else m.preprocessing['image_size'])"
}
low_res() {  # FILE MAX: print FILE if its model sees at most MAX px; a fine-tuning to 224 px must start below it
  local s
  s=$(ck_meta "$1" image_size)
  if [ "$s" -gt "$2" ]; then
    echo "error: $1 is a $s-px model; the 224-px fine-tuning starts from a low-resolution checkpoint" >&2
    return 1
  fi
  echo "$1"
}
bundled_low() {  # FOLDER/STEM, e.g. binary/resnet18: the checkpoint bundled before the switch to 224 px, from git into $LOW
  local f="$LOW/${1//\//_}_bundled_$LOWREV.safetensors"
  mkdir -p "$LOW"
  if [ ! -s "$f" ]; then
    git show "$LOWREV:assets/models/checkpoints/$1.safetensors" > "$f.tmp"
    mv "$f.tmp" "$f"
  fi
  echo "$f"
}
