"""Models: the results table, learning curves (seeds overlaid), recipes."""
from __future__ import annotations

import streamlit as st

from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import predictions_root
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import recipe_line, run_info, runs
from pneumo_core.evaluation.results import load_results, task_table
from pneumo_core.files import escape_html, escape_markdown
from pneumo_core.visualize.charts import learning_curve_figure

start_page("Models")
root = predictions_root()


@st.cache_data(show_spinner="Computing the results table…")
def table(root: str):
    return load_results(root)


try:
    t = table(str(root))
except PneumoError as exc:  # e.g. a malformed prediction file: named, the learning curves still drawn
    st.error(escape_markdown(exc))
    t = None
if t is not None and t.empty:
    st.info("No prediction files yet: train the zoo with `python train.py --zoo`.")
    st.stop()
st.caption(escape_markdown(f"Test set; binary thresholds by {selection.THRESHOLD_RULE_TEXT} (the patient-aware "
                           f"validation split); best seed by {selection.SEED_RULE}. Mean ± std over seeds where "
                           "there are several; [low, high] = 95 % bootstrap interval of that figure."))
for task in t["task"].unique() if t is not None else []:
    st.subheader(task.replace("_", " "))
    st.dataframe(task_table(t, task), hide_index=True, key=f"results_{task}", width="stretch")

st.subheader("Learning curves")
by_model = runs(root)
if by_model:
    labels = [k.label for k in by_model]
    pick = st.selectbox("Model (every seed overlaid)", labels, key="lc_run")
    infos = {}
    for run in by_model[list(by_model)[labels.index(pick)]]:
        try:
            infos[f"seed{run.seed}"] = run_info(root, run)
        except PneumoError as exc:  # a malformed run log: named, the other seeds still drawn
            st.error(escape_markdown(exc))
    show_figure(learning_curve_figure({k: v["history"] for k, v in infos.items() if "history" in v},
                                      escape_html(pick)), key="lc_chart")
    for seed, info in infos.items():
        if line := recipe_line(info.get("metrics", {})):
            st.caption(escape_markdown(f"{seed}: {line}."))
