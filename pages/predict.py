"""Predict: upload X-rays -> per-model probabilities, ensemble / hierarchical views, Grad-CAM overlay."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from pages._common import current_source, model_keys, predictor, start_page
from pneumo_core.errors import ImageLoadError
from pneumo_core.gradcam import COLORMAPS, METHODS, explain, overlay
from pneumo_core.images import load_grayscale
from pneumo_core.inference import Ensemble, Hierarchical
from pneumo_core.ood import default_gate

start_page("Predict")
source, src_label = current_source()
keys = [k for k in model_keys(source) if "/seed" not in k]
if not keys:
    st.warning("No models available from this source.")
    st.stop()
uploads = st.file_uploader("Chest X-rays (JPEG, PNG or DICOM)", type=["jpg", "jpeg", "png", "dcm", "dicom"],
                           accept_multiple_files=True, key="uploads")
if not uploads:
    st.info("Upload one or more frontal chest X-rays to see each model's probabilities and its heatmap.")
    st.stop()

images, rows = {}, []
gate = default_gate()
for up in uploads:
    try:
        images[up.name] = load_grayscale(up.getvalue(), name=up.name)
    except ImageLoadError as exc:
        st.error(str(exc))
if not images:
    st.stop()

preds = {k: predictor(source, src_label, k) for k in keys}
for name, gray in images.items():
    ood = float(gate.score([gray])[0]) if gate is not None else None
    if ood is not None and ood > gate.threshold:
        st.warning(f"{name}: this does not look like a frontal chest X-ray (OOD score {ood:.2f} > "
                   f"{gate.threshold:.2f}); the predictions below are shown anyway.")
    for k, p in preds.items():
        probs = p.predict_grays([gray])[0]
        rows.append({"image": name, "model": k, **{c: float(v) for c, v in zip(p.classes, probs)},
                     "predicted": p.classes[int(np.argmax(probs))], "ood_score": ood})
    binary = [p for k, p in preds.items() if k.startswith("binary/")]
    if len(binary) > 1:
        probs = Ensemble(binary).predict_grays([gray])[0]
        rows.append({"image": name, "model": "binary ensemble", "NORMAL": probs[0], "PNEUMONIA": probs[1],
                     "predicted": ("NORMAL", "PNEUMONIA")[int(probs[1] >= 0.5)], "ood_score": ood})
    three = [p for k, p in preds.items() if k.startswith("three_class/")]
    if len(three) > 1:
        probs = Ensemble(three).predict_grays([gray])[0]
        rows.append({"image": name, "model": "three-class ensemble", **dict(zip(three[0].classes, probs)),
                     "predicted": three[0].classes[int(np.argmax(probs))], "ood_score": ood})
    bv = [p for k, p in preds.items() if k.startswith("bacteria_virus/")]
    if binary and bv:
        stage_a = Ensemble(binary) if len(binary) > 1 else binary[0]
        probs = Hierarchical(stage_a, bv[0]).predict_grays([gray])[0]
        rows.append({"image": name, "model": "hierarchical", **dict(zip(("NORMAL", "BACTERIA", "VIRUS"), probs)),
                     "predicted": ("NORMAL", "BACTERIA", "VIRUS")[int(np.argmax(probs))], "ood_score": ood})
table = pd.DataFrame(rows)
st.dataframe(table, hide_index=True, key="pred_table",
             column_config={c: st.column_config.NumberColumn(format="%.3f")
                            for c in ("NORMAL", "PNEUMONIA", "BACTERIA", "VIRUS", "ood_score") if c in table})
st.download_button("Download results (CSV)", table.to_csv(index=False), "predictions.csv", "text/csv", key="dl_csv")

st.subheader("Heatmap")
c1, c2, c3, c4 = st.columns(4)
img_name = c1.selectbox("Image", list(images), key="cam_image")
model_key = c2.selectbox("Model", list(preds), key="cam_model")
method = c3.selectbox("Method", list(METHODS), format_func=lambda m: METHODS[m][1], key="cam_method")
p = preds[model_key]
cls = c4.selectbox("Class to explain", ["predicted"] + list(p.classes), key="cam_class")
opacity = st.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
cmap = st.selectbox("Colour map", list(COLORMAPS), key="cmap")
with st.spinner(f"{METHODS[method][1]}…"):
    r = explain(p, images[img_name], method, None if cls == "predicted" else list(p.classes).index(cls))
if r.degenerate:
    st.warning(r.message)
pic = overlay(images[img_name], r.normalised, opacity, cmap)
a, b = st.columns(2)
a.image(images[img_name], caption=img_name, clamp=True)
b.image(pic, caption=f"{r.method} for {r.class_name} · faithfulness (confidence change) {r.faithfulness:+.3f}")
buf = io.BytesIO()
Image.fromarray(pic).save(buf, format="PNG")
st.download_button("Download overlay (PNG)", buf.getvalue(), f"{img_name.rsplit('.', 1)[0]}_{method}.png", "image/png",
                   key="dl_png")
