"""The image loader on real Kermany images in every mode, DICOM variants, and every kind of bad input."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from pneumo_core.errors import (
    EmptyFileError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
)
from pneumo_core.data.images import load_grayscale
from pneumo_core.data.preprocessing import Preprocessing, denormalise, to_tensor
from tests.dicom_utils import write_dicom


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
