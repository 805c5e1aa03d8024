"""Untrusted input handled where it cannot hurt the server: a small pool of limited worker processes.

Browsers and image services decode what strangers send in a separate, limited process; so do we. A
:class:`Sandbox` runs one function, named ``"module:function"`` (so this bottom layer imports none of the
layers that use it), in worker processes: fresh interpreters (``python -m pneumo_core.sandbox``, none of the
server's memory or threads, one BLAS thread) that hold an address-space limit (``RLIMIT_AS``: what the worker
had after importing the function's module, plus :attr:`Limits.memory`) and a CPU-time limit per call
(``RLIMIT_CPU``), while the caller waits at most :attr:`Limits.wall_seconds`. A worker that runs out of memory,
is killed or takes too long is discarded and replaced, and the caller gets one line (the ``unsafe`` error class
given, e.g. :class:`~pneumo_core.errors.UnsafeImageError`). A worker whose peak resident memory passed
:attr:`Limits.recycle_bytes` ends after its answer, so what a large input took goes back to the system.
Errors of :mod:`pneumo_core.errors` raised by the function travel back as themselves.
"""
from __future__ import annotations

import importlib
import os
import queue
import resource
import socket
import subprocess
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from pneumo_core import errors
from pneumo_core.errors import PneumoError


@dataclass(frozen=True)
class Limits:
    #: address space a worker may add to what it holds after its imports
    memory: int = 1024 * 2**20
    #: CPU seconds one call may take
    cpu_seconds: int = 20
    #: seconds the caller waits for one call before the worker is killed
    wall_seconds: float = 30.0
    #: a worker whose peak resident memory passed this is replaced after its answer
    recycle_bytes: int = 400 * 2**20


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


def _resolve(task: str):
    module, _, name = task.partition(":")
    return getattr(importlib.import_module(module), name)


def _serve(conn: Connection, task: str, limits: Limits, preload: tuple[str, ...]) -> None:  # pragma: no cover
    """The worker's loop: args in; ("ok", value, retiring) or ("error", class name, message, retiring) out. It
    ends (``retiring``) after a call that took it near its memory limit or past ``recycle_bytes``."""
    func = _resolve(task)  # imported before the limit: counted in the baseline
    for module in preload:
        importlib.import_module(module)
    ceiling = _vm_bytes() + limits.memory
    if hasattr(resource, "RLIMIT_AS") and ceiling > limits.memory:
        resource.setrlimit(resource.RLIMIT_AS, (ceiling, ceiling))
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            return
        used = sum(resource.getrusage(resource.RUSAGE_SELF)[:2])
        resource.setrlimit(resource.RLIMIT_CPU, (int(used) + limits.cpu_seconds, resource.RLIM_INFINITY))
        try:
            reply: tuple = ("ok", func(*args))
        except PneumoError as exc:
            reply = ("error", type(exc).__name__, str(exc))
        except Exception as exc:  # noqa: BLE001 - whatever hostile input makes a library raise
            reply = ("error", "", f"{type(exc).__name__}")
        del args
        # an allocation refused at the limit surfaces as MemoryError or as a library's own error (pydicom
        # wraps it in RuntimeError): the peak address space tells which
        out_of_memory = _status_bytes("VmPeak") >= ceiling - 64 * 2**20
        if out_of_memory and reply[0] == "error":
            reply = ("error", "", f"it needs more than {limits.memory // 2**20} MB")
        retiring = out_of_memory or _status_bytes("VmHWM") > limits.recycle_bytes
        try:
            conn.send((*reply, retiring))
        except (OSError, ValueError):
            return
        if retiring:
            return  # what it took goes back to the system; the pool starts a fresh worker


class _Worker:
    """One worker process talking over a socket pair (not multiprocessing's spawn, which would re-run the
    server's main script)."""

    def __init__(self, task: str, limits: Limits, preload: tuple[str, ...]) -> None:
        ours, theirs = socket.socketpair()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        args = [str(theirs.fileno()), task, str(limits.memory), str(limits.cpu_seconds), str(limits.recycle_bytes),
                *preload]
        self.proc = subprocess.Popen([sys.executable, "-m", "pneumo_core.sandbox", *args], env=env,
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


class Sandbox:
    """``size`` worker processes running ``task`` (``"module:function"``); :meth:`call` is thread-safe
    (Streamlit runs sessions in threads) and waits for a free worker. ``unsafe``: the error class for a worker
    that died, overran or ran out of memory; ``preload``: modules a worker imports before its limit; ``verb``:
    what the messages say could not be done safely."""

    def __init__(self, task: str, unsafe: type[PneumoError], size: int = 2, limits: Limits = Limits(),
                 preload: tuple[str, ...] = (), verb: str = "handled") -> None:
        self.task, self.unsafe, self.size, self.limits, self.preload = task, unsafe, size, limits, preload
        self.verb = verb  # "NAME: could not be <verb> safely"
        self._idle: queue.Queue[_Worker | None] = queue.Queue()
        for _ in range(size):
            self._idle.put(None)  # a slot: the worker starts on first use
        self.replaced = 0  # workers that died or overran their time, discarded
        self.recycled = 0  # workers that ended after a call took much memory

    def warm(self) -> None:
        """Start every worker now, so the first call does not wait for one's imports."""
        slots = [self._idle.get() for _ in range(self.size)]
        for i, w in enumerate(slots):
            if w is None:
                slots[i] = _Worker(self.task, self.limits, self.preload)
        for w in slots:
            self._idle.put(w)

    def call(self, *args: Any, name: str = "input") -> Any:
        """``task(*args)`` in a worker; a :mod:`pneumo_core.errors` error it raised is raised here as itself;
        anything else, a worker that died or overran its time, as ``unsafe`` naming ``name``."""
        w = self._idle.get()
        try:
            if w is None or not w.alive():
                if w is not None:
                    self.replaced += 1
                    w.kill()
                w = _Worker(self.task, self.limits, self.preload)
            try:
                w.conn.send(args)
                if not w.conn.poll(self.limits.wall_seconds):
                    raise self.unsafe(f"{name}: could not be {self.verb} safely (took more than "
                                      f"{self.limits.wall_seconds:.0f} s); refused")
                reply = w.conn.recv()
                if reply[-1]:
                    w.kill()
                    w, self.recycled = None, self.recycled + 1
            except self.unsafe:
                w.kill()
                w, self.replaced = None, self.replaced + 1
                raise
            except (EOFError, OSError):
                w.kill()
                w, self.replaced = None, self.replaced + 1
                raise self.unsafe(f"{name}: could not be {self.verb} safely (the worker ran out of memory or time "
                                  "on it); refused") from None
        finally:
            self._idle.put(w)
        if reply[0] == "ok":
            return reply[1]
        cls = getattr(errors, reply[1], None) if reply[1] else None
        if isinstance(cls, type) and issubclass(cls, PneumoError):
            raise cls(reply[2])
        raise self.unsafe(f"{name}: could not be {self.verb} safely ({reply[2]}); refused")

    def close(self) -> None:
        """Stop every worker (waits for those in use)."""
        for _ in range(self.size):
            w = self._idle.get()
            if w is not None:
                w.kill()
        for _ in range(self.size):
            self._idle.put(None)


if __name__ == "__main__":  # pragma: no cover - the worker process
    fd, task = int(sys.argv[1]), sys.argv[2]
    memory, cpu, recycle = (int(a) for a in sys.argv[3:6])
    _serve(Connection(fd), task, Limits(memory=memory, cpu_seconds=cpu, recycle_bytes=recycle), tuple(sys.argv[6:]))
