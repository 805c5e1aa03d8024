"""Compare heatmaps: two or three models side by side on one image, shared or own colour scale."""
from __future__ import annotations

import streamlit as st

from pages._common import current_source, data_dir, model_keys, predictor, start_page
from pneumo_core.data import kermany_splits
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.gradcam import METHODS, explain, overlay, own_scale, shared_scale
from pneumo_core.images import load_grayscale

start_page("Compare heatmaps")
source, src_label = current_source()
keys = [k for k in model_keys(source) if "/seed" not in k]
preferred = [k for k in ("binary/resnet18", "binary/densenet121") if k in keys]
chosen = st.multiselect("Models (two or three)", keys, default=preferred or keys[:2], max_selections=3, key="cmp_models")
up = st.file_uploader("An X-ray", type=["jpg", "jpeg", "png", "dcm", "dicom"], key="cmp_upload")
gray, name = None, None
if up is not None:
    try:
        gray, name = load_grayscale(up.getvalue(), name=up.name), up.name
    except ImageLoadError as exc:
        st.error(str(exc))
elif data_dir() is not None:
    try:
        test = kermany_splits(data_dir())["test"]
        name = st.selectbox("…or a test image", list(test["image_id"]), key="cmp_dataset_image")
        gray = load_grayscale(data_dir() / name)
    except PneumoError as exc:
        st.error(str(exc))
if gray is None or len(chosen) < 2:
    st.info("Choose at least two models and upload an image (or set a dataset folder in the sidebar).")
    st.stop()
c1, c2 = st.columns(2)
method = c1.selectbox("Method", [m for m, v in METHODS.items() if not v[2]], format_func=lambda m: METHODS[m][1],
                      key="cmp_method")
shared = c2.toggle("One shared colour scale", value=True, key="cmp_shared",
                   help="Shared: the hottest pixel of all maps is full colour. Off: each map on its own scale.")
results = [explain(predictor(source, src_label, k), gray, method) for k in chosen]
maps = shared_scale([r.raw for r in results]) if shared else [own_scale(r.raw) for r in results]
for col, k, r, m in zip(st.columns(len(chosen)), chosen, results, maps):
    col.image(overlay(gray, m), caption=k, clamp=True)
    col.markdown(f"**{r.class_name}** ({max(r.probs):.3f})")
    col.caption(f"faithfulness (confidence change when keeping the heat): {r.faithfulness:+.3f}")
    if r.degenerate:
        col.warning(r.message)
