"""Validation vs test: one model's figures on both splits at its validation threshold, with intervals; where
NORMAL images fall on each; both reliability diagrams; what the numbers show, in words."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._shared.layout import show_figure, start_page
from pages._shared.predictions import predictions_root, val_and_test
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation.adaptation import ADABN_ROOT, CAVEAT, adabn_for, adaptation_rows
from pneumo_core.evaluation.shift import SplitFigures, sets_line, shift_figures, shift_paragraph, shift_rows
from pneumo_core.evaluation.predictions import Predictions
from pneumo_core.files import escape_markdown
from pneumo_core.visualize.charts import reliability_figure, split_histogram_figure

N_BOOT = 1000

start_page("Validation vs test")
opt, val, test = val_and_test(("binary", "three_class"), key="shift_model")
st.caption("The same model on the validation split (where its threshold was chosen) and on the test split, "
           f"at that threshold; 95 % intervals from {N_BOOT} resamples of patients.")
if not test.is_binary:
    st.caption("Binary view of a three-class model: P(pneumonia) = P(bacteria) + P(virus).")


@st.cache_data(show_spinner="Bootstrapping both splits…", max_entries=32)
def figures_of(key: tuple, _val: Predictions, _test: Predictions, probs: tuple) -> tuple[SplitFigures, SplitFigures]:
    """Keyed on the choice and both sets' probabilities (hashed by Streamlit: a computed set can change)."""
    return shift_figures(_val, _test, n_boot=N_BOOT, seed=0)


try:
    v, t = figures_of((str(predictions_root()), *opt), val, test, (val.probs, test.probs))
except PneumoError as exc:  # e.g. a validation set of one class: no threshold is chosen there
    st.error(escape_markdown(exc))
    st.stop()

st.info(shift_paragraph(v, t))  # pneumo_core's own words and numbers, nothing from outside
st.markdown(sets_line(v, t))
st.table(pd.DataFrame(shift_rows(v, t)).round(3), hide_index=True)

show_figure(split_histogram_figure({s.split: s.histogram() for s in (v, t)}, v.threshold), key="shift_hist")
a, b = st.columns(2)
with a:
    show_figure(reliability_figure(v.reliability, "Reliability on validation (P(pneumonia))"), key="shift_rel_val")
with b:
    show_figure(reliability_figure(t.reliability, "Reliability on test (P(pneumonia))"), key="shift_rel_test")


@st.cache_data(show_spinner="Bootstrapping the adaptation experiment…", max_entries=8)
def adaptation_of(root: str, task: str, arch: str, seed: int | None):
    return adabn_for(root, ADABN_ROOT, task, arch, seed, n_boot=N_BOOT)


ada = adaptation_of(str(predictions_root()), opt.task, opt.arch, getattr(opt, "seed", None))
if ada is not None:  # the bundled binary models, where experiments/adaptation ran AdaBN on the test images
    st.subheader("Adapt to these images, no labels (AdaBN)")
    st.caption(CAVEAT)
    st.table(pd.DataFrame(adaptation_rows(ada)), hide_index=True)
