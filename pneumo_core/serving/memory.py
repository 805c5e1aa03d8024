"""The server process's memory: what Streamlit, the garbage collector and the C allocator keep after a
visitor leaves, and what collecting costs each run.

Measured in ``bench/hardening_bench.py`` (three 40-MP uploads, three rounds): without these the server
grew ~220 MB a round and never gave it back; with them it returns to within the caches' size of its
baseline. All no-ops where they do not apply (no glibc, no running server).
"""
from __future__ import annotations

import ctypes
import gc
import importlib
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Iterator

M_ARENA_MAX = -8  # glibc mallopt parameter
_LIBC: object = None
_HEAPS: int | None = None
_WARM: threading.Thread | None = None
_WARM_LOCK = threading.Lock()
#: the libraries and pneumo_core modules the pages import once there is an image (see warm_up)
HEAVY = ("pandas", "torch", "torchvision", "pytorch_grad_cam", "sklearn.metrics", "skimage.measure", "pydicom",
         "pneumo_core.data.images", "pneumo_core.inference.predictors", "pneumo_core.inference.verdicts",
         "pneumo_core.explain.cams", "pneumo_core.explain.ood", "pneumo_core.explain.audit",
         "pneumo_core.explain.lungs", "pneumo_core.evaluation.selection", "pneumo_core.visualize.charts")


def passive_threads() -> bool:
    """Let torch's OpenMP threads sleep when they have no work (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning
    for it: with two threads on a server whose cores a browser, other sessions or other work share, the spinning
    tripled what an upload cost (1.73 CPU-s against 0.52, ``bench/class_bench.py``). Read once, when OpenMP
    loads with torch: False (nothing changed) once torch is imported or where the variable is set already."""
    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def serving() -> bool:
    """True inside a running Streamlit server; False in a plain import and under AppTest (which installs a
    stand-in runtime: ``runtime.exists()`` is true there, and background work would outlive the test)."""
    from streamlit import runtime

    return runtime.exists() and type(runtime.get_instance()) is runtime.Runtime


def _libc():
    global _LIBC
    if _LIBC is None:
        try:
            lib = ctypes.CDLL("libc.so.6")
            lib.malloc_trim, lib.mallopt  # glibc only
            _LIBC = lib
        except (OSError, AttributeError):
            _LIBC = False
    return _LIBC


def limit_heaps(n: int = 2) -> None:
    """At most ``n`` malloc heaps: Streamlit runs every script run in a new thread, and glibc gives threads
    up to 8 heaps a core, each keeping its freed memory for itself. Once per process."""
    global _HEAPS
    if _HEAPS != n and (lib := _libc()):
        lib.mallopt(M_ARENA_MAX, n)
        _HEAPS = n


def give_back_freed_memory() -> None:
    """Return the heaps' free pages to the system (``malloc_trim``; ~0.1 ms): after a large upload its
    decoding buffers are freed but otherwise kept by the process."""
    if lib := _libc():
        lib.malloc_trim(0)


def warm_up(modules: tuple[str, ...] = HEAVY, delay: float = 2.0, server_only: bool = True) -> threading.Thread | None:
    """Once per process, in the background, ``delay`` s after the first page (while the browser loads the
    page, the imports would slow it by ~2 s): import what the pages need for an image, then collect and move
    every live object out of the collector's reach (``gc.freeze``). Returns the thread (``None`` outside a
    running server with ``server_only``: AppTest, a plain import).

    Streamlit runs a full ``gc.collect(2)`` after every run (``runner.postScriptGC``); over the ~540,000
    objects of torch, pandas and scikit-learn that took 0.35-0.45 s holding the GIL on this 2-core machine,
    after the answer was drawn but before the run's end reached the browser, so every tweak waited for it.
    Frozen, they are skipped (the collection takes ~10 ms with the models loaded). Frozen early, usually
    before any visitor holds images: an object frozen while alive is still freed with its last reference,
    but a cycle frozen with it never is (freezing after runs instead kept ~50 MB of a visitor's images in
    bench/hardening_bench.py). Its imports and page runs take turns (:func:`page_run`)."""
    global _WARM
    if server_only and not serving():
        return None
    with _WARM_LOCK:  # two first visitors at once start one thread
        if _WARM is None:
            _WARM = threading.Thread(target=_import_and_freeze, args=(modules, delay), name="pneumo-warm-up",
                                     daemon=True)
            _WARM.start()
    return _WARM


class _Gate:
    """Page runs share it; each of the warm-up's imports takes it alone, so no library is imported by two
    threads at once (torch can come out half-initialised) and a page waits at most for one library."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._runs = 0
        self._importing = False  # an import under way, or waiting for the runs under way to end

    @contextmanager
    def run(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._importing)
            self._runs += 1
        try:
            yield
        finally:
            with self._cond:
                self._runs -= 1
                self._cond.notify_all()

    def quiet(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until no page run is under way; whether none is."""
        with self._cond:
            return self._cond.wait_for(lambda: self._runs == 0, timeout)

    @contextmanager
    def importing(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._importing)
            self._importing = True  # no new run starts from here (a busy class cannot starve the warm-up)
            self._cond.wait_for(lambda: self._runs == 0)
        try:
            yield
        finally:
            with self._cond:
                self._importing = False
                self._cond.notify_all()


_GATE = _Gate()


def page_run():
    """A context for one page run: it never overlaps an import of the warm-up thread."""
    return _GATE.run()


def give_way(timeout: float = 2.0) -> bool:
    """For background work between its steps: wait (up to ``timeout`` s, so a busy class cannot starve it) until
    no visitor's page run is under way in this process, so the visitor's run has the core to itself."""
    return _GATE.quiet(timeout)


def _import_and_freeze(modules: tuple[str, ...], delay: float) -> None:
    time.sleep(delay)
    for name in modules:
        try:
            with _GATE.importing():
                importlib.import_module(name)
        except Exception:  # noqa: BLE001 - a page that needs it names the problem itself
            pass
    try:
        from pneumo_core.data.workers import default_pool

        default_pool().warm()  # the upload decoders, started before the first upload needs one
    except Exception:  # noqa: BLE001 - an upload starts its worker itself
        pass
    gc.collect()
    gc.freeze()


def close_with_browser() -> None:
    """Close this session as soon as its browser leaves, its uploads and images freed with it.

    Streamlit keeps a disconnected session for a reconnect (``server.disconnectedSessionTTL``) and then
    drops it without freeing its uploaded files, so each visitor's uploads stayed in the server for good.
    A session that uploaded something is therefore not kept for reconnection: a network blip reloads the
    page from its URL (model, threshold and linked image kept, the upload not)."""
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None and serving():
            runtime.get_instance().mark_session_nonresumable(ctx.session_id)
    except (ImportError, AttributeError):  # another Streamlit: uploads stay bounded, only kept longer
        pass


def drop_uploads(files: list) -> None:
    """Free the bytes Streamlit holds for these uploaded files of this session (files a page leaves out: held
    until the session ends otherwise, 800 MB of them kept 1 GB). A no-op outside a running server."""
    try:
        from streamlit import runtime
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None or not serving():
            return
        manager = runtime.get_instance().uploaded_file_mgr
        for f in files:
            manager.remove_file(ctx.session_id, f.file_id)
    except (ImportError, AttributeError):  # another Streamlit: the files stay until the session ends
        pass
