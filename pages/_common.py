"""What every page shares: the sidebar's choices, cached models and prediction tables.

Layout and caching only; every number comes from pneumo_core.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import streamlit as st

from pneumo_core import NOT_FOR_CLINICAL_USE
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation.predictions import Predictions
from pneumo_core.models.sources import DEFAULT_REPO, HubSource, LocalSource, Source, bundled_source
from pneumo_core.evaluation import selection
from pneumo_core.files import ASSETS

PLOT_CONFIG = {"displayModeBar": False}  # no plotly toolbar: it covers titles on small screens
#: below ~1000 px, columns stack so charts and the confusion matrix keep their width
NARROW_CSS = """<style>
@media (max-width: 1000px) {
  div[data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
  div[data-testid="stHorizontalBlock"] > div[data-testid="stColumn"] { min-width: 100%; }
}
</style>"""
SOURCES = ("Bundled demo models", "Local checkpoints folder", "Hugging Face Hub")
#: most files one upload takes into account (the rest are named and left out)
MAX_UPLOADS = 12
DATA_HINT = ("Set a dataset folder in the sidebar (a Kermany layout: `chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`) "
             "to see the images.")


PAGES = [  # (file, title, icon, url path); the root URL goes on to the first
    ("pages/predict.py", "Predict", ":material/search:", "predict"),
    ("pages/compare.py", "Compare heatmaps", ":material/compare:", "compare"),
    ("pages/thresholds.py", "Thresholds", ":material/tune:", "thresholds"),
    ("pages/calibration.py", "Calibration", ":material/straighten:", "calibration"),
    ("pages/errors.py", "Errors", ":material/error:", "errors"),
    ("pages/models.py", "Models", ":material/table_chart:", "models"),
    ("pages/audit.py", "Where models look", ":material/visibility:", "audit"),
]


def _landing() -> None:
    """The root URL, a hidden default page that goes straight on to the first page (query kept): the
    default page is served at ``/`` only, so without this ``/predict`` would be "Page not found"."""
    st.switch_page(PAGES[0][0], query_params=st.query_params.to_dict())


def app_pages() -> list:
    """The hidden landing (the default, at ``/``), then every page of :data:`PAGES` at its own URL."""
    landing = st.Page(_landing, title="Pneumo Explorer", url_path="start", default=True, visibility="hidden")
    return [landing] + [st.Page(f, title=t, icon=i, url_path=u) for f, t, i, u in PAGES]


def navigation(position: str = "sidebar"):
    """The app's pages through the public ``st.navigation``; each page, Predict too, has its own URL."""
    return st.navigation(app_pages(), position=position)


def start_page(title: str) -> None:
    """Every page begins here: its title and, once, quietly, the "not for clinical use" line.

    With a ``pages/`` folder beside ``app.py``, a fresh server starts in Streamlit's legacy multipage
    mode, so a deep link (``/thresholds?threshold=0.3``) runs the page file alone, without ``app.py``'s
    sidebar. Calling ``st.navigation`` (public API) switches the server to navigation mode for good;
    the rerun then goes through ``app.py`` to the same page, query parameters kept.
    """
    if not st.session_state.get("via_app"):
        navigation(position="hidden")
        st.rerun()
    st.title(title)
    st.caption(NOT_FOR_CLINICAL_USE)


def state(key: str, default):
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]


def data_dir() -> Path | None:
    d = state("data_dir", os.environ.get("PNEUMO_DATA", ""))
    p = Path(d).expanduser() if d else None
    return p if p is not None and p.is_dir() else None


@st.cache_resource(show_spinner=False, max_entries=8)
def _hub(repo: str) -> HubSource:
    return HubSource(repo)


def current_source() -> tuple[Source, str]:
    """The sidebar's source and a one-line status; an unusable choice falls back to the bundled models."""
    kind = state("source_kind", SOURCES[0])
    try:
        if kind == SOURCES[1]:
            folder = state("local_dir", "")
            if not folder:
                raise PneumoError("no local folder given")
            src = LocalSource(folder)
            src.list()
            return src, f"local folder {src.root}"
        if kind == SOURCES[2]:
            src = _hub(state("hub_repo", DEFAULT_REPO))
            src.list()
            return src, src.status
    except PneumoError as exc:
        return bundled_source(), f"{kind}: {exc}. Using the bundled demo models."
    return bundled_source(), "bundled demo models (assets/models)"


def predictor(_source: Source, source_label: str, key: str):
    """The model ``key`` of the source, loaded once per (source, key, checkpoint file): ``source_label``
    names the resolved folder (LocalSource resolves it, so every spelling of a folder is one entry) and
    the file's stamp (name, mtime, size) is part of the key, so a replaced checkpoint is loaded afresh."""
    return _predictor(_source, source_label, key, _source.stamp(key))


@st.cache_resource(show_spinner="Loading model…", max_entries=24)
def _predictor(_source: Source, source_label: str, key: str, stamp: str):
    from pneumo_core.inference.predictors import Predictor

    return Predictor(_source.load(key))


def usable_models(source: Source, source_label: str, keys: list[str]) -> tuple[list[str], list[str]]:
    """The keys whose models load, and one line for each that does not: a bad checkpoint in a folder is
    skipped, never fatal for the page."""
    good, bad = [], []
    for k in keys:
        try:
            predictor(source, source_label, k)
            good.append(k)
        except PneumoError as exc:
            bad.append(f"{k} skipped: {exc}")
    return good, bad


def model_keys(source: Source, task: str | None = None) -> list[str]:
    try:
        refs = source.list()
    except PneumoError:
        return []
    return [r.key for r in refs if task is None or r.task == task]


def predictions_root() -> Path:
    """Prediction files: the local folder's when it has some, else the committed ones in assets/."""
    if state("source_kind", SOURCES[0]) == SOURCES[1]:
        folder = Path(state("local_dir", "") or ".")
        if list(folder.glob("predictions/*/*.csv")):
            return folder
    return ASSETS


@st.cache_data(show_spinner=False)
def prediction_set(root: str, task: str, arch: str, seed: int, split: str) -> Predictions:
    return selection.load_choice(root, task, arch, seed, split)


@st.cache_data(show_spinner=False)
def set_options(root: str, tasks: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(task, arch, seed) choices, best first (pneumo_core.evaluation.selection)."""
    return selection.set_choices(root, tasks)


COMPUTED = -2  # seed marker: predictions computed now from a source model on the dataset folder


def label(opt: tuple[str, str, int]) -> str:
    task, arch, seed = opt
    if seed == COMPUTED:
        return f"{task} · {arch} · computed on the dataset folder"
    return f"{task} · {arch}" + (f" · seed {seed}" if seed >= 0 else "")


def source_options(tasks: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """With a dataset folder set, every model of the current source can be evaluated on it."""
    if data_dir() is None:
        return []
    source, _ = current_source()
    return [(k.split("/")[0], k.split("/")[1], COMPUTED) for k in model_keys(source)
            if "/seed" not in k and k.split("/")[0] in tasks]


def computed_set(task: str, arch: str, split: str) -> Predictions:
    """Predict a split of the dataset folder with a source model, with a progress bar (cached on disk)."""
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.inference.predictors import predict_frame

    source, src_label = current_source()
    model = predictor(source, src_label, f"{task}/{arch}")
    frame = kermany_splits(data_dir())[split]
    bar = st.progress(0.0, text=f"Predicting the {split} split with {task}/{arch}…")
    table = predict_frame(model, frame, split=split,
                          progress=lambda done, total: bar.progress(done / total, text=f"{split}: {done}/{total} images"))
    bar.empty()
    return table


def choose_set(root: Path, tasks: tuple[str, ...], key: str) -> tuple[str, str, int] | None:
    opts = set_options(str(root), tasks) + source_options(tasks)
    if not opts:
        st.info("No prediction files yet. Train models with `python train.py --zoo` or point the sidebar at a "
                "local checkpoints folder that has `predictions/`.")
        return None
    wanted = st.query_params.get("model")
    labels = [label(o) for o in opts]
    default = labels.index(wanted) if wanted in labels else 0
    if wanted and wanted not in labels and key not in st.session_state:
        st.warning(f"The link's model {wanted!r} is not available here; showing {labels[0]!r}.")
    choice = st.selectbox("Model and prediction set", labels, index=default, key=key)
    st.query_params["model"] = choice
    return opts[labels.index(choice)]


def val_and_test(tasks: tuple[str, ...], key: str) -> tuple[tuple[str, str, int], Predictions, Predictions]:
    """The page's chosen prediction set: (task, arch, seed), its validation and test tables; stops the page
    when there is none."""
    root = predictions_root()
    opt = choose_set(root, tasks, key)
    if opt is None:
        st.stop()
    if opt[2] == COMPUTED:
        try:
            return opt, computed_set(opt[0], opt[1], "val"), computed_set(opt[0], opt[1], "test")
        except PneumoError as exc:
            st.error(str(exc))
            st.stop()
    return opt, prediction_set(str(root), *opt, "val"), prediction_set(str(root), *opt, "test")


def image_path(image_id: str) -> Path | None:
    d = data_dir()
    if d is None:
        return None
    p = d / image_id
    return p if p.is_file() else None


def probs_table(classes, probs: np.ndarray):
    import pandas as pd

    return pd.DataFrame([probs], columns=list(classes))


# ---------------------------------------------------------------- compute once, show many times

def digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:20]


@st.cache_data(show_spinner=False, max_entries=64)
def decoded(data: bytes, name: str) -> np.ndarray:
    """An upload's grayscale image (raises ImageLoadError with a one-line message)."""
    from pneumo_core.data.images import load_grayscale

    return load_grayscale(data, name=name)


@st.cache_data(show_spinner=False, max_entries=4096)
def model_probs(_source: Source, source_label: str, key: str, image: str, _gray: np.ndarray) -> np.ndarray:
    """One model's class probabilities for one image, cached per (source, model, image content)."""
    return predictor(_source, source_label, key).predict_grays([_gray])[0]


@st.cache_data(show_spinner=False, max_entries=512)
def cam(_source: Source, source_label: str, key: str, image: str, method: str, target: int | None,
        _gray: np.ndarray):
    """A CAM's raw and normalised maps, cached per (source, model, image content, method, class);
    opacity, colour map and scale only re-render it. Faithfulness is computed separately, on demand."""
    from pneumo_core.explain.cams import explain

    return explain(predictor(_source, source_label, key), _gray, method, target, faithfulness=False)


@st.cache_data(show_spinner=False, max_entries=512)
def faithfulness(_source: Source, source_label: str, key: str, image: str, method: str, target: int | None,
                 _gray: np.ndarray) -> float:
    from pneumo_core.explain.cams import explain

    return explain(predictor(_source, source_label, key), _gray, method, target, faithfulness=True).faithfulness


# ---------------------------------------------------------------- images to look at

UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom"]


def sample_images() -> list[Path]:
    """The bundled sample X-rays (assets/examples: Kermany test images, CC BY 4.0), VIRUS first."""
    files = sorted((ASSETS / "examples").glob("*.jpeg"))
    return sorted(files, key=lambda p: ("virus" not in p.name, "bacteria" not in p.name, p.name))


def image_picker(prefix: str, root: Path | None) -> tuple[str, bytes] | None:
    """An uploaded X-ray, else a bundled sample (a VIRUS one first; "Try a sample" steps through them),
    else a test image of the dataset folder: (name, bytes)."""
    up = st.file_uploader("An X-ray (JPEG, PNG or DICOM)", type=UPLOAD_TYPES, key=f"{prefix}_upload")
    if up is not None:
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
            st.warning(f"Image {wanted!r} not found: set the dataset folder in the sidebar to open it.")
    if st.button("Try a sample", key=f"{prefix}_next", help="the next bundled sample X-ray"):
        current = st.session_state.get(key, names[0])
        samples = [n for n in names if n.startswith("sample")]
        if samples:
            st.session_state[key] = samples[(samples.index(current) + 1) % len(samples)] if current in samples else samples[0]
    name = st.selectbox("…or pick an image", names, key=key)
    return name.split(" · ", 1)[1], choices[name].read_bytes()


def linked_image() -> tuple[str, bytes] | None:
    """The image named by the URL (``?image=test/PNEUMONIA/x.jpeg``: a dataset-folder id or a sample's name)."""
    wanted = st.query_params.get("image")
    if not wanted:
        return None
    for base in (data_dir(), ASSETS / "examples"):
        p = (base / wanted) if base is not None else None
        if p is not None and p.is_file() and base.resolve() in p.resolve().parents:
            return Path(wanted).name, p.read_bytes()
    st.warning(f"Image {wanted!r} not found: set the dataset folder in the sidebar to open it.")
    return None
