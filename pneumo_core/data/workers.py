"""Untrusted image bytes decoded where they cannot hurt the server: a small pool of worker processes.

Browsers and image services decode what strangers send in a separate, limited process; so do we. Each
worker is a fresh Python (none of the server's memory or threads) that runs
:func:`~pneumo_core.data.images.load_grayscale` under an address-space limit (``RLIMIT_AS``: what it
had after its imports plus :data:`WORKER_MEMORY`) and a CPU-time limit per file (``RLIMIT_CPU``), while the
server waits at most :data:`WALL_SECONDS`. A worker that runs out of memory, is killed or takes too long is
discarded and replaced, and the caller gets one line: ":class:`UnsafeImageError`: could not be decoded
safely". A worker whose peak memory grew past :data:`RECYCLE_BYTES` is replaced after its answer, so what a
large image took goes back to the system.

The checks in ``images`` still run first, inside the worker: they refuse the common bombs cheaply and with a
precise message; the worker's limits catch whatever they miss.
"""
from __future__ import annotations

import os
import queue
import resource
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from dataclasses import dataclass

import numpy as np

from pneumo_core import errors
from pneumo_core.errors import ImageLoadError, UnsafeImageError

#: address space a worker may add to what it holds after its imports
WORKER_MEMORY = 1024 * 2**20
#: CPU seconds a worker may spend on one file (a 40-MP PNG takes ~1 s here)
CPU_SECONDS = 20
#: seconds the server waits for one file before the worker is killed
WALL_SECONDS = 30.0
#: a worker whose peak resident memory passed this is replaced after its answer
RECYCLE_BYTES = 400 * 2**20
#: workers in the default pool
POOL_SIZE = 2


@dataclass(frozen=True)
class Limits:
    memory: int = WORKER_MEMORY
    cpu_seconds: int = CPU_SECONDS
    wall_seconds: float = WALL_SECONDS
    recycle_bytes: int = RECYCLE_BYTES


def _vm_bytes() -> int:
    """This process's address space now (Linux ``/proc``; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return 0


def _status_bytes(field: str) -> int:
    """A ``/proc/self/status`` figure (``VmPeak``, ``VmHWM``) in bytes; 0 where there is none. Not getrusage:
    a child's ru_maxrss carries its parent's peak across exec."""
    try:
        with open("/proc/self/status") as f:
            return next(int(ln.split()[1]) * 1024 for ln in f if ln.startswith(field + ":"))
    except (OSError, StopIteration, ValueError):
        return 0


def _serve(conn, limits: Limits) -> None:  # pragma: no cover - runs in the worker process
    """The worker's loop: (data, name) in; ("ok", array, retiring) or ("error", class name, message, retiring)
    out. It ends (``retiring``) after a file that took it near its memory limit or past RECYCLE_BYTES."""
    from pneumo_core.data.images import load_grayscale  # imported before the limit: counted in the baseline

    import pydicom.pixels  # noqa: F401 - the DICOM decoders, likewise

    ceiling = _vm_bytes() + limits.memory
    if hasattr(resource, "RLIMIT_AS") and ceiling > limits.memory:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    while True:
        try:
            data, name = conn.recv()
        except (EOFError, OSError):
            return
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        resource.setrlimit(resource.RLIMIT_CPU, (int(used) + limits.cpu_seconds, resource.RLIM_INFINITY))
        try:
            reply = ("ok", load_grayscale(data, name=name))
        except ImageLoadError as exc:
            reply = ("error", type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever a hostile file makes a decoder raise
            reply = ("error", "UnsafeImageError", f"{name}: could not be decoded safely ({type(exc).__name__})")
        del data
        # an allocation refused at the limit surfaces as MemoryError or as a decoder's own error (pydicom
        # wraps it in RuntimeError): the peak address space tells which
        out_of_memory = _status_bytes("VmPeak") >= ceiling - 64 * 2**20
        if out_of_memory and reply[0] == "error":
            reply = ("error", "UnsafeImageError", f"{name}: could not be decoded safely (it needs more than "
                     f"{limits.memory // 2**20} MB to decode); refused")
        retiring = out_of_memory or _status_bytes("VmHWM") > limits.recycle_bytes
        try:
            conn.send((*reply, retiring))
        except (OSError, ValueError):
            return
        if retiring:
            return  # what it took goes back to the system; the pool starts a fresh worker


class _Worker:
    """One decoder: ``python -m pneumo_core.data.workers FD ...`` talking over a socket pair (a fresh
    interpreter, one BLAS thread; not multiprocessing's spawn, which would re-run the server's main script)."""

    def __init__(self, limits: Limits) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        args = [str(theirs.fileno()), str(limits.memory), str(limits.cpu_seconds), str(limits.recycle_bytes)]
        self.proc = subprocess.Popen([sys.executable, "-m", "pneumo_core.data.workers", *args], env=env,
                                     pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, close_fds=True)
        theirs.close()
        self.conn = Connection(ours.detach())

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:  # pragma: no cover
            pass
        self.conn.close()


class DecoderPool:
    """``size`` decoder processes; :meth:`decode` is thread-safe (Streamlit runs sessions in threads) and
    waits for a free worker."""

    def __init__(self, size: int = POOL_SIZE, limits: Limits = Limits()) -> None:
        self.size, self.limits = size, limits
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # a slot: the worker starts on first use
        self.replaced = 0  # workers that died or overran their time, discarded
        self.recycled = 0  # workers that ended after a file took much memory

    def warm(self) -> None:
        """Start every worker now (each ~1 s of imports), so the first upload does not wait for one."""
        slots = [self._idle.get() for _ in range(self.size)]
        for i, w in enumerate(slots):
            if w is None:
                slots[i] = _Worker(self.limits)
        for w in slots:
            self._idle.put(w)

    def decode(self, data: bytes, name: str) -> np.ndarray:
        """``load_grayscale(data, name)`` in a worker; its ImageLoadError re-raised here, a worker that died
        or overran its time as :class:`UnsafeImageError`."""
        w = self._idle.get()
        try:
            if w is None or not w.alive():
                if w is not None:
                    self.replaced += 1
                    w.kill()
                w = _Worker(self.limits)
            try:
                w.conn.send((bytes(data), name))
                if not w.conn.poll(self.limits.wall_seconds):
                    raise UnsafeImageError(f"{name}: could not be decoded safely (took more than "
                                           f"{self.limits.wall_seconds:.0f} s); refused")
                reply = w.conn.recv()
                if reply[-1]:
                    w.kill()
                    w, self.recycled = None, self.recycled + 1
            except UnsafeImageError:
                w.kill()
                w, self.replaced = None, self.replaced + 1
                raise
            except (EOFError, OSError, BrokenPipeError):
                w.kill()
                w, self.replaced = None, self.replaced + 1
                raise UnsafeImageError(f"{name}: could not be decoded safely (the decoder ran out of memory or "
                                       "time on it); refused") from None
        finally:
            self._idle.put(w)
        if reply[0] == "ok":
            return reply[1]
        cls = getattr(errors, reply[1], None)
        raise (cls if isinstance(cls, type) and issubclass(cls, ImageLoadError) else ImageLoadError)(reply[2])

    def close(self) -> None:
        """Stop every worker (waits for those in use)."""
        for _ in range(self.size):
            w = self._idle.get()
            if w is not None:
                w.kill()
        for _ in range(self.size):
            self._idle.put(None)


_POOL: DecoderPool | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> DecoderPool:
    """The process's decoder pool, made on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = DecoderPool()
        return _POOL


def decode_untrusted(data: bytes, name: str) -> np.ndarray:
    """An upload's bytes as :func:`~pneumo_core.data.images.load_grayscale` returns them, decoded in a
    bounded worker process (see the module's docstring)."""
    return default_pool().decode(data, name)


if __name__ == "__main__":  # pragma: no cover - the worker process
    fd, memory, cpu, recycle = (int(a) for a in sys.argv[1:5])
    _serve(Connection(fd), Limits(memory=memory, cpu_seconds=cpu, recycle_bytes=recycle))
