"""Reading weight files safely: ``torch.load(weights_only=True)`` or safetensors, nothing that runs code.

The lowest layer of ``models``: it knows file formats, not architectures.
"""
from __future__ import annotations

import hashlib
import json
import pickle
import threading
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pneumo_core.errors import CheckpointError, UnsafeCheckpointError
from pneumo_core.sandbox import Limits, Sandbox


def file_fingerprint(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# numpy scalars often end up in published `metrics`; rebuilding them runs no user code. numpy 1.x
# pickles name the scalar "numpy.core.multiarray.scalar", numpy 2.x "numpy._core.multiarray.scalar".
_SAFE_NUMPY: list = [np.dtype, np._core.multiarray.scalar,
                     (np._core.multiarray.scalar, "numpy.core.multiarray.scalar")] + [
    getattr(np.dtypes, n) for n in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType")
]


def check_zip_records(path: str | Path) -> None:
    """Refuse a zip checkpoint with compressed records before torch inflates them: ``torch.save`` stores
    every record uncompressed, so a file no bigger than the size cap never inflates past it; a deflated record
    (1.3 MB can inflate to 1 GB) is not something torch wrote."""
    try:
        with zipfile.ZipFile(path) as z:
            packed = [i.filename for i in z.infolist() if i.compress_type != zipfile.ZIP_STORED]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a zip (an old pickle-format file) or a broken one: torch.load says which
    if packed:
        raise UnsafeCheckpointError(f"{path}: refused to load: {len(packed)} record(s) of the file are compressed "
                                    f"(e.g. {packed[0][:60]!r}), which torch.save never writes; a compressed "
                                    "record can inflate far beyond the file's size")


def torch_load_safe(path: str | Path) -> Any:
    """``torch.load(weights_only=True)``; a pickle that would run code is refused, and nothing runs; so is a
    zip whose records are compressed (:func:`check_zip_records`)."""
    check_zip_records(path)
    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines()]
        hint = next((ln for ln in lines if "global" in ln.lower()), "")
        if not hint:  # not a code payload: the bytes are simply not a checkpoint
            raise CheckpointError(f"{path}: not a readable PyTorch checkpoint "
                                  f"({lines[-1] if lines else exc})") from None
        raise UnsafeCheckpointError(
            f"{path}: refused to load: the file carries pickled objects that could run code "
            f"({hint}). Only plain weight files are accepted."
        ) from None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})") from None


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None
    return tensors, meta


#: metadata JSON deeper than this is refused (ours is two levels deep)
MAX_JSON_DEPTH = 32


def _depth(obj: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, counted without recursion; stops counting past ``limit``."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def _json_field(text: str, key: str, path: Path) -> Any:
    """A JSON metadata field of a safetensors file; malformed or absurdly nested JSON is a CheckpointError."""
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"{path}: safetensors metadata {key!r} is not valid JSON "
                              f"({type(exc).__name__}: {str(exc)[:80]})") from None
    if _depth(obj, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{path}: safetensors metadata {key!r} is nested deeper than {MAX_JSON_DEPTH} levels")
    return obj


def _strip_prefix(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith("module.") for k in sd):
        return {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_raw(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, the rest of the payload) of any supported file."""
    if path.suffix == ".safetensors":
        tensors, smeta = _read_safetensors(path)
        rest: dict = {}
        for key in ("pneumo", "metrics"):
            if key in smeta:
                rest[key] = _json_field(smeta[key], key, path)
        if "epoch" in smeta:
            try:
                rest["epoch"] = int(smeta["epoch"]) if smeta["epoch"] not in ("", "None") else None
            except ValueError:
                raise CheckpointError(f"{path}: safetensors metadata 'epoch' is not a number "
                                      f"({smeta['epoch'][:40]!r})") from None
        return {k: v.float() if v.is_floating_point() else v for k, v in tensors.items()}, rest
    obj = torch_load_safe(path)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        sd, rest = obj["model_state_dict"], {k: v for k, v in obj.items() if k != "model_state_dict"}
    elif isinstance(obj, dict) and "state_dict" in obj:
        sd, rest = obj["state_dict"], {k: v for k, v in obj.items() if k != "state_dict"}
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, rest = obj, {}
    else:
        raise CheckpointError(f"{path}: no model_state_dict in this file "
                              f"(keys: {list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__})")
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise CheckpointError(f"{path}: model_state_dict is not a mapping of names to tensors "
                              f"(a {type(sd).__name__})")
    odd = next((k for k, v in sd.items() if not (v.is_floating_point() or k.endswith("num_batches_tracked"))), None)
    if odd is not None:
        raise CheckpointError(f"{path}: tensor {odd!r} holds {str(sd[odd].dtype).replace('torch.', '')}, not "
                              "floating-point weights")
    return _strip_prefix(dict(sd)), rest


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    return read_raw(Path(path))[0]


def probe(path: str) -> int:
    """Read a weight file as :func:`read_raw` does and return its tensor count: what a sandbox worker runs."""
    return len(read_raw(Path(path))[0])


#: a checkpoint's worker: torch imported (its baseline), 1 GB more for the file's tensors, 60 CPU-s
CHECK_LIMITS = Limits(memory=1024 * 2**20, cpu_seconds=60, wall_seconds=120, recycle_bytes=3 * 2**30)
_CHECKER: Sandbox | None = None
_CHECKER_LOCK = threading.Lock()


def check_in_worker(path: str | Path) -> None:
    """Read ``path`` once in a limited worker process before this process loads it (sources from outside the
    bundle): a file that would exhaust memory or time (an inflation bomb, a pickle that builds huge objects)
    costs a worker, which is replaced; its own error comes back as itself."""
    global _CHECKER
    with _CHECKER_LOCK:
        if _CHECKER is None:
            _CHECKER = Sandbox("pneumo_core.models.weights:probe", UnsafeCheckpointError, size=1,
                               limits=CHECK_LIMITS, verb="loaded")
    _CHECKER.call(str(path), name=str(path))
