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
    class_reliability,
    confidence_name,
    reliability_of,
    score_rows,
    temperature_on_splits,
    temperature_sentence,
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


before = reliability_of(test.y_true, test.probs, n_bins, strategy)
after = reliability_of(test.y_true, scaled, n_bins, strategy) if scaled is not None else None
what = confidence_name(len(test.classes))
show_figure(reliability_figure(before, f"Reliability on test ({what})", after), key="rel_chart")

rows = score_rows(test.y_true, test.probs, scaled, t, n_bins, strategy)
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
show_figure(reliability_figure(reliability_of(val.y_true, val.probs, n_bins, strategy),
                               f"Reliability on validation ({what})",
                               reliability_of(val.y_true, temp.val_scaled, n_bins, strategy)), key="rel_val_chart")

if not test.is_binary:
    st.subheader("Per class (one vs rest)")
    cls = st.selectbox("Class", list(test.classes), key="cal_class")
    k = list(test.classes).index(cls)
    r = class_reliability(test.y_true, test.probs, k, n_bins, strategy)
    r2 = class_reliability(test.y_true, scaled, k, n_bins, strategy) if scaled is not None else None
    show_figure(reliability_figure(r, escape_html(f"P({cls}) against being {cls}"), r2), key="rel_class_chart")
