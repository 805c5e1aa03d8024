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
from pneumo_core.predictions import Predictions
from pneumo_core.sources import DEFAULT_REPO, HubSource, LocalSource, Source, bundled_source
from pneumo_core.zoo import ASSETS, prediction_index

SOURCES = ("Bundled demo models", "Local checkpoints folder", "Hugging Face Hub")
DATA_HINT = ("Set a dataset folder in the sidebar (a Kermany layout: `chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}`) "
             "to see the images.")


def start_page(title: str) -> None:
    """Every page begins here: its title and, once, quietly, the "not for clinical use" line.

    With a ``pages/`` folder beside ``app.py``, Streamlit starts in its legacy multipage mode and a
    deep link (``/thresholds?threshold=0.3``) would run the page file alone, without ``app.py``'s
    navigation and sidebar, until ``st.navigation`` has run once in the process. A page entered that
    way switches the process to ``st.navigation`` mode and reruns through ``app.py``.
    """
    if not st.session_state.get("_via_app"):
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
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


@st.cache_resource(show_spinner=False)
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


@st.cache_resource(show_spinner="Loading model…")
def predictor(_source: Source, source_label: str, key: str):
    from pneumo_core.inference import Predictor

    return Predictor(_source.load(key))


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
def index(root: str):
    return prediction_index(root)


@st.cache_data(show_spinner=False)
def prediction_set(root: str, task: str, arch: str, seed: int, split: str) -> Predictions:
    from pneumo_core.zoo import ensemble_sets, load_set

    if arch.startswith("ensemble"):
        sets = ensemble_sets(root, task)
        return sets[0] if split == "val" else sets[1]
    return load_set(root, task, arch, seed, split)


def set_options(root: Path, tasks: tuple[str, ...]) -> list[tuple[str, str, int]]:
    """(task, arch, seed) triples with both val and test files, plus one ensemble per task."""
    idx = index(str(root))
    out = []
    for (task, arch, seed), g in idx.groupby(["task", "arch", "seed"], sort=True):
        if task in tasks and set(g.split) >= {"val", "test"}:
            out.append((task, arch, int(seed)))
    for task in tasks:
        if len({a for t, a, s in out if t == task and s >= 0}) >= 2:
            out.append((task, "ensemble", -1))
    return out


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
    from pneumo_core.data import kermany_splits
    from pneumo_core.inference import predict_frame

    source, src_label = current_source()
    model = predictor(source, src_label, f"{task}/{arch}")
    frame = kermany_splits(data_dir())[split]
    bar = st.progress(0.0, text=f"Predicting the {split} split with {task}/{arch}…")
    table = predict_frame(model, frame, split=split,
                          progress=lambda done, total: bar.progress(done / total, text=f"{split}: {done}/{total} images"))
    bar.empty()
    return table


def choose_set(root: Path, tasks: tuple[str, ...], key: str) -> tuple[str, str, int] | None:
    opts = set_options(root, tasks) + source_options(tasks)
    if not opts:
        st.info("No prediction files yet. Train models with `python train.py --zoo` or point the sidebar at a "
                "local checkpoints folder that has `predictions/`.")
        return None
    wanted = st.query_params.get("model")
    labels = [label(o) for o in opts]
    default = labels.index(wanted) if wanted in labels else 0
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
