"""Hostile inputs made from a few bytes: decompression bombs and DICOM headers that promise too much."""
from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)


def png_bomb(path: Path, side: int = 8900) -> Path:
    """A 1-bit PNG of side x side pixels: ~10 KB on disk for 8900 px, 79 MP once decoded."""
    Image.new("1", (side, side)).save(path, optimize=True)
    return path


def _meta(transfer_syntax) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    return meta


def _header(frames: int, rows: int, cols: int, bits: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = rows, cols
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def _part10(meta: FileMetaDataset) -> io.BytesIO:
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf


def _dataset_bytes(ds: Dataset) -> bytes:
    from pydicom.filebase import DicomBytesIO

    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _pixel_header(length: int) -> bytes:
    """(7FE0,0010) OW with an explicit 4-byte length, explicit VR little endian."""
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length)


def dicom_header_bomb(path: Path, frames: int = 10, rows: int = 8000, cols: int = 8000, bits: int = 16) -> Path:
    """An uncompressed DICOM whose header promises frames x rows x cols pixels but holds 16 bytes of them."""
    buf = _part10(_meta(ExplicitVRLittleEndian))
    buf.write(_dataset_bytes(_header(frames, rows, cols, bits)))
    buf.write(_pixel_header(16) + b"\0" * 16)
    path.write_bytes(buf.getvalue())
    return path


def _raw_meta(transfer_syntax: str, variant: str) -> bytes:
    """A File Meta group written by hand in the forms pydicom reads but a reader of the common form misses:
    ``uv`` puts an element with the 64-bit VR UV (4-byte length) before the transfer syntax, ``implicit``
    writes the group in implicit VR (pydicom retries that way)."""
    uid = transfer_syntax.encode() + (b"\0" if len(transfer_syntax) % 2 else b"")
    if variant == "implicit":
        return struct.pack("<HHI", 0x0002, 0x0010, len(uid)) + uid
    return (struct.pack("<HH2sHI", 0x0002, 0x0009, b"UV", 0, 8) + struct.pack("<Q", 0x10_0000_0002)
            + struct.pack("<HH2sH", 0x0002, 0x0010, b"UI", len(uid)) + uid)


def deflated_dicom_bomb(path: Path, frames: int = 10, rows: int = 8000, cols: int = 8000, bits: int = 16,
                        variant: str = "part10") -> Path:
    """A deflated DICOM whose pixel data really is frames x rows x cols (zeros), streamed through zlib:
    10 frames of 8000 x 8000 at 16 bits is 1.28 GB inflated, ~1.2 MB on disk. ``variant``: ``part10`` (preamble,
    ``DICM``, the usual meta), ``bare`` (the meta at offset 0, no preamble), ``uv`` or ``implicit`` (see
    :func:`_raw_meta`, after a preamble)."""
    if variant == "part10":
        buf = _part10(_meta(DeflatedExplicitVRLittleEndian))
    elif variant == "bare":
        buf = io.BytesIO()
        write_file_meta_info(buf, _meta(DeflatedExplicitVRLittleEndian), enforce_standard=True)
    else:
        buf = io.BytesIO(b"\0" * 128 + b"DICM" + _raw_meta(DeflatedExplicitVRLittleEndian, variant))
        buf.seek(0, 2)
    z = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    n = frames * rows * cols * (bits // 8)
    out = [z.compress(_dataset_bytes(_header(frames, rows, cols, bits)) + _pixel_header(n))]
    zeros = b"\0" * (16 << 20)
    left = n
    while left:
        k = min(left, len(zeros))
        out.append(z.compress(zeros[:k]))
        left -= k
    out.append(z.flush())
    buf.write(b"".join(out))
    path.write_bytes(buf.getvalue())
    return path


def rle_dicom_bomb(path: Path, megabytes: int = 4, rows: int = 64, cols: int = 64) -> Path:
    """RLE Lossless DICOM with a rows x cols header whose one segment decodes to 64 x ``megabytes`` MB:
    pydicom decodes the whole segment before it compares its length with the header."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    segment = b"\x81\x00" * (megabytes << 19)  # each pair: 128 zero bytes
    frame = struct.pack("<16I", 1, 64, *([0] * 14)) + segment
    ds = _header(1, rows, cols, 8)
    buf = _part10(_meta(RLELossless))
    body = _dataset_bytes(ds)
    pixels = encapsulate([frame])
    buf.write(body + struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + pixels
              + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0))
    path.write_bytes(buf.getvalue())
    return path


def jpeg_in_dicom_bomb(path: Path, side: int = 12000, header: int = 64) -> Path:
    """A JPEG Baseline DICOM whose header says ``header`` x ``header`` (one sample) but whose one frame is a
    ``side`` x ``side`` RGB JPEG of zeros (~1.5 MB for 12000 px, 432 MB decoded, more while converted): the
    decoder trusts the frame, not the header."""
    from pydicom.uid import JPEGBaseline8Bit

    from tests.dicom_utils import write_dicom

    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, format="JPEG", quality=50)
    return write_dicom(path, np.zeros((header, header), np.uint8), transfer_syntax=JPEGBaseline8Bit,
                       pixel_bytes=buf.getvalue())
