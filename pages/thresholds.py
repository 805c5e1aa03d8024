"""Thresholds: slider -> live confusion matrix and rates; ROC/PR with the operating point; presets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages._shared.images import DATA_HINT, image_path
from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import predictions_root, val_and_test
from pneumo_core.evaluation.bootstrap import bootstrap_binary, patient_groups
from pneumo_core.visualize.charts import confusion_figure, pr_figure, roc_figure
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.thresholds import (CELL_NAMES, CELLS, PRESETS, TABLE, Curves, ThresholdSweep,
                                               apply_preset, at_prevalence, cell_images, clicked_cell, curves,
                                               curve_at_other_prevalence, operating_rows, pr_point, subtype_recall,
                                               threshold_from_link)
from pneumo_core.errors import PneumoError
from pneumo_core.files import escape_markdown

start_page("Thresholds")
opt, val, test = val_and_test(("binary", "three_class"), key="thr_model")
root = predictions_root()
if not test.is_binary:
    st.caption("Binary view of a three-class model: P(pneumonia) = P(bacteria) + P(virus).")


@st.cache_data(show_spinner=False)
def sweep_of(key: tuple, y: np.ndarray, p: np.ndarray) -> ThresholdSweep:
    return ThresholdSweep(y, p)


@st.cache_data(show_spinner=False)
def curves_of(key: tuple, y: np.ndarray, p: np.ndarray) -> Curves:
    return curves(y, p, test.frame["image_id"])


key = (str(root), *opt)
y, p = test.y_binary, test.p_positive
sweep = sweep_of(key, y, p)
c = curves_of(key, y, p)

try:
    val_threshold = selection.pneumonia_threshold_on(val)
except PneumoError as exc:  # e.g. a validation file of one class: no threshold separates anything there
    val_threshold = 0.5
    st.error(escape_markdown(f"{exc}; the slider opens at {val_threshold}."))
if st.session_state.get("thr_for") != key:  # a model opens at its validation threshold (a deep link's on arrival)
    first_visit = "thr_for" not in st.session_state
    st.session_state["thr_for"] = key
    st.session_state["threshold"] = round(val_threshold, 3)
    if first_visit and "threshold" in st.query_params:
        asked = threshold_from_link(st.query_params["threshold"])
        if asked is not None:
            st.session_state["threshold"] = asked
        else:
            st.warning(escape_markdown(f"The link's threshold {st.query_params['threshold'][:40]!r} is not a "
                                       f"number in [0, 1]; opening at the validation threshold {val_threshold:.3f}."))

with st.expander("Operating points chosen on validation", expanded=True):
    c1, c2, c3 = st.columns([2, 1, 1])
    rule = c1.selectbox("Preset", list(PRESETS), key="preset_rule")
    preset = PRESETS[rule]
    target = None
    if preset.target:  # one box per rule, so each keeps its own sensible default
        target = c2.number_input(preset.target, preset.low, preset.high, preset.default, preset.step,
                                 key=f"preset_x_{rule}", help=preset.help or None)
    if c3.button("Apply to the slider", key="apply_preset"):
        picked, st.session_state["op_note"] = apply_preset(val.y_binary, val.p_positive, rule, target,
                                                           st.session_state["threshold"])
        if picked is not None:
            st.session_state["threshold"] = round(picked, 3)
    if "op_note" in st.session_state:
        st.caption(escape_markdown(st.session_state["op_note"]))


@st.fragment
def panel() -> None:
    t = st.slider("Threshold on P(pneumonia)", 0.0, 1.0, step=0.001, format="%.3f", key="threshold")
    st.query_params["threshold"] = f"{t:.3f}"
    m = sweep.at(t)
    left, right = st.columns([1, 1])
    with left:
        points = show_figure(confusion_figure([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], ["NORMAL", "PNEUMONIA"],
                                              clickable=True), key="cm_chart", clickable=True)
        clicked = clicked_cell(points)
        if clicked != st.session_state.get("cell_clicked"):  # a new click chooses the cell; the chooser stays
            st.session_state["cell_clicked"] = clicked
            if clicked:
                st.session_state["cell"] = clicked
        st.markdown(f"**TP** {m['tp']} · **FP** {m['fp']} · **TN** {m['tn']} · **FN** {m['fn']}")
        cell = st.segmented_control("Show the images of a cell (or click it in the matrix)", CELLS, key="cell",
                                    format_func=lambda c: f"{c} · {CELL_NAMES[c]} ({m[c.lower()]})",
                                    help="Choose a cell of the confusion matrix to list its images below.")
    with right:
        ci = None
        if st.toggle("Bootstrap 95 % CIs (1000 resamples of test patients)", key="ci_toggle"):
            ci = bootstrap_binary(y, p, t, n_boot=1000, seed=0, groups=patient_groups(test.frame["image_id"]),
                                  metrics=tuple(k for _, k in TABLE))
        prev = st.slider("Prevalence for PPV / NPV", 0.01, 0.99, float(round(y.mean(), 2)), 0.01, key="prevalence",
                         help="PPV and NPV depend on how common pneumonia is where the model is used; the test "
                              f"set's prevalence is {y.mean():.2f}.")
        shown = at_prevalence(m, prev)  # the PR chart's dot sits at its PPV too
        st.table(pd.DataFrame(operating_rows(shown, ci)), hide_index=True)  # static HTML: redrawn faster
        if rec := subtype_recall(y, p, t, c.subtypes):
            st.caption("Recall within pneumonia: " + ", ".join(f"{g} {v:.3f}" for g, v in rec.items()))
    a, b = st.columns(2)
    with a:
        show_figure(roc_figure(c.roc["fpr"], c.roc["tpr"], c.auroc, (1 - m["specificity"], m["sensitivity"])),
                    key="roc_chart")
    with b:
        show_figure(pr_figure(c.pr["recall"], c.pr["precision"], c.average_precision, pr_point(shown),
                              curve_at_other_prevalence(c, prev, float(y.mean()))), key="pr_chart")
    if cell:
        rows = cell_images(test.frame["image_id"], y, p, t, cell)
        st.markdown(f"**{cell} · {CELL_NAMES[cell]}**: {len(rows)} images")
        st.dataframe(rows, hide_index=True, key="cell_table")
        paths = [image_path(i) for i in rows["image_id"].head(12)]
        if any(paths):
            st.image([str(x) for x in paths if x], width=150,
                     caption=[escape_markdown(f"{i.split('/')[-1]} · {q:.2f}") for i, q, x in
                              zip(rows["image_id"], rows["p_pneumonia"], paths) if x])
        else:
            st.caption(DATA_HINT)


panel()
