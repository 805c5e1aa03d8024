"""Errors: the N x N confusion matrix and every mistake (the largest error cell first), paged, with cached CAMs.
It opens on the best model that has a heatmap (a single checkpoint of the sidebar source)."""
from __future__ import annotations

import streamlit as st

from pages._shared.images import DATA_HINT, digest, image_path
from pages._shared.layout import show_figure, start_page
from pages._shared.models import cam, current_source, loaded, model_keys
from pages._shared.predictions import label, predictions_root, set_options, source_predictions_root, val_and_test
from pneumo_core.data.images import load_grayscale
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.mistakes import ANY, confusion, decisions, largest_error_cell, mistakes
from pneumo_core.explain.cams import overlay
from pneumo_core.files import escape_html, escape_markdown
from pneumo_core.visualize.charts import confusion_figure

PER_PAGE = 12
THUMB = 220  # px: each thumbnail's width
TASKS = ("three_class", "binary")

start_page("Errors")
source, src_label = current_source()
own = source_predictions_root(source) == predictions_root()  # the source's checkpoints made these predictions


def heatmap_key(opt: tuple[str, str, int]) -> str | None:
    """The source's checkpoint behind a prediction set (None: an ensemble, another seed, another source)."""
    task, arch, seed = opt
    key = f"{task}/{arch}"
    if not own or key not in model_keys(source) or arch in (selection.ENSEMBLE, "hierarchical"):
        return None
    return key if seed == selection.best_seed(predictions_root(), task, arch) else None


if "err_model" not in st.session_state and not st.query_params.get("model"):  # open on a model with a heatmap
    first = next((o for o in set_options(str(predictions_root()), TASKS) if heatmap_key(o)), None)
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
st.caption(escape_markdown(f"Decision: P({classes[1]}) ≥ {t:.3f} (Youden's J on validation).") if t is not None
           else "Decision: the class of largest probability.")
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
label = ("false negatives" if test.is_binary and true_cls == classes[1] else "false positives" if test.is_binary
         else "errors")
st.markdown(f"**{len(rows)}** {escape_markdown(true_cls)} {label}, most confident first.")
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
key = f"{task}/{arch}"
bundled_seed = selection.best_seed(predictions_root(), task, arch)
cam_key = heatmap_key(opt)
if cam_key is not None and not loaded(source, src_label, [cam_key]):
    cam_key = None  # named above; the X-rays are still shown
elif cam_key is None:
    why = ("an ensemble has no single heatmap" if arch == selection.ENSEMBLE or arch == "hierarchical"
           else "these predictions are not from the sidebar source's models" if not own
           else f"no checkpoint of {arch} seed {seed} is loaded (the source holds "
                f"{'seed ' + str(bundled_seed) if key in model_keys(source) else 'no ' + key})")
    st.info(escape_markdown(f"No Grad-CAM for this model: {why}. The X-rays are shown without heatmaps."))
link_model = cam_key or (key if key in model_keys(source) else None)  # Compare opens on the model of the error
show = cam_key is not None and st.toggle("Grad-CAM beside each image", key="err_cam", value=False)


@st.fragment
def gallery() -> None:
    n = 2 if show else 3  # an image and its heatmap side by side, each THUMB px
    cols = st.columns(n)
    for j, (image_id, p_lbl, c) in enumerate(shown.itertuples(index=False)):
        path = image_path(image_id)
        with cols[j % n]:
            try:
                gray = load_grayscale(path)
            except ImageLoadError as exc:  # one unreadable image: named in its cell, the gallery goes on
                st.error(escape_markdown(exc))
                gray = None
            if gray is not None and show:
                r = cam(source, src_label, cam_key, digest(path.read_bytes()), "gradcam", None, gray)
                st.image([gray, overlay(gray, r.normalised)], width=THUMB, clamp=True,
                         caption=["original", escape_markdown(f"Grad-CAM {r.class_name}")])
            elif gray is not None:
                st.image(gray, width=THUMB, clamp=True)
            st.caption(escape_markdown(f"{image_id.split('/')[-1]}: {true_cls} → {p_lbl} ({c:.2f})"))
            a, b = st.columns(2)
            a.page_link("pages/predict.py", label="Predict", icon=":material/search:", query_params={"image": image_id})
            b.page_link("pages/compare.py", label="Compare", icon=":material/compare:",
                        query_params={"image": image_id, **({"model": link_model} if link_model else {})})


gallery()
