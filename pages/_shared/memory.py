"""The server process's memory: what Streamlit and the C allocator keep after a visitor leaves.

Measured in ``bench/hardening_bench.py`` (three 40-MP uploads, three rounds): without these the server
grew ~220 MB a round and never gave it back; with them it returns to within the caches' size of its
baseline. All no-ops where they do not apply (no glibc, no running server).
"""
from __future__ import annotations

import ctypes
import gc
import sys

M_ARENA_MAX = -8  # glibc mallopt parameter
_LIBC: object = None
_HEAPS: int | None = None
_FROZEN_AT = 0  # len(sys.modules) at the last freeze


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


def freeze_long_lived() -> None:
    """After a run that imported modules (the first page, the first image: torch, the models), collect once and
    move every live object out of the collector's reach (``gc.freeze``).

    Streamlit runs a full ``gc.collect(2)`` after every script run and fragment run (``runner.postScriptGC``),
    holding the GIL: over the ~550,000 objects of torch, pandas, plotly and the models that took 0.35-0.45 s
    on this 2-core machine, after the answer was drawn but before the run's end reached the browser, and the
    next tweak waited for it. After the freeze it scans only what runs create (< 1 ms). A frozen object is
    still freed when its last reference goes; only reference cycles among objects alive at a freeze stay, and
    freezes happen only when modules load (a handful per server)."""
    global _FROZEN_AT
    if len(sys.modules) > _FROZEN_AT:
        gc.collect()
        gc.freeze()
        _FROZEN_AT = len(sys.modules)


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
        if ctx is not None and runtime.exists():
            runtime.get_instance().mark_session_nonresumable(ctx.session_id)
    except (ImportError, AttributeError):  # another Streamlit: uploads stay bounded, only kept longer
        pass
