"""Models: the results table, learning curves (seeds overlaid), recipes."""
from __future__ import annotations

import streamlit as st

from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import predictions_root
from pneumo_core.evaluation.artifacts import run_info, runs
from pneumo_core.evaluation.results import load_results
from pneumo_core.visualize.charts import learning_curve_figure

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
    st.dataframe(part.loc[:, (part != "").any()], hide_index=True, key=f"results_{task}", width="stretch")

st.subheader("Learning curves")
by_model: dict[tuple[str, str], list[str]] = {}
for task, stem in runs(root):
    by_model.setdefault((task, stem.rsplit("_seed", 1)[0]), []).append(stem)
if by_model:
    labels = [f"{task} · {model}" for task, model in by_model]
    pick = st.selectbox("Model (every seed overlaid)", labels, key="lc_run")
    task, model = list(by_model)[labels.index(pick)]
    infos = {stem.rsplit("_", 1)[-1]: run_info(root, task, stem) for stem in by_model[(task, model)]}
    show_figure(learning_curve_figure({k: v["history"] for k, v in infos.items() if "history" in v}, pick),
                key="lc_chart")
    for seed, info in infos.items():
        if "metrics" in info:
            cfg = info["metrics"]["config"]
            st.caption(f"{seed}: " + ", ".join(f"{k} {cfg[k]}" for k in ("init", "image_size", "head_epochs", "epochs",
                                                                         "freeze_fraction", "lr", "batch_size"))
                       + f"; wall time {info['metrics']['wall_s'] / 60:.1f} min on the training machine's CPU.")
