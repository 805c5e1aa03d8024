"""Images to look at: the dataset folder, uploads (decoded once), bundled samples, linked images."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import streamlit as st

from pages._shared.layout import state
from pneumo_core.serving.memory import close_with_browser, drop_uploads
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.files import ASSETS, escape_markdown

UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom"]
#: most files one upload takes into account (the rest are named and left out)
MAX_UPLOADS = 12
#: most bytes one session's uploads may hold (the files past it are left out and freed at once)
MAX_UPLOAD_BYTES = 100 * 2**20
#: decoded images kept: two full uploads (each at most 2048 x 2048 float32, 16 MB, as the loader shrinks
#: larger ones; a 224-px dataset image is 0.2 MB), so hostile uploads cannot hold the server above ~400 MB
MAX_DECODED = 2 * MAX_UPLOADS
#: longest image name a link may carry (a Kermany id is < 60 characters)
MAX_LINK_CHARS = 255
DATA_HINT = ("Set a dataset folder in the sidebar (a Kermany layout: `chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`) "
             "to see the images.")


def default_data_dir() -> str:
    """The dataset folder a session starts with: the server's ``$PNEUMO_DATA`` (a teacher sets it at launch)."""
    return os.environ.get("PNEUMO_DATA", "")


def data_dir() -> Path | None:
    """The sidebar's dataset folder (``$PNEUMO_DATA`` until a visitor types another), when it exists."""
    d = state("data_dir", default_data_dir())
    p = Path(d).expanduser() if d else None
    return p if p is not None and p.is_dir() else None


def image_path(image_id: str) -> Path | None:
    """A dataset image's file, when the dataset folder has it."""
    d = data_dir()
    if d is None or len(image_id) > MAX_LINK_CHARS:
        return None
    try:
        p = d / image_id
        inside = d.resolve() in p.resolve().parents  # an id of "../x" or "/etc/x" from a prediction file: no
        return p if inside and p.is_file() else None
    except OSError:
        return None


def digest(data: bytes) -> str:
    """An image's content key for the caches."""
    return hashlib.sha256(data).hexdigest()[:20]


@st.cache_data(show_spinner=False, max_entries=MAX_DECODED)
def decoded(data: bytes, name: str) -> np.ndarray:
    """An image's grayscale array, decoded in a bounded worker process (``pneumo_core.data.workers``: an upload
    that would exhaust memory kills a worker, not the server); raises ImageLoadError with a one-line message."""
    from pneumo_core.data.workers import decode_untrusted

    return decode_untrusted(data, name)


def read_image_file(path: Path) -> bytes:
    """A server-side image file's bytes (dataset folder, samples), refused before reading past the size cap."""
    from pneumo_core.data.images import read_regular_file

    return read_regular_file(path, name=path.name)


def take_uploads(uploads: list) -> tuple[list[tuple[str, bytes]], str]:
    """The uploaded files a page takes, as (name, bytes): the first :data:`MAX_UPLOADS` within
    :data:`MAX_UPLOAD_BYTES` in all; the others' bytes are freed at once, and a line says so ("" if none)."""
    kept, total = [], 0
    for up in uploads:  # the first files, in order, while they fit
        if len(kept) == MAX_UPLOADS or total + up.size > MAX_UPLOAD_BYTES:
            break
        kept.append(up)
        total += up.size
    left = uploads[len(kept):]
    if left:
        drop_uploads(left)
    if kept:
        close_with_browser()  # its uploads are freed when the visitor leaves
    note = "" if not left else (
        f"{len(uploads)} files uploaded ({sum(u.size for u in uploads) / 2**20:.0f} MB); the first {len(kept)} "
        f"({total / 2**20:.0f} MB) are shown, the other {len(left)} are left out (at most {MAX_UPLOADS} files and "
        f"{MAX_UPLOAD_BYTES // 2**20} MB at a time).")
    return [(up.name, up.getvalue()) for up in kept], note


def sample_images() -> list[Path]:
    """The bundled sample X-rays (assets/examples: Kermany test images, CC BY 4.0), VIRUS first."""
    files = sorted((ASSETS / "examples").glob("*.jpeg"))
    return sorted(files, key=lambda p: ("virus" not in p.name, "bacteria" not in p.name, p.name))


def non_xray_images() -> list[Path]:
    """Bundled pictures that are not chest X-rays (assets/examples/not_xray: scikit-image's cat, CC0), for the
    lesson's out-of-distribution example: no label, never one of :func:`sample_images`."""
    return sorted((ASSETS / "examples" / "not_xray").glob("*.jpg"))


def image_picker(prefix: str, root: Path | None) -> tuple[str, bytes] | None:
    """An uploaded X-ray, else a bundled sample (a VIRUS one first; "Try a sample" steps through them),
    else a test image of the dataset folder: (name, bytes)."""
    up = st.file_uploader("An X-ray (JPEG, PNG or DICOM)", type=UPLOAD_TYPES, key=f"{prefix}_upload")
    if up is not None:
        close_with_browser()  # its upload is freed when the visitor leaves
        return up.name, up.getvalue()
    choices = {f"sample · {p.name}": p for p in sample_images()}
    if root is not None:
        from pneumo_core.data.datasets import kermany_splits

        try:
            choices.update({f"dataset · {i}": root / i for i in kermany_splits(root)["test"]["image_id"]})
        except PneumoError:
            pass
    if not choices:
        return None
    names = list(choices)
    key = f"{prefix}_pick"
    wanted = st.query_params.get("image")  # a link from the Errors page
    if wanted and st.session_state.get(f"{prefix}_linked") != wanted:
        st.session_state[f"{prefix}_linked"] = wanted
        hit = next((n for n in names if n.split(" · ", 1)[1] == wanted), None)
        if hit:
            st.session_state[key] = hit
        else:
            st.warning(escape_markdown(f"Image {wanted[:80]!r} not found: set the dataset folder in the sidebar to "
                                       "open it."))
    if st.button("Try a sample", key=f"{prefix}_next", help="the next bundled sample X-ray"):
        current = st.session_state.get(key, names[0])
        samples = [n for n in names if n.startswith("sample")]
        if samples:
            st.session_state[key] = (samples[(samples.index(current) + 1) % len(samples)] if current in samples
                                     else samples[0])
    name = st.selectbox("…or pick an image", names, key=key)
    try:
        return name.split(" · ", 1)[1], read_image_file(choices[name])
    except ImageLoadError as exc:  # a dataset file past the size cap, a FIFO: named, never read
        st.error(escape_markdown(str(exc)))
        return None


def linked_image() -> tuple[str, bytes] | None:
    """The image named by the URL (``?image=test/PNEUMONIA/x.jpeg``: a dataset-folder id or a sample's name)."""
    wanted = st.query_params.get("image")
    if not wanted:
        return None
    if len(wanted) <= MAX_LINK_CHARS:
        for base in (data_dir(), ASSETS / "examples"):
            try:
                p = (base / wanted) if base is not None else None
                if p is not None and p.is_file() and base.resolve() in p.resolve().parents:
                    return Path(wanted).name, read_image_file(p)
            except ImageLoadError as exc:  # past the size cap: refused before it is read
                st.error(escape_markdown(str(exc)))
                return None
            except OSError:  # a name the file system refuses (too long, bad characters)
                continue
    st.warning(escape_markdown(f"Image {wanted[:80]!r} not found: set the dataset folder in the sidebar to open it."))
    return None
