"""Uploads decoded where they cannot hurt the server: :func:`decode_untrusted` runs
:func:`~pneumo_core.data.images.load_grayscale` in a :class:`~pneumo_core.sandbox.Sandbox` of two worker
processes, each limited to 1 GB more than its imports and 20 CPU-s a file, the server waiting at most 30 s.
A file that exhausts a worker is one line, :class:`~pneumo_core.errors.UnsafeImageError` ("could not be decoded
safely"). The checks in ``images`` still run first, inside the worker: they refuse the common bombs cheaply and
with a precise message; the worker's limits catch whatever they miss.
"""
from __future__ import annotations

import threading

import numpy as np

from pneumo_core.errors import UnsafeImageError
from pneumo_core.sandbox import Limits, Sandbox

TASK = "pneumo_core.data.images:load_grayscale"
#: the DICOM decoders, imported with the loader before the worker's limit is set
PRELOAD = ("pydicom.pixels",)


def decoder_pool(size: int = 2, limits: Limits = Limits()) -> Sandbox:
    """A pool of image decoders (see the module's docstring)."""
    return Sandbox(TASK, UnsafeImageError, size=size, limits=limits, preload=PRELOAD, verb="decoded")


_POOL: Sandbox | None = None
_POOL_LOCK = threading.Lock()


def default_pool() -> Sandbox:
    """The process's decoder pool, made on first use."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = decoder_pool()
        return _POOL


def decode_untrusted(data: bytes, name: str, pool: Sandbox | None = None) -> np.ndarray:
    """An upload's bytes as ``load_grayscale(data, name=name)`` returns them, decoded in a bounded worker of
    ``pool`` (the process's own by default)."""
    return (pool or default_pool()).call(bytes(data), name, name=name)
