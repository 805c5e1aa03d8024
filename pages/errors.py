"""Errors: the N x N confusion matrix and galleries of mistakes (VIRUS errors first), with CAMs."""
from __future__ import annotations

import numpy as np
import streamlit as st

from pages._common import DATA_HINT, current_source, image_path, model_keys, predictor, start_page, val_and_test
from pneumo_core.visualize.charts import confusion_figure
from pneumo_core.explain.cams import explain, overlay
from pneumo_core.data.images import load_grayscale
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.metrics import binary_at, multiclass_summary

start_page("Errors")
opt, val, test = val_and_test(("three_class", "binary"), key="err_model")
classes = list(test.classes)
probs, y = test.probs, test.y_true

if test.is_binary:
    t = selection.threshold_on(val)
    pred = (test.p_positive >= t).astype(int)
    st.caption(f"Threshold {t:.3f} (Youden's J on validation).")
    m = binary_at(test.y_binary, test.p_positive, t)
    cm = [[m["tn"], m["fp"]], [m["fn"], m["tp"]]]
else:
    pred = probs.argmax(1)
    cm = multiclass_summary(y, probs, classes)["confusion_matrix"]
st.plotly_chart(confusion_figure(cm, classes, "Confusion matrix on test"), key="err_cm")

c1, c2 = st.columns(2)
default_true = classes.index("VIRUS") if "VIRUS" in classes else classes.index("PNEUMONIA")
true_cls = c1.selectbox("True class", classes, index=default_true, key="err_true")
others = ["any wrong class"] + [c for c in classes if c != true_cls]
pred_cls = c2.selectbox("Predicted as", others, key="err_pred")
ti = classes.index(true_cls)
mask = (y == ti) & (pred != ti)
if pred_cls != "any wrong class":
    mask &= pred == classes.index(pred_cls)
conf = probs[np.arange(len(pred)), pred] if not test.is_binary else np.where(pred == 1, test.p_positive, 1 - test.p_positive)
rows = test.frame.loc[mask, ["image_id"]].assign(predicted=[classes[i] for i in pred[mask]], confidence=conf[mask])
rows = rows.sort_values("confidence", ascending=False)
label = ("false negatives" if test.is_binary and ti == 1 else "false positives" if test.is_binary else "errors")
st.markdown(f"**{len(rows)}** {true_cls} {label}, most confident first.")
st.dataframe(rows, hide_index=True, key="err_table")

if image_path(rows["image_id"].iloc[0] if len(rows) else "") is None:
    st.caption(DATA_HINT)
    st.stop()
source, src_label = current_source()
keys = [k for k in model_keys(source, test.task) if k.split("/")[1] == opt[1] and "/seed" not in k]
show = st.toggle("Grad-CAM on each image (slower)", key="err_cam", value=False)
cols = st.columns(4)
for j, (image_id, p_lbl, c) in enumerate(rows.head(12).itertuples(index=False)):
    gray = load_grayscale(image_path(image_id))
    img = gray
    if show and keys:
        r = explain(predictor(source, src_label, keys[0]), gray, "gradcam", faithfulness=False)
        img = overlay(gray, r.normalised)
    cols[j % 4].image(img, caption=f"{image_id.split('/')[-1]} → {p_lbl} ({c:.2f})", clamp=True)
