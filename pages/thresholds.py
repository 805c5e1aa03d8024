"""Thresholds: slider -> live confusion matrix and rates; ROC/PR with the operating point; presets."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages._shared.images import DATA_HINT, image_path
from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import predictions_root, val_and_test
from pneumo_core.evaluation.bootstrap import bootstrap_binary
from pneumo_core.visualize.charts import confusion_figure, pr_figure, roc_figure
from pneumo_core.data.datasets import subtype_of
from pneumo_core.evaluation.metrics import average_precision, auroc, by_group, pr_curve, prevalence_adjusted, roc_curve
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.thresholds import ThresholdSweep, choose
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
def curves_of(key: tuple, y: np.ndarray, p: np.ndarray) -> dict:
    return {"roc": roc_curve(y, p), "pr": pr_curve(y, p), "auroc": auroc(y, p), "ap": average_precision(y, p),
            "subtypes": np.array([subtype_of(i) for i in test.frame["image_id"]])}


key = (str(root), *opt)
y, p = test.y_binary, test.p_positive
sweep = sweep_of(key, y, p)
curves = curves_of(key, y, p)

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
        try:
            asked = float(st.query_params["threshold"])
        except ValueError:
            asked = float("nan")
        if 0 <= asked <= 1:
            st.session_state["threshold"] = asked
        else:
            st.warning(escape_markdown(f"The link's threshold {st.query_params['threshold'][:40]!r} is not a "
                                       f"number in [0, 1]; opening at the validation threshold {val_threshold:.3f}."))

with st.expander("Operating points chosen on validation", expanded=True):
    c1, c2, c3 = st.columns([2, 1, 1])
    rule = c1.selectbox("Preset", ["Youden's J", "max F1", "sensitivity ≥", "specificity ≥", "minimum cost c·FP + FN"],
                        key="preset_rule")
    defaults = {"sensitivity ≥": 0.95, "specificity ≥": 0.90, "minimum cost c·FP + FN": 0.25}
    target = None
    if rule in defaults:  # one box per rule, so each keeps its own sensible default
        target = c2.number_input("target" if "≥" in rule else "cost ratio c", 0.0, 1.0, defaults[rule], 0.01,
                                 key=f"preset_x_{rule}")
    spec = {"Youden's J": "youden", "max F1": "max-f1", "sensitivity ≥": f"sens={target}",
            "specificity ≥": f"spec={target}", "minimum cost c·FP + FN": f"cost={target}"}[rule]
    if c3.button("Apply to the slider", key="apply_preset"):
        try:
            op = choose(val.y_binary, val.p_positive, spec, chosen_on="validation")
            at_val = ThresholdSweep(val.y_binary, val.p_positive).at(op.threshold)
            st.session_state["threshold"] = round(op.threshold, 3)
            st.session_state["op_note"] = (f"{spec} on validation → threshold {op.threshold:.3f} (validation "
                                           f"sensitivity {at_val['sensitivity']:.3f}, specificity "
                                           f"{at_val['specificity']:.3f})")
        except ValueError as exc:
            st.session_state["op_note"] = f"{spec}: {exc}"
    if "op_note" in st.session_state:
        st.caption(escape_markdown(st.session_state["op_note"]))


@st.fragment
def panel() -> None:
    t = st.slider("Threshold on P(pneumonia)", 0.0, 1.0, step=0.001, format="%.3f", key="threshold")
    st.query_params["threshold"] = f"{t:.3f}"
    m = sweep.at(t)
    left, right = st.columns([1, 1])
    with left:
        show_figure(confusion_figure([[m["tn"], m["fp"]], [m["fn"], m["tp"]]], ["NORMAL", "PNEUMONIA"]),
                    key="cm_chart")
        st.markdown(f"**TP** {m['tp']} · **FP** {m['fp']} · **TN** {m['tn']} · **FN** {m['fn']}")
    with right:
        names = [("Sensitivity", "sensitivity"), ("Specificity", "specificity"), ("PPV", "precision"),
                 ("NPV", "npv"), ("F1", "f1"), ("Accuracy", "accuracy")]
        ci = None
        if st.toggle("Bootstrap 95 % CIs (1000 resamples)", key="ci_toggle"):
            ci = bootstrap_binary(y, p, t, n_boot=1000, seed=0,
                                  metrics=("sensitivity", "specificity", "precision", "npv", "f1", "accuracy"))
        prev = st.slider("Prevalence for PPV / NPV", 0.01, 0.99, float(round(y.mean(), 2)), 0.01, key="prevalence",
                         help="PPV and NPV depend on how common pneumonia is where the model is used; the test "
                              f"set's prevalence is {y.mean():.2f}.")
        adj = prevalence_adjusted(m["sensitivity"], m["specificity"], prev)
        shown = {**m, "precision": adj["ppv"], "npv": adj["npv"]}
        rows = []
        for label, k in names:
            v = shown[k]
            if k in ("precision", "npv"):
                label = f"{label} (prevalence {prev:.2f})"
            rows.append({"metric": label, "value": None if np.isnan(v) else round(v, 4),
                         "95 % CI": f"{ci[k]['low']:.3f} – {ci[k]['high']:.3f}" if ci and k not in ("precision", "npv")
                         else ""})
        st.table(pd.DataFrame(rows), hide_index=True)  # static HTML: redrawn faster than a data grid
        groups = by_group(y, p, t, curves["subtypes"])
        rec = {g: v["sensitivity"] for g, v in groups.items() if g in ("BACTERIA", "VIRUS")}
        if rec:
            st.caption("Recall within pneumonia: " + ", ".join(f"{g} {v:.3f}" for g, v in rec.items()))
    a, b = st.columns(2)
    with a:
        show_figure(roc_figure(curves["roc"]["fpr"], curves["roc"]["tpr"], curves["auroc"],
                               (1 - m["specificity"], m["sensitivity"])), key="roc_chart")
    with b:
        show_figure(pr_figure(curves["pr"]["recall"], curves["pr"]["precision"], curves["ap"],
                              (m["sensitivity"], m["precision"] if not np.isnan(m["precision"]) else 1.0)),
                    key="pr_chart")
    cell = st.segmented_control("Show the images of a cell", ["TP", "FP", "TN", "FN"], key="cell")
    if cell:
        pred = p >= t
        mask = {"TP": pred & (y == 1), "FP": pred & (y == 0), "TN": ~pred & (y == 0), "FN": ~pred & (y == 1)}[cell]
        rows = test.frame.loc[mask, ["image_id"]].assign(p_pneumonia=p[mask]).sort_values("p_pneumonia")
        st.dataframe(rows, hide_index=True, key="cell_table")
        paths = [image_path(i) for i in rows["image_id"].head(12)]
        if any(paths):
            st.image([str(x) for x in paths if x], width=150,
                     caption=[escape_markdown(f"{i.split('/')[-1]} · {q:.2f}") for i, q, x in
                              zip(rows["image_id"], rows["p_pneumonia"], paths) if x])
        else:
            st.caption(DATA_HINT)


panel()
