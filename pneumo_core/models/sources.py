"""Where checkpoints come from: a Hugging Face Hub repo, a local folder in the same layout, the bundle.

The layout (what ``train.py`` writes; :mod:`pneumo_core.models.keys` names every file)::

    checkpoints/{binary,three_class,bacteria_virus}/<arch>[_seed<n>].{pt,safetensors}

The published repo's ``checkpoints/hierarchical/<arch>_bacteria_virus.pt`` reads too.

A source lists :class:`CheckpointRef` entries and loads them as :class:`~pneumo_core.models.checkpoints.Checkpoint`.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from typing import TYPE_CHECKING

from pneumo_core.errors import CheckpointError, ModelError, PneumoError, SourceUnavailableError
from pneumo_core.files import ASSETS
from pneumo_core.models.keys import CHECKPOINT_SUFFIXES, ModelKey, parse_checkpoint_relpath

if TYPE_CHECKING:  # torch loads only when a model does: the app's first page renders without it
    from pneumo_core.models.checkpoints import Checkpoint

DEFAULT_REPO = "luanacarolina/pneumonia-chest-xray-classifier"
BUNDLED_DIR = ASSETS / "models"


@dataclass(frozen=True)
class CheckpointRef:
    task: str
    arch: str
    seed: int | None
    relpath: str  # e.g. checkpoints/binary/densenet121.pt

    @property
    def model_key(self) -> ModelKey:
        return ModelKey(self.task, self.arch, self.seed)

    @property
    def key(self) -> str:
        """``task/arch`` for the best (unseeded) checkpoint, ``task/arch/seedN`` for a seed's."""
        return self.model_key.source_key


def checkpoint_relpath(task: str, arch: str, seed: int | None = None, suffix: str = ".pt") -> str:
    """Where our layout puts the checkpoint of (task, arch, seed)."""
    return ModelKey(task, arch, seed).checkpoint_relpath(suffix)


def parse_relpath(relpath: str) -> CheckpointRef | None:
    """``checkpoints/<folder>/<stem>.<ext>`` (ours or the published layout) -> ref, or None for files outside
    the layout or of an architecture the zoo does not have."""
    key = parse_checkpoint_relpath(relpath)
    if key is None:
        return None
    from pneumo_core.models.networks import ARCHS

    if key.arch not in ARCHS:
        return None
    return CheckpointRef(key.task, key.arch, key.seed, "/".join(Path(relpath).parts[-3:]))


def _refs(relpaths) -> list[CheckpointRef]:
    refs = {r.relpath: r for r in map(parse_relpath, relpaths) if r is not None}
    # one ref per key; where both exist, the full-precision .pt wins over an fp16 export
    by_key: dict[str, CheckpointRef] = {}
    for r in sorted(refs.values(), key=lambda r: (r.key, not r.relpath.endswith(".pt"))):
        by_key.setdefault(r.key, r)
    return sorted(by_key.values(), key=lambda r: (r.task, r.arch, r.seed is not None, r.seed or 0))


class Source:
    label = "source"
    #: files from outside (a local folder, the Hub) are read once in a limited worker before they are loaded
    trusted = False

    def list(self) -> list[CheckpointRef]:
        raise NotImplementedError

    def path(self, ref: CheckpointRef) -> Path:
        raise NotImplementedError

    def find(self, key: str) -> CheckpointRef:
        """The ref for ``task/arch`` (or ``task/arch/seedN``)."""
        refs = self.list()
        for r in refs:
            if r.key == key:
                return r
        have = ", ".join(r.key for r in refs) or "nothing"
        raise SourceUnavailableError(f"{self.label} has no checkpoint {key!r} (it has: {have})")

    def load(self, ref: CheckpointRef | str) -> "Checkpoint":
        """The checkpoint; any failure of a bad file is a :class:`CheckpointError` naming it, never another
        exception, so a caller can skip one bad model and use the rest."""
        from pneumo_core.models.checkpoints import load_checkpoint

        if isinstance(ref, str):
            ref = self.find(ref)
        try:
            if not self.trusted:
                from pneumo_core.models.weights import check_in_worker

                check_in_worker(self.path(ref))
            return load_checkpoint(self.path(ref), arch=ref.arch, task=ref.task)
        except PneumoError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError, RuntimeError,
                MemoryError, OSError, EOFError) as exc:
            raise CheckpointError(f"{self.label}: {ref.relpath} cannot be loaded "
                                  f"({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0][:120] if str(exc) else ''})") from None

    def stamp(self, key: str) -> str:
        """What changes when the checkpoint behind ``key`` changes (a cache key part); "" where unknown."""
        return ""


class LocalSource(Source):
    """A folder holding ``checkpoints/...`` (what ``train.py --out`` writes), or that folder itself."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root).expanduser().resolve()  # one folder, one label (and one cache entry), however spelt
        self.root = root.parent if root.name == "checkpoints" else root
        self.label = f"local folder {self.root}"

    def list(self) -> list[CheckpointRef]:
        base = self.root / "checkpoints"
        if not base.is_dir():
            raise SourceUnavailableError(f"{self.root}: no checkpoints/ folder here "
                                         "(expected checkpoints/<task>/<arch>.pt)")
        return _refs(str(p.relative_to(self.root)) for p in base.glob("*/*") if p.is_file())

    def path(self, ref: CheckpointRef) -> Path:
        return self.root / ref.relpath

    def stamp(self, key: str) -> str:
        """``relpath:mtime_ns:size`` of the file behind ``key`` (a few stat calls, no listing)."""
        try:
            mk = ModelKey.parse(key)
        except ModelError:
            return ""
        for suffix in CHECKPOINT_SUFFIXES:
            for rel in mk.checkpoint_relpaths(suffix):
                p = self.root / rel
                try:
                    st = p.stat()
                except OSError:
                    continue
                return f"{p.name}:{st.st_mtime_ns}:{st.st_size}"
        return ""


def bundled_source() -> LocalSource:
    src = LocalSource(BUNDLED_DIR)
    src.label = "bundled demo models"
    src.trusted = True  # our own files, in the repository
    return src


_REACH: dict[str, tuple[float, bool]] = {}


def hub_reachable(endpoint: str | None = None, timeout: float = 3.0) -> bool:
    """A quick TCP check of the Hub endpoint (cached 60 s), so being offline never costs a long retry loop."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    url = urlparse(endpoint or constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    now = time.monotonic()
    hit = _REACH.get(host)
    if hit and now - hit[0] < 60:
        return hit[1]
    try:
        socket.create_connection((host, port), timeout=timeout).close()
        ok = True
    except OSError:
        ok = False
    _REACH[host] = (now, ok)
    return ok


class HubSource(Source):
    """A Hub repo in the published layout, through huggingface_hub and its cache.

    Online: lists the repo and downloads into the cache. Offline (no network, or ``HF_HUB_OFFLINE=1``):
    serves what the cache holds and says so in :attr:`status`.
    """

    def __init__(self, repo_id: str = DEFAULT_REPO, revision: str | None = None,
                 cache_dir: str | Path | None = None, timeout: float = 3.0) -> None:
        self.repo_id = repo_id
        self.revision = revision
        self.cache_dir = str(cache_dir) if cache_dir else None
        self.timeout = timeout
        self.label = f"Hub repo {repo_id}"
        self.status = ""

    @property
    def online(self) -> bool:
        return hub_reachable(timeout=self.timeout)

    def _cached_snapshot(self) -> Path | None:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(snapshot_download(self.repo_id, revision=self.revision, cache_dir=self.cache_dir,
                                          local_files_only=True, allow_patterns=["checkpoints/**"]))
        except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
            return None

    def list(self) -> list[CheckpointRef]:
        if self.online:
            from huggingface_hub import list_repo_files

            try:
                files = list_repo_files(self.repo_id, revision=self.revision)
                self.status = f"online: {self.repo_id}"
                return _refs(f for f in files if f.startswith("checkpoints/"))
            except Exception as exc:  # the Hub answered but refused (private, missing repo, HTTP error)
                self.status = f"Hub error for {self.repo_id} ({type(exc).__name__}); using the local cache"
        else:
            self.status = f"offline: the Hub cannot be reached; using the local cache of {self.repo_id}"
        snap = self._cached_snapshot()
        if snap is None:
            raise SourceUnavailableError(
                f"The Hugging Face Hub cannot be reached and {self.repo_id} is not in the local cache; "
                f"use the bundled models or a local checkpoints folder"
            )
        return _refs(str(p.relative_to(snap)) for p in (snap / "checkpoints").glob("*/*") if p.exists())

    def path(self, ref: CheckpointRef) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import LocalEntryNotFoundError

        try:
            return Path(hf_hub_download(self.repo_id, ref.relpath, revision=self.revision,
                                        cache_dir=self.cache_dir, local_files_only=not self.online,
                                        etag_timeout=self.timeout))
        except LocalEntryNotFoundError:
            raise SourceUnavailableError(
                f"{ref.relpath} of {self.repo_id} is not in the local cache and the Hub cannot be reached"
            ) from None
        except Exception as exc:
            raise SourceUnavailableError(f"downloading {ref.relpath} from {self.repo_id} failed: {exc}") from None


def parse_source(spec: str) -> tuple[Source, str | None]:
    """``hub:REPO_ID/task/arch``, ``DIR/task/arch`` or ``DIR`` -> (source, key or None)."""
    if spec.startswith("hub:"):
        parts = spec[4:].strip("/").split("/")
        if len(parts) < 2:
            raise CheckpointError(f"{spec}: expected hub:OWNER/REPO[/task/arch]")
        repo = "/".join(parts[:2])
        key = "/".join(parts[2:]) or None
        return HubSource(repo), key
    p = Path(spec).expanduser()
    if p.is_dir():
        return LocalSource(p), None
    # DIR/task/arch[/seedN]
    for cut in (2, 3):
        parts = spec.rstrip("/").split("/")
        if len(parts) > cut and Path("/".join(parts[:-cut]) or ".").is_dir():
            return LocalSource("/".join(parts[:-cut]) or "."), "/".join(parts[-cut:])
    raise CheckpointError(f"{spec}: not a checkpoint file, a checkpoints folder, or hub:REPO_ID/task/arch")


def resolve_checkpoint(spec: str) -> "Checkpoint":
    """A file, ``DIR/task/arch`` or ``hub:REPO_ID/task/arch`` -> loaded checkpoint."""
    from pneumo_core.models.checkpoints import load_checkpoint

    p = Path(spec).expanduser()
    if p.is_file():
        return load_checkpoint(p)
    source, key = parse_source(spec)
    if key is None:
        raise CheckpointError(f"{spec}: name a checkpoint as {spec.rstrip('/')}/<task>/<arch>")
    return source.load(key)

