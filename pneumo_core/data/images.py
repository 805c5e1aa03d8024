"""One image loader for everything a user may hand us: JPEG/PNG in any mode, and DICOM.

Every loader returns a single grayscale ``float32`` array in [0, 1], shape (H, W). Anything that
cannot be read raises a subclass of :class:`~pneumo_core.errors.ImageLoadError` whose message names
the file and the problem.
"""
from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo_core.errors import (
    EmptyFileError,
    ImageLoadError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnsupportedDicomError,
)

ImageSource = Union[str, Path, bytes, BinaryIO]

#: Largest image we agree to decode (pixels). A chest film scanned at 300 dpi is ~20 MP.
MAX_PIXELS = 80_000_000
DICOM_SUFFIXES = {".dcm", ".dicom"}


def _read_bytes(source: ImageSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageLoadError(f"{path}: no such file")
        if path.is_dir():
            raise NotAnImageError(f"{path}: is a folder, not an image file")
        return path.read_bytes(), str(path)
    name = getattr(source, "name", "<upload>")
    data = source.read()
    return data, str(name)


def is_dicom(data: bytes, name: str = "") -> bool:
    """True for a DICOM Part-10 file (``DICM`` magic) or a name ending in .dcm."""
    return data[128:132] == b"DICM" or Path(name).suffix.lower() in DICOM_SUFFIXES


def load_grayscale(source: ImageSource, name: str | None = None) -> np.ndarray:
    """Read ``source`` (path, bytes or file object) as a grayscale float32 array in [0, 1]."""
    data, default_name = _read_bytes(source)
    name = name or default_name
    if len(data) == 0:
        raise EmptyFileError(f"{name}: the file is empty (0 bytes)")
    if is_dicom(data, name):
        return _load_dicom(data, name)
    return _load_raster(data, name)


def _scale_integer(arr: np.ndarray) -> np.ndarray:
    """Scale an integer image by the smallest common bit depth (8/10/12/14/16/32) holding its max."""
    arr = arr.astype(np.float64)
    top = float(arr.max()) if arr.size else 0.0
    for bits in (8, 10, 12, 14, 16, 32):
        if top <= 2**bits - 1:
            return (arr / (2**bits - 1)).astype(np.float32)
    return (arr / top).astype(np.float32)


def _load_raster(data: bytes, name: str) -> np.ndarray:
    try:
        with warnings.catch_warnings():
            # Our own size check below names the dimensions; PIL's warning would pre-empt it.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS or w <= 0 or h <= 0:
                raise ImageTooLargeError(
                    f"{name}: {w} x {h} pixels is beyond what we decode "
                    f"({MAX_PIXELS:,} pixels at most); this looks like a decompression bomb or a wrong file"
                )
            img.load()
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: image too large to decode safely; "
                                 f"this looks like a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{name}: not an image we can read (expected JPEG, PNG or DICOM)"
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "broken data stream" in msg.lower() or isinstance(exc, (SyntaxError,)):
            raise TruncatedImageError(f"{name}: the image file is truncated or corrupt ({msg})") from None
        raise TruncatedImageError(f"{name}: the image data could not be decoded ({msg})") from None
    return _pil_to_gray(img)


def _pil_to_gray(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        return _scale_integer(np.asarray(img))
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        # Transparent pixels become black, the background of a radiograph.
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(base, img.convert("RGBA"))
    if img.mode != "L":
        img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def _load_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.errors import InvalidDicomError
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
        raise NotAnImageError(f"{name}: not a readable DICOM file ({exc})") from None
    if "PixelData" not in ds:
        raise NotAnImageError(f"{name}: DICOM file without pixel data (a report or structured document?)")
    rows, cols = int(ds.get("Rows", 0)), int(ds.get("Columns", 0))
    if rows * cols > MAX_PIXELS:
        raise ImageTooLargeError(f"{name}: DICOM image of {cols} x {rows} pixels is beyond what we decode")
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        label = f"{tsyntax.name} ({tsyntax})" if tsyntax is not None else "unknown"
        raise UnsupportedDicomError(
            f"{name}: DICOM transfer syntax {label} cannot be decoded here; "
            f"export the image uncompressed or as PNG ({exc})"
        ) from None
    except (ValueError, AttributeError, KeyError, EOFError) as exc:
        raise TruncatedImageError(f"{name}: the DICOM pixel data is incomplete or corrupt ({exc})") from None

    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and ds.get("SamplesPerPixel", 1) > 1:
        arr = arr[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return _scale_integer(np.rint(arr).astype(np.int64))
    if arr.ndim == 3:  # multi-frame: the first frame
        arr = arr[0]

    has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
    if has_voi:
        arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        out = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    else:
        bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
        arr = arr.astype(np.float64)
        if int(ds.get("PixelRepresentation", 0)) == 1:
            out = (arr + 2 ** (bits - 1)) / (2**bits - 1)
        else:
            out = arr / (2**bits - 1)
    out = np.clip(out, 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)
