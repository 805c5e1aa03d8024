"""Calibration: reliability diagram with counts, ECE/MCE/Brier/NLL, temperature scaling fit on validation."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import val_and_test
from pneumo_core.evaluation.calibration import (
    BIN_HELP,
    EXPLANATIONS,
    binary_reliability,
    brier,
    class_reliability,
    nll,
    temperature_scale_probs,
    top_label_reliability,
)
from pneumo_core.files import escape_html
from pneumo_core.visualize.charts import reliability_figure

start_page("Calibration")
opt, val, test = val_and_test(("binary", "three_class"), key="cal_model")
c1, c2, c3 = st.columns(3)
n_bins = c1.slider("Number of bins", 5, 30, 15, key="bins", help=BIN_HELP["count"])
strategy = c2.radio("Bin edges", ["uniform", "quantile"], horizontal=True, key="strategy", help=BIN_HELP["strategy"],
                    format_func=lambda s: {"uniform": "equal width", "quantile": "equal mass"}[s])
scale = c3.toggle("Temperature scaling (fit on validation)", key="temp")

t, scaled = temperature_scale_probs(val.probs, val.y_true, test.probs) if scale else (1.0, None)


def rel_of(probs):
    if test.is_binary:
        return binary_reliability(test.y_true, probs[:, 1], n_bins, strategy)
    return top_label_reliability(test.y_true, probs, n_bins, strategy)


before = rel_of(test.probs)
after = rel_of(scaled) if scaled is not None else None
what = "P(pneumonia)" if test.is_binary else "top-label confidence"
show_figure(reliability_figure(before, f"Reliability on test ({what})", after), key="rel_chart")


def scores(probs):
    p = probs[:, 1] if test.is_binary else probs
    r = rel_of(probs)
    return {"ECE": r.ece, "MCE": r.mce, "Brier": brier(test.y_true, p), "NLL": nll(test.y_true, p)}


rows = [{"set": "as trained", **scores(test.probs)}]
if scaled is not None:
    rows.append({"set": f"temperature T = {t:.3f}", **scores(scaled)})
st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, key="cal_table",
             column_config={k: st.column_config.NumberColumn(k, help=v) for k, v in EXPLANATIONS.items()})
for name, sentence in EXPLANATIONS.items():
    st.caption(f"**{name}** — {sentence}")

if not test.is_binary:
    st.subheader("Per class (one vs rest)")
    cls = st.selectbox("Class", list(test.classes), key="cal_class")
    k = list(test.classes).index(cls)
    r = class_reliability(test.y_true, test.probs, k, n_bins, strategy)
    r2 = class_reliability(test.y_true, scaled, k, n_bins, strategy) if scaled is not None else None
    show_figure(reliability_figure(r, escape_html(f"P({cls}) against being {cls}"), r2), key="rel_class_chart")
