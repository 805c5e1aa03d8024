"""The image loader on real Kermany images in every mode, DICOM variants, and every kind of bad input."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo_core.data import images
from pneumo_core.data.images import load_grayscale
from pneumo_core.data.preprocessing import Preprocessing, denormalise, to_tensor
from pneumo_core.errors import (
    EmptyFileError,
    ImageLoadError,
    ImageTooLargeError,
    ImageTooSmallError,
    NotAnImageError,
    NotARegularFileError,
    TruncatedImageError,
    UnsupportedDicomError,
)
from tests.bombs import deflated_dicom_bomb, dicom_header_bomb, png_bomb
from tests.dicom_utils import write_dicom

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gray(pneumonia_image):
    return load_grayscale(pneumonia_image)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG" if img.mode != "CMYK" else "JPEG", quality=100)
    return buf.getvalue()


def test_jpeg_is_grayscale_unit_range(gray, pneumonia_image):
    assert gray.dtype == np.float32 and gray.shape == (224, 224)
    assert 0.0 <= gray.min() < 0.2 and 0.8 < gray.max() <= 1.0
    expected = np.asarray(Image.open(pneumonia_image).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(gray, expected, atol=1e-6)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "I;16", "CMYK"])
def test_every_pil_mode_gives_the_same_picture(gray, mode):
    u8 = np.rint(gray * 255).astype(np.uint8)
    base = Image.fromarray(u8, mode="L")
    if mode == "I;16":
        img = Image.fromarray(u8.astype(np.uint16) * 257)  # full 16-bit range
    elif mode == "P":
        img = base.convert("RGB").convert("P", palette=Image.ADAPTIVE, colors=256)
    else:
        img = base.convert(mode)
    out = load_grayscale(_png(img), name=f"x.{mode}")
    assert out.shape == gray.shape
    tol = {"P": 0.05, "CMYK": 0.04}.get(mode, 0.01)
    assert np.abs(out - gray).mean() < tol


def test_12_bit_png_is_scaled_by_its_depth(gray):
    u12 = np.rint(gray * 4095).astype(np.uint16)
    out = load_grayscale(_png(Image.fromarray(u12)), name="x.png")
    assert np.abs(out - gray).max() < 1e-3


@pytest.mark.parametrize("photometric,bits", [("MONOCHROME2", 8), ("MONOCHROME2", 12), ("MONOCHROME1", 8),
                                              ("MONOCHROME1", 16)])
def test_dicom_variants_match_the_jpeg(tmp_path, gray, photometric, bits):
    top = 2**bits - 1
    values = np.rint(gray * top)
    if photometric == "MONOCHROME1":
        values = top - values
    path = write_dicom(tmp_path / "x.dcm", values.astype(np.uint16 if bits > 8 else np.uint8),
                       photometric=photometric, bits_stored=bits)
    out = load_grayscale(path)
    assert np.abs(out - gray).max() < 1.0 / 255 + 1e-6


def test_dicom_voi_window_is_applied(tmp_path, gray):
    values = np.rint(gray * 4095).astype(np.uint16)
    # a window over the middle half of the range: dark and bright ends saturate
    path = write_dicom(tmp_path / "w.dcm", values, bits_stored=12, window=(2048, 2048))
    out = load_grayscale(path)
    lo, hi = (values < 1024), (values > 3072)
    assert out[lo].max() <= 0.01 and out[hi].min() >= 0.99
    mid = (values > 1200) & (values < 2900)
    expected = (values[mid] - 1024) / 2048
    assert np.abs(out[mid] - expected).max() < 0.01


def test_dicom_read_without_suffix_by_magic(tmp_path, gray):
    path = write_dicom(tmp_path / "noext", np.rint(gray * 255).astype(np.uint8))
    assert np.abs(load_grayscale(path.read_bytes(), name="upload") - gray).max() < 1e-5


def test_unsupported_dicom_transfer_syntax(tmp_path, gray):
    from pydicom.uid import JPEGLSLossless

    path = write_dicom(tmp_path / "ls.dcm", np.zeros((16, 16), np.uint8), transfer_syntax=JPEGLSLossless,
                       pixel_bytes=b"\xff\xd8\x00\x01" * 8)
    with pytest.raises(UnsupportedDicomError, match="JPEG-LS"):
        load_grayscale(path)


def test_dicom_without_pixels(tmp_path):
    path = write_dicom(tmp_path / "np.dcm", np.zeros((4, 4), np.uint8))
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path)
    with pytest.raises(NotAnImageError, match="without pixel data"):
        load_grayscale(path)


def test_zero_byte_file(tmp_path):
    (tmp_path / "empty.jpeg").write_bytes(b"")
    with pytest.raises(EmptyFileError, match="empty"):
        load_grayscale(tmp_path / "empty.jpeg")


def test_truncated_jpeg(tmp_path, pneumonia_image):
    data = pneumonia_image.read_bytes()
    (tmp_path / "cut.jpeg").write_bytes(data[: len(data) // 2])
    with pytest.raises(TruncatedImageError, match="cut.jpeg.*truncated"):
        load_grayscale(tmp_path / "cut.jpeg")


def test_not_an_image(tmp_path):
    (tmp_path / "notes.png").write_text("this is a text file, not a picture\n" * 10)
    with pytest.raises(NotAnImageError, match="notes.png: not an image"):
        load_grayscale(tmp_path / "notes.png")


def test_decompression_bomb(tmp_path):
    Image.new("1", (12000, 8000)).save(tmp_path / "bomb.png")  # 96 MP, a few KB on disk
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    with pytest.raises(ImageTooLargeError, match="12000 x 8000"):
        load_grayscale(tmp_path / "bomb.png")


def test_missing_file_and_folder(tmp_path):
    from pneumo_core.errors import ImageLoadError

    with pytest.raises(ImageLoadError, match="no such file"):
        load_grayscale(tmp_path / "nope.png")
    with pytest.raises(NotAnImageError, match="folder"):
        load_grayscale(tmp_path)


def test_preprocessing_defaults_and_inverse(gray):
    prep = Preprocessing()
    t = to_tensor(gray, prep)
    assert t.shape == (3, 224, 224) and t.dtype == torch.float32
    # ImageNet normalisation: channel means differ by the statistics
    assert not torch.allclose(t[0], t[1])
    np.testing.assert_allclose(denormalise(t, prep), gray, atol=1e-5)
    small = to_tensor(gray, Preprocessing(image_size=128, channels=1, mean=(0.5,), std=(0.25,)))
    assert small.shape == (1, 128, 128)
    assert Preprocessing.from_dict(prep.to_dict()) == prep


@pytest.mark.parametrize("dtype", ["int16", "int32", "uint32"])
def test_signed_and_32_bit_tiffs_load_in_the_unit_range(dtype):
    """Signed samples once came back negative (-8.4e6) and uint32 wrapped (PIL reads it as int32)."""
    import tifffile

    lo, hi = (0, 4_000_000_000) if dtype == "uint32" else (-30000, 30000)
    arr = np.linspace(lo, hi, 64 * 64).reshape(64, 64).astype(dtype)
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr)
    out = load_grayscale(buf.getvalue(), name="x.tif")
    assert out.dtype == np.float32 and out.min() >= 0 and out.max() <= 1
    assert np.all(np.diff(out.ravel()) >= 0)  # the ramp stays a ramp: no wrap-around
    expected = hi / (2**32 - 1) if dtype == "uint32" else 1.0
    assert out.max() == pytest.approx(expected, abs=1e-6)


def test_a_png_with_dicm_at_byte_128_is_read_as_the_png_it_is():
    from PIL.PngImagePlugin import PngInfo

    gray = (np.arange(64 * 64) % 251).reshape(64, 64).astype(np.uint8)

    def png(text: str) -> bytes:
        info = PngInfo()
        info.add_text("k", text)
        buf = io.BytesIO()
        Image.fromarray(gray).save(buf, format="PNG", pnginfo=info)
        return buf.getvalue()

    at = png("x" * 40 + "DICM").index(b"DICM")
    data = png("x" * (40 + 128 - at) + "DICM")  # a text chunk that puts DICM at byte 128
    assert data[128:132] == b"DICM"
    np.testing.assert_allclose(load_grayscale(data, name="x.png"), gray / 255, atol=1e-6)


def test_bombs_are_refused_on_the_header_in_little_memory(tmp_path):
    """The review's 9.7 KB PNG (8900 x 8900, 1 bit) and a DICOM promising 10 frames of 8000 x 8000, in a
    fresh process: refused, and the process stays small (it used to reach 1.6 GB)."""
    png = png_bomb(tmp_path / "bomb.png")
    assert png.stat().st_size < 20_000
    dcm = dicom_header_bomb(tmp_path / "frames.dcm")
    # VmHWM, not getrusage: ru_maxrss of a child carries its parent's peak across exec
    code = ("import re, sys\nfrom pneumo_core.data.images import load_grayscale\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n        load_grayscale(f)\n        print('LOADED', f)\n"
            "    except Exception as e:\n        print(type(e).__name__, e)\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print('PEAK_MB', int(hwm) / 1024)\n")
    r = subprocess.run([sys.executable, "-c", code, str(png), str(dcm)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ImageTooLargeError") and "8900 x 8900" in lines[0], r.stdout + r.stderr
    assert lines[1].startswith("ImageTooLargeError") and "8000 x 8000" in lines[1]
    assert float(lines[2].split()[1]) < 400, lines[2]


def test_dicom_frames_samples_and_bytes_are_bounded(tmp_path):
    # each frame is allowed (4 MP), all 20 of them at 16 bits are not (152 MB)
    with pytest.raises(ImageTooLargeError, match=r"20 frame\(s\).*152\.6 MB"):
        load_grayscale(dicom_header_bomb(tmp_path / "many.dcm", frames=20, rows=2000, cols=2000))
    # a header that promises more than the file holds is a clear error, not a huge allocation
    with pytest.raises(ImageLoadError, match="less than expected"):
        load_grayscale(dicom_header_bomb(tmp_path / "short.dcm", frames=2, rows=2000, cols=2000))


def test_deflated_dicom_is_counted_before_pydicom_inflates_it(tmp_path, monkeypatch):
    gray = (np.random.default_rng(0).random((64, 96)) * 255).astype(np.uint8)
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ok = write_dicom(tmp_path / "small.dcm", gray, transfer_syntax=DeflatedExplicitVRLittleEndian)
    np.testing.assert_allclose(load_grayscale(ok), gray / 255, atol=1e-6)  # a small deflated file still loads
    bomb = deflated_dicom_bomb(tmp_path / "bomb.dcm", frames=1, rows=1024, cols=1024)  # 2 MB inflated
    monkeypatch.setattr(images, "MAX_INFLATED_BYTES", 1 << 20)
    with pytest.raises(ImageTooLargeError, match="inflates to more than 1.0 MB"):
        load_grayscale(bomb)


def test_multi_frame_dicom_gives_its_first_frame(tmp_path):
    import pydicom

    frames = np.stack([np.full((64, 64), v, np.uint8) for v in (10, 200, 90)])
    path = write_dicom(tmp_path / "mf.dcm", frames[0])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(path)
    assert load_grayscale(path).mean() == pytest.approx(10 / 255)


def test_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    result: list = []

    def load() -> None:
        try:
            load_grayscale(fifo)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert time.monotonic() - t0 < 5
    assert isinstance(result[0], NotARegularFileError) and "not a regular file" in str(result[0])


def test_links_to_devices_and_oversized_files(tmp_path):
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFileError):
        load_grayscale(zero)
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ImageTooLargeError, match="larger than 64.0 MB"):
        load_grayscale(big)
    with pytest.raises(ImageTooLargeError, match="more than we read"):
        load_grayscale(b"\0" * (images.MAX_FILE_BYTES + 1))
    with pytest.raises(ImageTooLargeError):
        load_grayscale(io.BytesIO(b"\0" * (images.MAX_FILE_BYTES + 1)))
    with pytest.raises(NotAnImageError, match="folder"):
        load_grayscale(tmp_path)


def test_tiny_images_are_refused_and_large_ones_shrunk():
    for size in ((1, 1), (300, 20)):
        with pytest.raises(ImageTooSmallError, match="too small"):
            load_grayscale(_png(Image.new("L", size, 128)), name="tiny.png")
    wide = load_grayscale(_png(Image.new("L", (3000, 1000), 77)), name="wide.png")
    assert wide.shape == (683, 2048) and np.allclose(wide, 77 / 255)


def test_large_dicom_is_shrunk_before_its_lookup_tables(tmp_path):
    values = np.tile(np.linspace(0, 4095, 2500), (3000, 1)).astype(np.uint16)
    out = load_grayscale(write_dicom(tmp_path / "big.dcm", values, bits_stored=12, window=(2048, 4096)))
    assert out.shape == (2048, 1707)
    assert 0 <= out.min() < 0.01 and 0.99 < out.max() <= 1


def test_a_dcm_that_is_not_dicom_is_named_so(tmp_path):
    (tmp_path / "notes.dcm").write_text("this is a text file\n" * 20)
    with pytest.raises(NotAnImageError, match="not a DICOM file"):
        load_grayscale(tmp_path / "notes.dcm")
    (tmp_path / "png.dcm").write_bytes(_png(Image.new("L", (64, 64), 200)))  # a PNG under a DICOM name
    assert load_grayscale(tmp_path / "png.dcm").mean() == pytest.approx(200 / 255)


def test_eps_is_not_opened(tmp_path):
    """PIL's EPS decoder runs Ghostscript: only plain raster formats are opened."""
    (tmp_path / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    with pytest.raises(NotAnImageError):
        load_grayscale(tmp_path / "x.png")
