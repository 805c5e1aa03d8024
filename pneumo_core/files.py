"""Where files live and how they are written: the repo's assets, the cache folder, atomic writes,
JSON that stays valid.

An atomic write goes to a temp file in the same folder, then is renamed over the target: a crash
mid-write leaves the old file (or none), never a half-written one.
"""
from __future__ import annotations

import glob
import html
import json
import math
import os
import re
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

from pneumo_core.errors import OutputError

T = TypeVar("T")

#: the repository's committed artifacts: bundled models, prediction files, run logs, results, examples
ASSETS = Path(__file__).resolve().parent.parent / "assets"
#: each study's record: its spec (``study.toml``), runs, decisions and report
EXPERIMENTS = ASSETS.parent / "experiments"
#: the demo zoo's spec: the study ``assets/models`` bundles (``train.py --zoo`` trains it)
DEMO_ZOO = EXPERIMENTS / "demo_zoo" / "study.toml"


def cache_root(override: str | Path | None = None) -> Path:
    """The cache folder: ``override``, else ``$PNEUMO_CACHE``, else ``~/.cache/pneumo_explorer``."""
    return Path(override or os.environ.get("PNEUMO_CACHE", Path.home() / ".cache" / "pneumo_explorer"))


#: a temp file of an atomic write untouched this long was left by a killed process (kill -9, power loss)
STALE_TMP_AGE_S = 15 * 60


def clean_stale_temps(path: str | Path, max_age_s: float = STALE_TMP_AGE_S) -> list[Path]:
    """Remove ``.<name>.*.tmp`` siblings of ``path`` older than ``max_age_s`` (left by a killed writer);
    recent ones may belong to a writer still at work and stay. Returns what was removed."""
    path = Path(path)
    removed = []
    now = time.time()
    try:
        candidates = list(path.parent.glob(f".{glob.escape(path.name)}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        try:
            if now - tmp.lstat().st_mtime > max_age_s:
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # gone already, or not ours to remove
            pass
    return removed


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)``, then move the temp file onto ``path``; the temp file is removed on failure.
    As a plain ``open(path, "w")`` would: a link is written through (its target replaced, the link kept), an
    existing file keeps its mode, a new one gets the umask's (not mkstemp's 0600).
    Temp files a killed writer left beside ``path`` are cleaned first (:func:`clean_stale_temps`)."""
    path = Path(path)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(path)
    try:
        mode = path.stat().st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _probe(folder: Path, what: str) -> None:
    """Create ``folder`` if needed and check a file can be made in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".pneumo-probe.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except FileExistsError:
        raise OutputError(f"{what}: {folder} is a file, not a folder") from None
    except OSError as exc:
        raise OutputError(f"{what}: cannot write in {folder} ({exc.strerror or exc})") from None


def writable_file(path: str | Path) -> Path:
    """``path`` if a file can be written there (checked before the work that fills it: nothing computed is
    lost to a typo); :class:`OutputError` naming the problem otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise OutputError(f"{path}: is a folder; give a file name to write")
    _probe(path.parent, str(path))
    return path


def writable_folder(path: str | Path) -> Path:
    """``path`` created if needed, if files can be written in it; :class:`OutputError` otherwise."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: is a file; give a folder to write the files into")
    _probe(path, str(path))
    return path


def write_cache(path: str | Path, write: Callable[[], object]) -> bool:
    """Run ``write()`` (which writes the cache entry ``path``, atomically); a cache that cannot be written (no
    permission, a full disk) costs a recomputation next time, never the result in hand: a warning, False."""
    try:
        write()
        return True
    except OSError as exc:
        warnings.warn(f"cache not written: {path} ({exc.strerror or exc})", RuntimeWarning, stacklevel=2)
        return False


def json_safe(obj: Any) -> Any:
    """JSON-safe: NaN and infinities -> null, numpy scalars, arrays and torch tensors -> Python."""
    if hasattr(obj, "detach"):  # a torch tensor (no torch import in this layer)
        obj = obj.detach().cpu().numpy()
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


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def safe_cell(value: Any) -> Any:
    """A text cell a spreadsheet will not run: text starting with ``= + - @`` (or a tab / carriage return)
    gets a leading apostrophe. Numbers and other values pass unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def safe_filename(name: str, default: str = "image", max_len: int = 100) -> str:
    """A file name made only of letters, digits, ``. _ -``, without folders, not starting with
    ``. - = + @``, at most ``max_len`` characters; ``default`` when nothing is left."""
    base = re.split(r"[\\/]", str(name))[-1]
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", base).lstrip("._-=+@")[:max_len].rstrip(".")
    return base or default


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:=&])")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]+")


def escape_markdown(text: object) -> str:
    """``text`` from outside (a query parameter, a file name, a class name of a checkpoint or prediction file)
    shown literally, on one line, where Streamlit renders Markdown (``st.markdown``, ``st.caption``, alerts,
    ``st.image`` captions, widget labels): no link, image, autolink (``<http://x>``, a bare URL), HTML, entity,
    emphasis, heading, ``:colour[...]`` or LaTeX. Line breaks and control characters become one space."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", str(text)))


def escape_html(text: object) -> str:
    """``text`` from outside shown literally in a plotly label or title (plotly renders ``<a href>``, ``<b>``
    and entities there)."""
    return html.escape(_CONTROL.sub(" ", str(text)), quote=True)


def unique_names(items: list[tuple[str, T]]) -> list[tuple[str, T]]:
    """``(name, value)`` pairs with repeated names told apart (``x.png``, ``x (2).png``), order kept: two uploads
    or inputs of one name are two images, not one."""
    seen: set[str] = set()
    out = []
    for name, value in items:
        new, n = name, 1
        while new in seen:
            n += 1
            stem, dot, ext = name.rpartition(".")
            new = f"{stem} ({n}).{ext}" if dot and stem else f"{name} ({n})"
        seen.add(new)
        out.append((new, value))
    return out
