"""The sidebar's model source, its predictors loaded once, and what they compute per image.

Every cache here is bounded and keyed by the source's resolved folder, the model and the checkpoint file's
stamp (name, mtime, size): a checkpoint replaced in place is loaded afresh and its outputs recomputed.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable

import numpy as np
import streamlit as st

from pages._shared.layout import state
from pneumo_core.errors import PneumoError
from pneumo_core.files import escape_markdown
from pneumo_core.models.sources import DEFAULT_REPO, HubSource, LocalSource, Source, bundled_source

SOURCES = ("Bundled demo models", "Local checkpoints folder", "Hugging Face Hub")
#: the bundled source's label: part of every cache key (the warm-up fills the entries the pages read)
BUNDLED_LABEL = "bundled demo models (assets/models)"


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
    return bundled_source(), BUNDLED_LABEL


def model_keys(source: Source, task: str | None = None, best_only: bool = False) -> list[str]:
    """The source's checkpoint keys (``task/arch`` or ``task/arch/seedN``), of one task if given; with
    ``best_only`` each architecture's best checkpoint only (no seeded ones)."""
    try:
        refs = source.list()
    except PneumoError:
        return []
    return [r.key for r in refs if (task is None or r.task == task) and not (best_only and r.seed is not None)]


def member_keys(source: Source, root, shown: list[str]) -> list[str]:
    """The source's seeded checkpoints (``task/arch/seedN``) that the zoo of prediction files ``root`` runs besides
    ``shown`` (a seed ensemble's members): their probabilities feed a verdict, they get no heatmap of their own.
    Empty without prediction files (``root`` None)."""
    if root is None:
        return []
    from pneumo_core.evaluation.selection import runnable_keys

    need = runnable_keys(root)
    return [k for k in model_keys(source) if k not in shown and k in need]


def predictor(_source: Source, source_label: str, key: str):
    """The model ``key`` of the source, loaded once per (source, key, checkpoint file): ``source_label``
    names the resolved folder (LocalSource resolves it, so every spelling of a folder is one entry)."""
    return _predictor(_source, source_label, key, _source.stamp(key))


@st.cache_resource(show_spinner="Loading model…", max_entries=24)
def _predictor(_source: Source, source_label: str, key: str, stamp: str):
    from pneumo_core.inference.predictors import Predictor

    return Predictor(_source.load(key))


def usable_models(source: Source, source_label: str, keys: list[str]) -> tuple[list[str], list[str]]:
    """The keys whose models load, and one line for each that does not: a bad checkpoint in a folder is
    skipped, never fatal for the page."""
    failed = _failed_loads()
    good, bad = [], []
    for k in keys:
        entry = (source_label, k, source.stamp(k))
        if entry in failed:  # a file that failed is not read again until it changes (a 1 GB file, each rerun)
            bad.append(failed[entry])
            continue
        try:
            predictor(source, source_label, k)
            good.append(k)
        except PneumoError as exc:
            bad.append(f"{k} skipped: {exc}")
            if entry[2]:  # only where the source can tell a changed file
                failed[entry] = bad[-1]
                while len(failed) > 256:
                    failed.pop(next(iter(failed)))
    return good, bad


@st.cache_resource(show_spinner=False)
def _failed_loads() -> dict[tuple[str, str, str], str]:
    """(source, key, checkpoint stamp) -> the line that named the failure, for every session."""
    return {}


def loaded(source: Source, source_label: str, keys: list[str]) -> list[str]:
    """:func:`usable_models`, each model that does not load named on the page in one line."""
    good, bad = usable_models(source, source_label, keys)
    for line in bad:
        st.error(escape_markdown(line))
    return good


# ---------------------------------------------------------------- compute once, show many times

def model_probs(source: Source, source_label: str, key: str, image: str, gray: np.ndarray) -> np.ndarray:
    """One model's class probabilities for one image (``image``: the content digest), cached."""
    return _model_probs(source, source_label, key, source.stamp(key), image, gray)


def cam(source: Source, source_label: str, key: str, image: str, method: str, target: int | None,
        gray: np.ndarray):
    """A CAM's raw and normalised maps, cached per (model, image content, method, class); opacity, colour map
    and scale only re-render it. Faithfulness is computed separately, on demand."""
    return _cam(source, source_label, key, source.stamp(key), image, method, target, gray)


def faithfulness(source: Source, source_label: str, key: str, image: str, method: str, target: int | None,
                 gray: np.ndarray) -> float:
    """The CAM's faithfulness score (confidence change keeping only the heat), cached."""
    return _faithfulness(source, source_label, key, source.stamp(key), image, method, target, gray)


@st.cache_data(show_spinner=False, max_entries=4096)
def _model_probs(_source: Source, source_label: str, key: str, stamp: str, image: str,
                 _gray: np.ndarray) -> np.ndarray:
    return predictor(_source, source_label, key).predict_grays([_gray])[0]


@st.cache_data(show_spinner=False, max_entries=512)
def _cam(_source: Source, source_label: str, key: str, stamp: str, image: str, method: str, target: int | None,
         _gray: np.ndarray):
    from pneumo_core.explain.cams import explain

    return explain(predictor(_source, source_label, key), _gray, method, target, faithfulness=False)


@st.cache_data(show_spinner=False, max_entries=512)
def _faithfulness(_source: Source, source_label: str, key: str, stamp: str, image: str, method: str,
                  target: int | None, _gray: np.ndarray) -> float:
    from pneumo_core.explain.cams import explain

    return explain(predictor(_source, source_label, key), _gray, method, target, faithfulness=True).faithfulness


@st.cache_resource(show_spinner=False)
def _focus_store() -> tuple[OrderedDict, threading.Lock]:
    return OrderedDict(), threading.Lock()


def _focus_entry(source: Source, source_label: str, key: str, method: str, paths: tuple[str, ...],
                 sanity: bool) -> tuple:
    """:func:`focus_table`'s cache key: the checkpoint file's stamp with what the figures depend on."""
    return source_label, key, source.stamp(key), method, paths, sanity


def focus_table(source: Source, source_label: str, key: str, method: str, paths: tuple[str, ...], sanity: bool,
                progress: Callable[[int, int], None] | None = None, max_entries: int = 32):
    """Per-image explanation figures of one model (``audit.audit_images``), computed once per (source,
    checkpoint file, method, images, sanity) for every session. Not ``st.cache_data``: it would replay the
    caller's progress bar on a cache hit and raise ``CacheReplayClosureError`` (the page's second run)."""
    from pneumo_core.explain.audit import audit_images

    store, lock = _focus_store()
    entry = _focus_entry(source, source_label, key, method, paths, sanity)
    with lock:
        if entry in store:
            store.move_to_end(entry)
            return store[entry].copy()
    table = audit_images(predictor(source, source_label, key), list(paths), method, sanity=sanity, curves=False,
                         progress=progress)
    with lock:
        store[entry] = table
        while len(store) > max_entries:
            store.popitem(last=False)
    return table.copy()


def focus_cached(source: Source, source_label: str, key: str, method: str, paths: tuple[str, ...],
                 sanity: bool) -> bool:
    """Whether :func:`focus_table` already holds this entry (it then returns at once, nothing to estimate)."""
    store, lock = _focus_store()
    with lock:
        return _focus_entry(source, source_label, key, method, paths, sanity) in store


def ood_score(image: str, gray: np.ndarray) -> float | None:
    """The out-of-distribution gate's score for one image (``image``: its content digest), cached; None without
    a gate."""
    return _ood_score(image, gray)


@st.cache_data(show_spinner=False, max_entries=4096)
def _ood_score(image: str, _gray: np.ndarray) -> float | None:
    from pneumo_core.explain.ood import default_gate

    gate = default_gate()
    return None if gate is None else float(gate.score([_gray])[0])
