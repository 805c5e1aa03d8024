"""Where files live and how they are written: the repo's assets, the cache folder, atomic writes,
JSON that stays valid.

An atomic write goes to a temp file in the same folder, then is renamed over the target: a crash
mid-write leaves the old file (or none), never a half-written one.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

#: the repository's committed artifacts: bundled models, prediction files, run logs, results, examples
ASSETS = Path(__file__).resolve().parent.parent / "assets"


def cache_root(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$PNEUMO_CACHE``, else ``~/.cache/pneumo_explorer``."""
    return Path(override or os.environ.get("PNEUMO_CACHE", Path.home() / ".cache" / "pneumo_explorer"))


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the temp file onto ``path``; the temp file is removed on failure.
    The file gets the mode a plain ``open()`` would give it (umask respected), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN and infinities -> null, numpy scalars and arrays -> Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def dumps(obj: Any, **kwargs) -> str:
    """``json.dumps`` that never writes NaN (invalid JSON): non-finite numbers become null."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(dumps(obj, indent=2)))
