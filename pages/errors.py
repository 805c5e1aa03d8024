"""Errors: the N x N confusion matrix and every mistake (the largest error cell first), paged, with cached CAMs.
It opens on the best model that has a heatmap (a single checkpoint of the sidebar source)."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages._shared.images import DATA_HINT, digest, image_path, read_image_file
from pages._shared.layout import show_figure, start_page, wide_page
from pages._shared.models import cam, current_source, loaded, model_keys
from pages._shared.predictions import label, predictions_root, set_options, source_predictions_root, val_and_test
from pneumo_core.data.images import load_grayscale
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.mistakes import (ANY, HeatmapChoice, confusion, decision_text, decisions,
                                              heatmap_choice, largest_error_cell, mistake_noun, mistakes)
from pneumo_core.explain.cams import overlay
from pneumo_core.files import escape_html, escape_markdown
from pneumo_core.visualize.charts import confusion_figure
from pneumo_core.models.keys import ModelKey

PER_PAGE = 12
THUMB = 300  # px: each thumbnail's width (three to a row)
LARGE = 520  # px: the error shown large and its heatmap, side by side
TASKS = ("three_class", "binary")

start_page("Errors")
wide_page()
source, src_label = current_source()
own = source_predictions_root(source) == predictions_root()  # the source's checkpoints made these predictions


def heatmap(opt: ModelKey) -> HeatmapChoice:
    """The source's checkpoint behind a prediction set, or why there is none."""
    return heatmap_choice(opt.arch, opt.seed, opt.best.source_key, combined=opt.combined, own=own,
                          source_keys=model_keys(source),
                          source_seed=selection.best_seed(predictions_root(), opt.task, opt.arch))


if "err_model" not in st.session_state and not st.query_params.get("model"):  # open on a model with a heatmap
    first = next((o for o in set_options(str(predictions_root()), TASKS) if heatmap(o).key), None)
    if first is not None:
        st.query_params["model"] = label(first)
opt, val, test = val_and_test(TASKS, key="err_model")
classes = list(test.classes)
try:
    t = selection.threshold_on(val) if test.is_binary else None
except PneumoError as exc:  # e.g. a validation file of one class: no threshold separates anything there
    st.error(escape_markdown(f"{exc}; deciding by the largest probability instead."))
    t = None
decided = decisions(test, t)
st.caption(escape_markdown(decision_text(test, t)))
cm = confusion(test, decided)
show_figure(confusion_figure(cm, [escape_html(c) for c in classes], "Confusion matrix on test"), key="err_cm")

c1, c2 = st.columns(2)
cell = largest_error_cell(cm)  # the page opens on the largest error cell
true_cls = c1.selectbox("True class", classes, index=cell[0] if cell else len(classes) - 1, key="err_true")
others = [c for c in classes if c != true_cls]
row_cell = largest_error_cell(cm, classes.index(true_cls))
pred_cls = c2.selectbox("Predicted as", [ANY] + others, key="err_pred",
                        index=others.index(classes[row_cell[1]]) + 1 if row_cell else 0)
rows = mistakes(test, decided, true_cls, pred_cls)
st.markdown(f"**{len(rows)}** {escape_markdown(true_cls)} {mistake_noun(test, true_cls)}, most confident first.")
st.dataframe(rows, hide_index=True, key="err_table", height=220)
if rows.empty:
    st.stop()

pages = (len(rows) - 1) // PER_PAGE + 1
page = st.number_input(f"Page (of {pages}, {PER_PAGE} images each)", 1, pages, 1, key="err_page") if pages > 1 else 1
shown = rows.iloc[(page - 1) * PER_PAGE: page * PER_PAGE]
if image_path(shown["image_id"].iloc[0]) is None:
    st.caption(DATA_HINT)
    st.stop()

task, arch, seed = opt
key = opt.best.source_key
choice = heatmap(opt)
cam_key = choice.key
if cam_key is not None and not loaded(source, src_label, [cam_key]):
    cam_key = None  # named above; the X-rays are still shown
elif cam_key is None:
    st.info(escape_markdown(f"No Grad-CAM for this model: {choice.reason}. The X-rays are shown without heatmaps."))
link_model = cam_key or (key if key in model_keys(source) else None)  # Compare opens on the model of the error
show = cam_key is not None and st.toggle("Grad-CAM (beside the large image; over each thumbnail)", key="err_cam",
                                        value=False)


def x_ray(image_id: str) -> tuple[str, np.ndarray] | None:
    """(content digest, decoded X-ray), the file read once; None with its problem named (one unreadable image: the
    gallery goes on)."""
    if (path := image_path(image_id)) is None:
        st.error(escape_markdown(f"{image_id}: not in the dataset folder"))
        return None
    try:
        data = read_image_file(path)
        return digest(data), load_grayscale(data, image_id.rsplit("/", 1)[-1])
    except ImageLoadError as exc:
        st.error(escape_markdown(exc))
        return None


def heatmap_of(h: str, gray: np.ndarray):
    return cam(source, src_label, cam_key, h, "gradcam", None, gray)


def enlarge(image_id: str) -> None:
    st.session_state["err_big"] = image_id


@st.fragment
def gallery() -> None:
    ids = list(shown["image_id"])
    if st.session_state.get("err_big") not in ids:  # another page of mistakes: its first one
        st.session_state.pop("err_big", None)
    big = st.selectbox("Shown large", ids, key="err_big", format_func=lambda i: i.split("/")[-1])
    _, p_big, c_big = shown.iloc[ids.index(big)]
    read = {i: x_ray(i) for i in ids}  # each file read and decoded once a run (the large one is a thumbnail too)
    if (got := read[big]) is not None:
        h, gray = got
        a, b = st.columns(2)
        with a:
            st.image(gray, width=LARGE, clamp=True, caption=escape_markdown(f"{true_cls} → {p_big} ({c_big:.2f})"))
        if show:
            r = heatmap_of(h, gray)
            with b:
                st.image(overlay(gray, r.normalised), width=LARGE, clamp=True,
                         caption=escape_markdown(f"Grad-CAM {r.class_name}"))
    cols = st.columns(3)
    for j, (image_id, p_lbl, c) in enumerate(shown.itertuples(index=False)):
        with cols[j % 3]:
            if (got := read[image_id]) is not None:
                h, gray = got
                st.image(overlay(gray, heatmap_of(h, gray).normalised) if show else gray, width=THUMB, clamp=True)
            st.caption(escape_markdown(f"{image_id.split('/')[-1]}: {true_cls} → {p_lbl} ({c:.2f})"))
            a, b, d = st.columns(3)
            a.button("Large", key=f"err_big_{j}", icon=":material/zoom_in:", on_click=enlarge, args=(image_id,),
                     help="Show this X-ray large above")
            b.page_link("pages/predict.py", label="Predict", icon=":material/search:", query_params={"image": image_id})
            d.page_link("pages/compare.py", label="Compare", icon=":material/compare:",
                        query_params={"image": image_id, **({"model": link_model} if link_model else {})})


gallery()
