"""Models: the results table, learning curves, per-class F1, recipes."""
from __future__ import annotations

import streamlit as st

from pages._common import predictions_root, start_page
from pneumo_core.visualize.charts import learning_curve_figure
from pneumo_core.evaluation.artifacts import run_info, runs
from pneumo_core.evaluation.results import load_results

start_page("Models")
root = predictions_root()


@st.cache_data(show_spinner="Computing the results table…")
def table(root: str):
    return load_results(root)


t = table(str(root))
if t.empty:
    st.info("No prediction files yet: train the zoo with `python train.py --zoo`.")
    st.stop()
st.caption("Test set (624 images); binary thresholds chosen on the patient-aware validation split (Youden's J); "
           "best seed = lowest validation log loss. Mean ± std over seeds where there are several; "
           "[low, high] = 95 % bootstrap interval of that figure.")
for task in t["task"].unique():
    st.subheader(task.replace("_", " "))
    part = t[t["task"] == task].drop(columns=["task"])
    st.dataframe(part.loc[:, (part != "").any()], hide_index=True, key=f"results_{task}")

st.subheader("Learning curves")
all_runs = runs(root)
if all_runs:
    pick = st.selectbox("Run", [f"{a} · {b}" for a, b in all_runs], key="lc_run")
    task, stem = pick.split(" · ")
    info = run_info(root, task, stem)
    if "history" in info:
        st.plotly_chart(learning_curve_figure(info["history"], stem), key="lc_chart")
    if "metrics" in info:
        cfg = info["metrics"]["config"]
        st.caption("Recipe: " + ", ".join(f"{k} {cfg[k]}" for k in ("init", "image_size", "head_epochs", "epochs",
                                                                      "freeze_fraction", "lr", "batch_size")))
        st.caption(f"Wall time {info['metrics']['wall_s'] / 60:.1f} min on this machine's CPU.")
