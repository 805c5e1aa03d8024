"""One image loader for everything a user may hand us: JPEG/PNG in any mode, and DICOM.

Every loader returns a single grayscale ``float32`` array in [0, 1], shape (H, W), at most
:data:`MAX_SIDE` pixels on its long side (larger images are shrunk right after decoding). Anything that
cannot be read raises a subclass of :class:`~pneumo_core.errors.ImageLoadError` whose message names
the file and the problem.

What one input may cost is bounded before anything is decoded (see SECURITY.md): only regular files
are read, at most :data:`MAX_FILE_BYTES` of them; a raster image's header must declare at most
:data:`MAX_PIXELS` pixels; a DICOM header must declare at most :data:`MAX_PIXELS` pixels a frame and
:data:`MAX_PIXEL_DATA_BYTES` over all frames, samples and bytes; deflated DICOM is inflated (counting,
not keeping) up to :data:`MAX_INFLATED_BYTES` before pydicom sees it.
"""
from __future__ import annotations

import io
import math
import os
import stat
import struct
import warnings
import zlib
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, UnidentifiedImageError

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

ImageSource = Union[str, Path, bytes, BinaryIO]

#: Largest file we read (bytes). A chest film as 16-bit PNG or uncompressed DICOM is ~10-40 MB.
MAX_FILE_BYTES = 64 * 2**20
#: Largest image we agree to decode (pixels in one frame). A chest film scanned at 300 dpi is ~20 MP.
MAX_PIXELS = 40_000_000
#: Largest DICOM pixel data we decode: frames x rows x columns x samples x bytes per sample.
MAX_PIXEL_DATA_BYTES = 128 * 2**20
#: Largest data set a deflated DICOM may inflate to.
MAX_INFLATED_BYTES = MAX_PIXEL_DATA_BYTES + 16 * 2**20
#: Long side of what we return: larger images are shrunk (area average) right after decoding.
MAX_SIDE = 2048
#: Smallest side we accept: below it there is no chest X-ray to see.
MIN_SIDE = 32
#: Raster formats PIL may open (no EPS: its decoder runs Ghostscript).
RASTER_FORMATS = ("JPEG", "PNG", "BMP", "TIFF", "GIF", "WEBP")
DICOM_SUFFIXES = {".dcm", ".dicom"}
#: signatures of PNG and JPEG, which a DICOM preamble never starts with in practice: such a file is read as
#: the image it is, whatever its bytes 128-131 say
RASTER_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")

# PIL's own bomb guard, for any Image.open in this process: it refuses above twice this (160 MP, below its
# default 179 MP). Ours, on the header, refuses above MAX_PIXELS and names the dimensions.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > 2 * MAX_PIXELS:
    Image.MAX_IMAGE_PIXELS = 2 * MAX_PIXELS


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _read_capped(read, name: str) -> bytes:
    data = read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise ImageTooLargeError(f"{name}: the file is larger than {_mb(MAX_FILE_BYTES)}, more than we read")
    return data


def read_regular_file(path: str | Path, name: str | None = None) -> bytes:
    """The bytes of a regular file (a link to one is fine), at most :data:`MAX_FILE_BYTES`; a device, FIFO
    or socket is refused without blocking (opened non-blocking, checked with fstat before any read)."""
    path = Path(path)
    name = name or str(path)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise ImageLoadError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise NotAnImageError(f"{name}: is a folder, not an image file") from None
    except OSError as exc:
        raise ImageLoadError(f"{name}: cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise NotAnImageError(f"{name}: is a folder, not an image file")
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(f"{name}: not a regular file (a device, FIFO or socket); refused")
        if st.st_size > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"{name}: the file is larger than {_mb(MAX_FILE_BYTES)}, more than we read")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb", buffering=0) as f:
        # one buffer of the file's size (+1 to notice a file that grew past the cap while we read)
        return _read_capped(lambda n: _read_upto(f, min(n, st.st_size + 1)), name)


def _read_upto(f, n: int) -> bytes:
    """At most ``n`` bytes of ``f``: one read (a regular file gives it whole), the rest if it came short."""
    data = f.read(n) or b""
    parts = [data]
    total = len(data)
    while total < n:
        more = f.read(n - total)
        if not more:
            break
        parts.append(more)
        total += len(more)
    return data if len(parts) == 1 else b"".join(parts)


def _read_bytes(source: ImageSource) -> tuple[bytes, str]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) > MAX_FILE_BYTES:
            raise ImageTooLargeError(f"<bytes>: {_mb(len(source))} is more than we read ({_mb(MAX_FILE_BYTES)})")
        return bytes(source), "<bytes>"
    if isinstance(source, (str, Path)):
        return read_regular_file(source), str(source)
    name = str(getattr(source, "name", "<upload>"))
    return _read_capped(source.read, name), name


def load_grayscale(source: ImageSource, name: str | None = None) -> np.ndarray:
    """Read ``source`` (path, bytes or file object) as a grayscale float32 array in [0, 1], at most
    :data:`MAX_SIDE` px on its long side."""
    data, default_name = _read_bytes(source)
    name = name or default_name
    if len(data) == 0:
        raise EmptyFileError(f"{name}: the file is empty (0 bytes)")
    if data[128:132] == b"DICM" and not data.startswith(RASTER_MAGIC):
        out = _load_dicom(data, name)
    elif Path(name).suffix.lower() in DICOM_SUFFIXES:
        out = _load_unmarked_dicom(data, name)
    else:
        out = _load_raster(data, name)
    out = np.clip(np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0, dtype=np.float32)
    h, w = out.shape
    if min(h, w) < MIN_SIDE:
        raise ImageTooSmallError(f"{name}: {w} x {h} pixels is too small to be a chest X-ray "
                                 f"(at least {MIN_SIDE} px a side)")
    return out


def shrink(arr: np.ndarray, max_side: int = MAX_SIDE) -> np.ndarray:
    """``arr`` (H, W) with its long side at most ``max_side`` (area average, aspect kept); integer
    arrays stay integer (rounded), so lookup tables still apply."""
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    k = max(h, w) // max_side
    if k >= 2 and min(h, w) >= k:  # first a k x k block mean, summed in place: no full-size float copy
        hk, wk = (h // k) * k, (w // k) * k  # the last < k rows and columns are left out
        blocks = arr[:hk, :wk].reshape(hk // k, k, wk // k, k)
        small = np.zeros((hk // k, wk // k), np.float64)
        for i in range(k):
            for j in range(k):
                small += blocks[:, i, :, j]
        small = (small / (k * k)).astype(np.float32)
    else:
        small = np.asarray(arr, dtype=np.float32)
    small = np.asarray(Image.fromarray(small, mode="F").resize(size, Image.BOX), dtype=np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        return np.clip(np.rint(small), info.min, info.max).astype(arr.dtype)
    return small.astype(arr.dtype, copy=False)


def _scale_integer(arr: np.ndarray, top: float | None = None) -> np.ndarray:
    """Scale an integer image by the smallest common bit depth (8/10/12/14/16/32) holding its max (``top``,
    when known from the image before it was reduced)."""
    arr = arr.astype(np.float64)
    if top is None:
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
            img = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
            w, h = img.size  # from the header: nothing is decoded yet
            if w * h > MAX_PIXELS or w <= 0 or h <= 0:
                raise ImageTooLargeError(
                    f"{name}: {w} x {h} pixels is beyond what we decode "
                    f"({MAX_PIXELS:,} pixels at most); this looks like a decompression bomb or a wrong file"
                )
            if img.format == "JPEG" and max(w, h) > MAX_SIDE:  # decode at 1/2..1/8 scale, still >= MAX_SIDE
                scale = MAX_SIDE / max(w, h)
                img.draft(img.mode, (math.ceil(w * scale), math.ceil(h * scale)))
            img.load()
            if img.mode == "I" and _unsigned_32(img):  # PIL reads uint32 samples as int32: undo the wrap
                arr = shrink(np.asarray(img).view(np.uint32))
                return _scale_integer(arr)
            extrema = img.getextrema() if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") else None
            img = _reduce(img)
    except ImageLoadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageTooLargeError(f"{name}: image too large to decode safely; "
                                 f"this looks like a decompression bomb ({exc})") from None
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{name}: not an image we can read (expected JPEG, PNG or DICOM)"
        ) from None
    except (OSError, SyntaxError, ValueError, struct.error, EOFError) as exc:
        msg = str(exc)
        if "truncated" in msg.lower() or "broken data stream" in msg.lower() or isinstance(exc, (SyntaxError,)):
            raise TruncatedImageError(f"{name}: the image file is truncated or corrupt ({msg})") from None
        raise TruncatedImageError(f"{name}: the image data could not be decoded ({msg})") from None
    return shrink(_pil_to_gray(img, extrema))


def _unsigned_32(img: Image.Image) -> bool:
    """A TIFF of unsigned 32-bit samples (SampleFormat 1, BitsPerSample 32)."""
    tags = getattr(img, "tag_v2", None)
    if tags is None:
        return False
    bits = tags.get(258, (0,))
    return tags.get(339, 1) in (1, (1,)) and (bits == 32 or (isinstance(bits, tuple) and bits[:1] == (32,)))


def _reduce(img: Image.Image) -> Image.Image:
    """A large decoded image box-reduced by an integer factor in (nearly) its own mode, before any float
    copy is made (:func:`shrink` finishes the job): transparency premultiplied first (the same as
    compositing on black, what :func:`_pil_to_gray` does), 1-bit as 0/255, 16-bit as 32-bit integers."""
    k = max(img.size) // MAX_SIDE
    if k < 2:
        return img
    if img.mode == "1":
        img = img.convert("L")
    elif img.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        img = img.convert("I")
    elif img.mode in ("P", "PA"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        img = img.convert("RGBa")
    elif img.mode == "LA":
        img = img.convert("La")
    try:
        return img.reduce(k)
    except ValueError:  # a mode reduce does not take: converted to float whole, as before
        return img


def _pil_to_gray(img: Image.Image, extrema: tuple | None = None) -> np.ndarray:
    """Grayscale [0, 1]; ``extrema`` (of the image before :func:`_reduce`) sets an integer image's bit depth
    and a float image's range, so reducing does not change them."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        lo, hi = (float(arr.min()), float(arr.max())) if extrema is None else map(float, extrema)
        if lo < 0:  # signed samples (a signed 16/32-bit TIFF): their own range, not a bit depth
            return np.zeros(arr.shape, np.float32) if hi <= lo else ((arr - lo) / (hi - lo)).astype(np.float32)
        return _scale_integer(arr, top=hi)
    if mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = float(arr.min()), float(arr.max())
        if extrema is not None and all(math.isfinite(v) for v in extrema):
            lo, hi = float(extrema[0]), float(extrema[1])
            arr = np.clip(arr, lo, hi)
        return np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo)
    if mode == "1":
        return np.asarray(img, dtype=np.float32)
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("La", "RGBa"):  # premultiplied: the colour bands are the image composited on black
        bands = img.split()
        img = bands[0] if mode == "La" else Image.merge("RGB", bands[:3])
    elif mode in ("RGBA", "LA", "PA"):
        # Transparent pixels become black, the background of a radiograph.
        base = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(base, img.convert("RGBA"))
    if img.mode != "L":
        img = img.convert("RGB").convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


# ---------------------------------------------------------------- DICOM

def _deflated_body(data: bytes) -> bytes | None:
    """The bytes pydicom would inflate, if it would: the preamble, File Meta and command set read by pydicom's
    own reader (``read_partial``'s first steps, so every form it accepts is seen as it sees it: meta at offset 0
    without ``DICM``, any VR, implicit-VR meta), and None unless the transfer syntax is deflate."""
    from pydicom.filereader import _read_command_set_elements, _read_file_meta_info, read_preamble
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    fp = io.BytesIO(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            read_preamble(fp, True)
            meta = _read_file_meta_info(fp)
            _read_command_set_elements(fp)
            deflated = meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian
    except Exception:  # noqa: BLE001 - an unreadable header: dcmread names the problem next
        return None
    return data[fp.tell():] if deflated else None


def _inflated_size(data: bytes, cap: int) -> int:
    """How many bytes a raw-deflate stream inflates to, counted in 1 MB pieces and kept nowhere; stops
    past ``cap``."""
    d = zlib.decompressobj(-zlib.MAX_WBITS)
    total, buf = 0, data
    while total <= cap:
        out = d.decompress(buf, 1 << 20)
        total += len(out)
        buf = d.unconsumed_tail
        if d.eof or (not out and not buf):
            break
    return total


def _check_deflated(data: bytes, name: str) -> None:
    body = _deflated_body(data)
    if body is None:
        return
    try:
        size = _inflated_size(body, MAX_INFLATED_BYTES)
    except zlib.error as exc:
        raise TruncatedImageError(f"{name}: the deflated DICOM data is corrupt ({exc})") from None
    if size > MAX_INFLATED_BYTES:
        raise ImageTooLargeError(f"{name}: the deflated DICOM data set inflates to more than "
                                 f"{_mb(MAX_INFLATED_BYTES)}; refused (a decompression bomb?)")


def _int(ds, key: str, default: int) -> int:
    try:
        v = ds.get(key, default)
        return default if v is None or v == "" else int(v)
    except (TypeError, ValueError):
        return -1


def _check_dicom_header(ds, name: str) -> None:
    """Refuse, from the header alone, pixel data we would not decode."""
    rows, cols = _int(ds, "Rows", 0), _int(ds, "Columns", 0)
    frames, samples = _int(ds, "NumberOfFrames", 1), _int(ds, "SamplesPerPixel", 1)
    bits = _int(ds, "BitsAllocated", 16)
    if rows <= 0 or cols <= 0 or frames <= 0 or samples not in (1, 3, 4) or bits not in (1, 8, 16, 32, 64):
        raise NotAnImageError(f"{name}: DICOM header with impossible image attributes (rows {rows}, columns "
                              f"{cols}, frames {frames}, samples {samples}, bits allocated {bits})")
    if rows * cols > MAX_PIXELS:
        raise ImageTooLargeError(f"{name}: DICOM image of {cols} x {rows} pixels is beyond what we decode "
                                 f"({MAX_PIXELS:,} pixels at most)")
    total = frames * rows * cols * samples * max(1, bits // 8)
    if total > MAX_PIXEL_DATA_BYTES:
        raise ImageTooLargeError(f"{name}: DICOM pixel data of {frames} frame(s) of {cols} x {rows} x {samples} "
                                 f"at {bits} bits is {_mb(total)}, beyond what we decode "
                                 f"({_mb(MAX_PIXEL_DATA_BYTES)})")


def _load_unmarked_dicom(data: bytes, name: str) -> np.ndarray:
    """A .dcm without the ``DICM`` marker: a raster image under a DICOM name is read as such; otherwise
    a raw DICOM data set (old ACR-NEMA style) if it parses into one with pixel data."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
    except Image.DecompressionBombError:
        return _load_raster(data, name)  # a raster image, too large: refused there, with its size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, struct.error, EOFError):
        pass
    else:
        return _load_raster(data, name)
    try:
        return _load_dicom(data, name)
    except NotAnImageError:
        raise NotAnImageError(f"{name}: not a DICOM file (no DICM marker, no pixel data) "
                              f"nor an image we can read") from None


def _load_dicom(data: bytes, name: str) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    _check_deflated(data, name)
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        has_pixels = "PixelData" in ds
    except Exception as exc:  # noqa: BLE001 - any parse failure of a hostile file is "not readable"
        raise NotAnImageError(f"{name}: not a readable DICOM file "
                              f"({str(exc).splitlines()[0] if str(exc) else exc})") from None
    if not has_pixels:
        raise NotAnImageError(f"{name}: DICOM file without pixel data (a report or structured document?)")
    _check_dicom_header(ds, name)
    tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    try:
        if _int(ds, "NumberOfFrames", 1) > 1:
            ds.pixel_array_options(index=0)  # decode the first frame only
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        label = f"{tsyntax.name} ({tsyntax})" if tsyntax is not None else "unknown"
        raise UnsupportedDicomError(
            f"{name}: DICOM transfer syntax {label} cannot be decoded here; "
            f"export the image uncompressed or as PNG ({exc})"
        ) from None
    except Exception as exc:  # noqa: BLE001 - ValueError, KeyError, struct.error... of a corrupt file
        raise TruncatedImageError(f"{name}: the DICOM pixel data is incomplete or corrupt ({exc})") from None
    del ds.PixelData  # the encoded bytes (and pydicom's cached array) are not needed any more

    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and _int(ds, "SamplesPerPixel", 1) > 1:
        arr = np.stack([shrink(arr[..., c]) for c in range(3)], axis=-1)  # one band at a time, then small
        arr = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
        return _scale_integer(np.rint(arr).astype(np.int64))
    if arr.ndim == 3:  # multi-frame decoded whole (an old plugin): the first frame
        arr = arr[0]
    arr = shrink(arr)  # before the lookup tables: they are pointwise, and now cheap

    try:
        has_voi = "WindowCenter" in ds or "VOILUTSequence" in ds
        if has_voi:
            arr = apply_voi_lut(apply_modality_lut(arr, ds), ds).astype(np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            out = np.zeros_like(arr) if hi <= lo or not np.isfinite([lo, hi]).all() else (arr - lo) / (hi - lo)
        else:
            bits = int(ds.get("BitsStored", arr.dtype.itemsize * 8))
            arr = arr.astype(np.float64)
            if int(ds.get("PixelRepresentation", 0)) == 1:
                out = (arr + 2 ** (bits - 1)) / (2**bits - 1)
            else:
                out = arr / (2**bits - 1)
    except Exception as exc:  # noqa: BLE001 - lookup tables and bit depths of a hostile header
        raise TruncatedImageError(f"{name}: the DICOM lookup tables or bit depth are invalid ({exc})") from None
    out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper() == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32)
