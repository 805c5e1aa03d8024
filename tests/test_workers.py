"""Untrusted bytes decoded in bounded worker processes (issue #29): the same arrays and errors as in
process, and a worker that runs out of memory or time is a one-line refusal, replaced for the next file."""
from __future__ import annotations

import os
import re
import signal

import numpy as np
import pytest
from PIL import Image

from pneumo_core.data.images import load_grayscale
from pneumo_core.data.workers import decode_untrusted, decoder_pool
from pneumo_core.sandbox import Limits
from pneumo_core.errors import ImageTooLargeError, NotAnImageError, UnsafeImageError
from tests.bombs import deflated_dicom_bomb, rle_dicom_bomb


@pytest.fixture()
def pool():
    p = decoder_pool(1, Limits(memory=160 * 2**20, wall_seconds=60))
    yield p
    p.close()


def _rss_mb(pid: int) -> float:
    return int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{pid}/status").read()).group(1)) / 1024


def test_the_worker_returns_what_load_grayscale_returns(pool, pneumonia_image):
    data = pneumonia_image.read_bytes()
    np.testing.assert_array_equal(decode_untrusted(data, pneumonia_image.name, pool),
                                  load_grayscale(data, name="x.jpeg"))
    with pytest.raises(NotAnImageError, match="notes.png: not an image"):  # the error class travels back
        decode_untrusted(b"hello", "notes.png", pool)
    with pytest.raises(ImageTooLargeError, match="8900 x 8900"):  # the header checks still run first
        decode_untrusted(png_bomb_bytes(), "bomb.png", pool)
    assert pool.replaced == 0 and pool.recycled == 0  # a plain file keeps the worker


def png_bomb_bytes() -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("1", (8900, 8900)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def test_an_rle_bomb_is_refused_by_the_workers_memory_limit(pool, tmp_path, normal_image):
    """A 4 MB RLE Lossless file whose 64 x 64 header hides a 256 MB segment: accepted in process (pydicom
    decodes the segment before it checks the size); in a worker limited to 160 MB it is refused in one line,
    the server process never holds it, and the next file is decoded normally."""
    bomb = rle_dicom_bomb(tmp_path / "rle.dcm", megabytes=4).read_bytes()
    assert load_grayscale(bomb, name="rle.dcm").shape == (64, 64)  # what the worker guards against
    before = _rss_mb(os.getpid())
    with pytest.raises(UnsafeImageError, match=r"rle.dcm: could not be decoded safely"):
        decode_untrusted(bomb, "rle.dcm", pool)
    assert _rss_mb(os.getpid()) - before < 100
    assert decode_untrusted(normal_image.read_bytes(), normal_image.name, pool).shape == (224, 224)


def test_a_worker_that_dies_or_hangs_is_replaced(pool, normal_image):
    data = normal_image.read_bytes()
    decode_untrusted(data, "a.jpeg", pool)
    worker = pool._idle.get()
    pool._idle.put(worker)
    os.kill(worker.proc.pid, signal.SIGKILL)  # killed between two files (the OOM killer, say)
    worker.proc.wait(10)
    assert decode_untrusted(data, "b.jpeg", pool).shape == (224, 224)
    assert pool.replaced == 1
    slow = decoder_pool(1, Limits(wall_seconds=0.01))
    try:
        buf = __import__("io").BytesIO()
        Image.new("L", (6000, 6000)).save(buf, format="PNG")  # 36 MP: tenths of a second to inflate
        with pytest.raises(UnsafeImageError, match=r"big.png: could not be decoded safely \(took more than"):
            decode_untrusted(buf.getvalue(), "big.png", slow)
        assert slow.replaced == 1 and all(w is None for w in list(slow._idle.queue))
    finally:
        slow.close()


@pytest.mark.parametrize("variant", ["part10", "bare", "uv", "implicit"])
def test_deflated_dicom_meta_is_read_as_pydicom_reads_it(tmp_path, monkeypatch, variant):
    """The review's three forms that a hand-written meta reader missed (meta at offset 0 without DICM, a
    UV element before the transfer syntax, implicit-VR meta): each counted before pydicom inflates it."""
    from pneumo_core.data import images

    bomb = deflated_dicom_bomb(tmp_path / f"{variant}.dcm", frames=1, rows=1024, cols=1024, variant=variant)
    monkeypatch.setattr(images, "MAX_INFLATED_BYTES", 1 << 20)
    with pytest.raises(ImageTooLargeError, match="inflates to more than 1.0 MB"):
        load_grayscale(bomb)
