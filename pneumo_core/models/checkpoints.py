"""One checkpoint format for Hub and local files, loaded safely (``weights_only`` or safetensors).

On disk: the published dict ``{epoch, model_state_dict, metrics, ...}`` plus our metadata under the key
``pneumo``. Published checkpoints lack it: arch, task and outputs are inferred from the file's name,
folder and tensors.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pneumo_core.files import atomic_write, json_safe
from pneumo_core.errors import ArchitectureMismatchError, CheckpointError
from pneumo_core.models.networks import ARCHS, arch_of_state, get_arch
from pneumo_core.models.weights import file_fingerprint, read_raw
from pneumo_core.data.preprocessing import Preprocessing
from pneumo_core.data.tasks import TASKS, get_task
from pneumo_core.models.keys import names_bacteria_virus, task_of_folder

FORMAT_VERSION = 1
#: largest checkpoint file we read (ResNet50 in fp32 is ~95 MB)
MAX_CHECKPOINT_BYTES = 1024 * 2**20
#: input sizes a checkpoint may ask for (a 2048-px input already costs ~50 MB a batch item)
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 2048
#: input channels of every zoo network (a grayscale X-ray is repeated into each)
INPUT_CHANNELS = 3


@dataclass
class CheckpointMeta:
    arch: str
    task: str
    classes: list[str]
    n_outputs: int
    preprocessing: dict = field(default_factory=lambda: Preprocessing().to_dict())
    seed: int | None = None
    init: str | None = None
    data_fingerprint: str | None = None
    threshold: float = 0.5
    image_size: int | None = None
    epochs: int | None = None
    recipe: dict = field(default_factory=dict)
    source: str = "pneumo_core"  # or "published (inferred)"
    format_version: int = FORMAT_VERSION

    @property
    def prep(self) -> Preprocessing:
        return Preprocessing.from_dict(self.preprocessing)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CheckpointMeta":
        known = {f for f in cls.__dataclass_fields__}
        try:
            return cls(**{k: v for k, v in d.items() if k in known})
        except TypeError:
            missing = [k for k in ("arch", "task", "classes", "n_outputs") if k not in d]
            raise CheckpointError(f"checkpoint metadata lacks {', '.join(missing) or 'required fields'}") from None


@dataclass
class Checkpoint:
    state_dict: dict[str, torch.Tensor]
    meta: CheckpointMeta
    epoch: int | None = None
    metrics: dict = field(default_factory=dict)
    path: str | None = None
    fingerprint: str | None = None

    def build(self) -> nn.Module:
        """The model with these weights, in eval mode (strict load)."""
        return build_from_state(self.meta.arch, self.meta.n_outputs, self.state_dict, self.path or "checkpoint")


def save_checkpoint(
    path: str | Path,
    state_dict: dict[str, torch.Tensor],
    meta: CheckpointMeta,
    epoch: int | None = None,
    metrics: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write a checkpoint atomically (temp file + rename). ``extra`` holds e.g. optimizer state for resume."""
    path = Path(path)
    payload: dict[str, Any] = {
        "epoch": epoch,
        "model_state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
        "metrics": metrics or {},
        "pneumo": meta.to_dict(),
    }
    if extra:
        payload.update(extra)
    atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return path


def infer_arch(state_dict: dict[str, torch.Tensor], name_hint: str = "") -> str:
    """The zoo architecture these tensors belong to (file name first, checked against the keys)."""
    stem = Path(name_hint).stem.lower()
    for arch in sorted(ARCHS, key=len, reverse=True):
        if stem.startswith(arch):
            return arch
    arch = arch_of_state(state_dict)
    if arch is not None:
        return arch
    raise CheckpointError(
        f"cannot tell the architecture of {name_hint or 'this checkpoint'} from its name or tensors; "
        f"name the file after one of {', '.join(ARCHS)}"
    )


def infer_task(path: str | Path, n_outputs: int) -> str:
    p = Path(path)
    task = "bacteria_virus" if names_bacteria_virus(p.stem.lower()) else task_of_folder(p.parent.name.lower())
    if task == "bacteria_virus" and n_outputs == 3:
        task = "three_class"
    if task is None:
        task = "three_class" if n_outputs == 3 else "binary"
    return task


def load_checkpoint(path: str | Path, arch: str | None = None, task: str | None = None) -> Checkpoint:
    """Load ours or a published checkpoint (.pt/.pth/.safetensors); metadata inferred when absent."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is more than a checkpoint we read "
                              f"({MAX_CHECKPOINT_BYTES / 2**20:.0f} MB)")
    sd, rest = read_raw(path)
    if "pneumo" in rest and isinstance(rest["pneumo"], dict):
        try:
            meta = CheckpointMeta.from_dict(rest["pneumo"])
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from None
    else:
        a = arch or infer_arch(sd, path.name)
        head = sd.get(get_arch(a).head + ".weight")
        if head is None:
            try:
                found = infer_arch(sd)
            except CheckpointError:
                found = "no architecture of the zoo"
            raise ArchitectureMismatchError(
                f"{path}: the file is named like {a}, but its tensors are those of {found}"
            )
        n_out = int(head.shape[0])
        t = task or infer_task(path, n_out)
        meta = CheckpointMeta(arch=a, task=t, classes=list(get_task(t).classes) if t in TASKS else [],
                              n_outputs=n_out, source="published (inferred)",
                              preprocessing=Preprocessing(image_size=get_arch(a).image_size).to_dict())
    validate_meta(meta, sd, str(path))
    _check_place(meta, path)
    metrics = rest.get("metrics") if isinstance(rest.get("metrics"), dict) else {}
    epoch = rest.get("epoch")
    return Checkpoint(sd, meta, int(epoch) if _is_number(epoch) else None,
                      {str(k): _metric(v) for k, v in metrics.items()}, str(path), file_fingerprint(path))


def _metric(v: Any) -> Any:
    """A metric as a float when it is a finite number (10**400 or NaN: None), else as stored."""
    if isinstance(v, (int, float, np.generic)) and not isinstance(v, bool):
        try:
            f = float(v)
        except (OverflowError, TypeError, ValueError):
            return None
        return f if math.isfinite(f) else None
    return v


def _check_place(meta: CheckpointMeta, path: Path) -> None:
    """The task the metadata claims must fit where the file lies in the published layout: a binary model
    relabelled as BACTERIA-vs-VIRUS (same two outputs) in ``binary/`` is refused, not trusted."""
    folder = path.parent.name.lower()
    named_bv = names_bacteria_virus(path.stem.lower())
    if (folder in TASKS and folder != meta.task) or (named_bv and meta.task != "bacteria_virus"):
        raise CheckpointError(f"{path}: the metadata says task {meta.task}, but the file lies in the layout's "
                              f"{'bacteria_virus name' if named_bv else folder + '/ folder'} (its folder would be "
                              f"{meta.task}/); refused")


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.number)) and not isinstance(v, bool) and math.isfinite(float(v))


def validate_meta(meta: CheckpointMeta, state_dict: dict[str, torch.Tensor] | None = None,
                  where: str = "checkpoint") -> None:
    """Refuse, by name, metadata that would give wrong numbers or cost unbounded memory: an unknown arch or
    task, a class list or head output count that does not fit the task, preprocessing we cannot apply (or
    not with the network's 3 input channels),
    an input size outside 16..2048 px, a threshold outside [0, 1]."""
    if not isinstance(meta.arch, str) or meta.arch not in ARCHS:
        raise CheckpointError(f"{where}: unknown architecture {meta.arch!r} (expected one of {', '.join(ARCHS)})")
    if not isinstance(meta.task, str) or meta.task not in TASKS:
        raise CheckpointError(f"{where}: unknown task {meta.task!r} (expected one of {', '.join(TASKS)})")
    task = get_task(meta.task)
    if not isinstance(meta.classes, (list, tuple)) or tuple(meta.classes) != tuple(task.classes):
        raise CheckpointError(f"{where}: task {task.name} has the classes {', '.join(task.classes)} in this order, "
                              f"but the metadata lists {str(meta.classes)[:80]} (swapped, repeated or foreign "
                              "class names would label every verdict wrongly)")
    allowed = sorted({task.n_outputs, len(task.classes)})
    if not _is_int(meta.n_outputs) or meta.n_outputs not in allowed:
        raise CheckpointError(f"{where}: the model has {meta.n_outputs!r} output(s), but task {task.name} "
                              f"({', '.join(task.classes)}) needs {' or '.join(map(str, allowed))}")
    head = (state_dict or {}).get(get_arch(meta.arch).head + ".weight")
    if head is not None and head.ndim >= 1 and int(head.shape[0]) != meta.n_outputs:
        raise ArchitectureMismatchError(f"{where}: expected {meta.arch} with {meta.n_outputs} output(s), but the "
                                        f"weights are for {meta.arch} with {int(head.shape[0])} output(s)")
    try:
        prep = meta.prep
        ok = all(_is_number(v) for v in prep.mean) and all(_is_number(v) and v > 0 for v in prep.std)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise CheckpointError(f"{where}: invalid preprocessing metadata ({exc})") from None
    if not ok:
        raise CheckpointError(f"{where}: invalid preprocessing metadata (mean {prep.mean}, std {prep.std})")
    if not _is_int(prep.channels) or prep.channels != INPUT_CHANNELS:  # True == 1 in Python: ints only
        raise CheckpointError(f"{where}: invalid preprocessing metadata (channels {prep.channels!r}; the zoo's "
                              f"networks take {INPUT_CHANNELS})")
    for size in (prep.image_size, meta.image_size):
        if size is not None and not (_is_int(size) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE):
            raise CheckpointError(f"{where}: image size {size!r} is outside {MIN_IMAGE_SIZE}..{MAX_IMAGE_SIZE} px")
    if not (_is_number(meta.threshold) and 0.0 <= meta.threshold <= 1.0):
        raise CheckpointError(f"{where}: threshold {meta.threshold!r} is not a probability in [0, 1]")


def build_from_state(arch: str, n_outputs: int, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Build ``arch`` and load ``state_dict`` strictly; a mismatch names both sides."""
    model = get_arch(arch).build(n_outputs)
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        try:
            found = infer_arch(state_dict)
        except CheckpointError:
            found = "an unknown architecture"
        head = state_dict.get(get_arch(arch).head + ".weight")
        outs = f" with {head.shape[0]} output(s)" if head is not None else ""
        raise ArchitectureMismatchError(
            f"{source}: expected {arch} with {n_outputs} output(s), but the weights are for {found}{outs} "
            f"({str(exc).splitlines()[0]})"
        ) from None
    return model.eval()


def export_safetensors(ckpt: Checkpoint, path: str | Path, dtype: torch.dtype = torch.float16) -> Path:
    """Write weights (floating tensors cast to ``dtype``) and metadata as safetensors, atomically."""
    from safetensors.torch import save_file

    tensors = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in ckpt.state_dict.items()}
    meta = {"pneumo": json.dumps(ckpt.meta.to_dict()), "metrics": json.dumps(json_safe(ckpt.metrics)),
            "epoch": str(ckpt.epoch), "exported": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    path = Path(path)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))
    return path
