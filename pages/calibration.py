"""Calibration: reliability diagram with counts, ECE/MCE/Brier/NLL, temperature scaling fit on validation and
shown on validation and on test (saying when it makes test worse)."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import val_and_test
from pneumo_core.evaluation.calibration import (
    BIN_HELP,
    EXPLANATIONS,
    binary_reliability,
    calibration_scores,
    class_reliability,
    temperature_on_splits,
    temperature_sentence,
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

temp = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs, n_bins, strategy)  # fit on validation
t, scaled = (temp.temperature, temp.test_scaled) if scale else (1.0, None)


def rel_of(probs, y=test.y_true):
    if test.is_binary:
        return binary_reliability(y, probs[:, 1], n_bins, strategy)
    return top_label_reliability(y, probs, n_bins, strategy)


before = rel_of(test.probs)
after = rel_of(scaled) if scaled is not None else None
what = "P(pneumonia)" if test.is_binary else "top-label confidence"
show_figure(reliability_figure(before, f"Reliability on test ({what})", after), key="rel_chart")


def scores(probs):
    return calibration_scores(test.y_true, probs, n_bins, strategy)


rows = [{"set": "as trained", **scores(test.probs)}]
if scaled is not None:
    rows.append({"set": f"temperature T = {t:.3f}", **scores(scaled)})
st.dataframe(pd.DataFrame(rows).round(4), hide_index=True, key="cal_table",
             column_config={k: st.column_config.NumberColumn(k, help=v) for k, v in EXPLANATIONS.items()})
for name, sentence in EXPLANATIONS.items():
    st.caption(f"**{name}** — {sentence}")

st.subheader("Temperature scaling on validation and on test")
st.caption(f"One temperature T = {temp.temperature:.3f}, fitted to lower validation NLL, divides the logits of both "
           "splits; the toggle above shows it on the test chart.")
(st.warning if temp.hurts_test else st.info)(temperature_sentence(temp))
st.dataframe(pd.DataFrame(temp.rows()).round(4), hide_index=True, key="temp_splits_table",
             column_config={f"{k} {w}": st.column_config.NumberColumn(f"{k} {w}", help=EXPLANATIONS[k])
                            for k in ("ECE", "NLL") for w in ("before", "after")})
show_figure(reliability_figure(rel_of(val.probs, val.y_true), f"Reliability on validation ({what})",
                               rel_of(temp.val_scaled, val.y_true)), key="rel_val_chart")

if not test.is_binary:
    st.subheader("Per class (one vs rest)")
    cls = st.selectbox("Class", list(test.classes), key="cal_class")
    k = list(test.classes).index(cls)
    r = class_reliability(test.y_true, test.probs, k, n_bins, strategy)
    r2 = class_reliability(test.y_true, scaled, k, n_bins, strategy) if scaled is not None else None
    show_figure(reliability_figure(r, escape_html(f"P({cls}) against being {cls}"), r2), key="rel_class_chart")
