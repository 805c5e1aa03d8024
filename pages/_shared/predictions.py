"""Prediction tables: the zoo's files (best first, by pneumo_core's selection rule) and a source model's
predictions on the dataset folder, computed once with a progress bar."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared.images import data_dir
from pages._shared.layout import state
from pages._shared.models import SOURCES, current_source, model_keys, predictor
from pneumo_core.models.sources import LocalSource, Source, bundled_source
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import has_predictions
from pneumo_core.evaluation.predictions import Predictions
from pneumo_core.files import ASSETS, escape_markdown
from pneumo_core.models.keys import ModelKey



class Computed(ModelKey):
    """A source model's predictions computed now on the dataset folder, not read from a prediction file."""

    __slots__ = ()

    @property
    def label(self) -> str:
        return f"{self.task} · {self.arch} · computed on the dataset folder"


def predictions_root() -> Path:
    """Prediction files: the local folder's when it has some, else the committed ones in assets/."""
    if state("source_kind", SOURCES[0]) == SOURCES[1]:
        folder = Path(state("local_dir", "") or ".")
        if has_predictions(folder):
            return folder
    return ASSETS


def source_predictions_root(source: Source) -> Path | None:
    """The prediction files that describe ``source``'s own checkpoints: assets/ for the bundled models, a local
    folder's ``predictions/``; None for a source without them (a Hub repo, a folder of checkpoints only), whose
    models then decide at their checkpoints' stored thresholds, never at the bundled zoo's."""
    if not isinstance(source, LocalSource):
        return None
    if source.root == bundled_source().root:
        return ASSETS
    return source.root if has_predictions(source.root) else None


@st.cache_data(show_spinner=False, max_entries=64)
def prediction_set(root: str, task: str, arch: str, seed: int | None, split: str) -> Predictions:
    return selection.load_choice(root, task, arch, seed, split)


@st.cache_data(show_spinner=False, max_entries=16)
def set_options(root: str, tasks: tuple[str, ...]) -> list[ModelKey]:
    """The prediction sets, best first (pneumo_core.evaluation.selection)."""
    return selection.set_choices(root, tasks)


def label(opt: ModelKey) -> str:
    return opt.label


def source_options(tasks: tuple[str, ...]) -> list[Computed]:
    """With a dataset folder set, every model of the current source can be evaluated on it (models that
    failed to load this session are left out)."""
    if data_dir() is None:
        return []
    source, src_label = current_source()
    broken = st.session_state.get("broken_models", set())
    keys = (ModelKey.parse(k) for k in model_keys(source, best_only=True) if (src_label, k) not in broken)
    return [Computed(*key) for key in keys if key.task in tasks]


def computed_set(key: ModelKey, split: str) -> Predictions:
    """Predict a split of the dataset folder with a source model, with a progress bar (cached on disk)."""
    from pneumo_core.data.datasets import kermany_splits
    from pneumo_core.inference.predictors import predict_frame

    source, src_label = current_source()
    model = predictor(source, src_label, key.best.source_key)
    frame = kermany_splits(data_dir())[split]
    bar = st.progress(0.0, text=f"Predicting the {split} split with {key.best.source_key}…")
    table = predict_frame(model, frame, split=split,
                          progress=lambda done, total: bar.progress(done / total,
                                                                    text=f"{split}: {done}/{total} images"))
    bar.empty()
    return table


def choose_set(root: Path, tasks: tuple[str, ...], key: str) -> ModelKey | None:
    """The page's model selectbox (best first; a deep link's ``?model=`` preselected, or named if unknown)."""
    for line in st.session_state.pop("skipped_note", []):
        st.error(line)
    try:
        opts = set_options(str(root), tasks) + source_options(tasks)
    except PneumoError as exc:  # a malformed prediction file in the folder: named, never a traceback
        st.error(escape_markdown(exc))
        return None
    if not opts:
        st.info("No prediction files yet. Train models with `python train.py --zoo` or point the sidebar at a "
                "local checkpoints folder that has `predictions/`.")
        return None
    wanted = st.query_params.get("model")
    labels = [label(o) for o in opts]
    default = labels.index(wanted) if wanted in labels else 0
    if wanted and wanted not in labels and key not in st.session_state:
        st.warning(escape_markdown(f"The link's model {wanted[:80]!r} is not available here; showing {labels[0]!r}."))
    if st.session_state.get(key) not in labels:
        st.session_state.pop(key, None)
    choice = st.selectbox("Model and prediction set", labels, index=default, key=key)
    st.query_params["model"] = choice
    return opts[labels.index(choice)]


def val_and_test(tasks: tuple[str, ...], key: str) -> tuple[ModelKey, Predictions, Predictions]:
    """The page's chosen prediction set: its key, its validation and test tables; stops the page
    when there is none. A source model that cannot be used is named, left out of the list, and the page
    goes on with the others."""
    root = predictions_root()
    opt = choose_set(root, tasks, key)
    if opt is None:
        st.stop()
    if isinstance(opt, Computed):
        try:
            return opt, computed_set(opt, "val"), computed_set(opt, "test")
        except PneumoError as exc:
            model = opt.source_key
            st.session_state.setdefault("broken_models", set()).add((current_source()[1], model))
            st.session_state["skipped_note"] = [escape_markdown(f"{model} skipped: {exc}")]
            st.session_state.pop(key, None)
            if st.query_params.get("model") == label(opt):
                del st.query_params["model"]
            st.rerun()
    try:
        return opt, prediction_set(str(root), *opt, "val"), prediction_set(str(root), *opt, "test")
    except (PneumoError, FileNotFoundError) as exc:  # named; the selectbox stays for another choice
        st.error(escape_markdown(exc))
        st.stop()
