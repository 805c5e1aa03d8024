"""Pneumo Explorer: `streamlit run app.py`. Research and teaching only, not for clinical use."""
from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pages._common import SOURCES, current_source, state  # noqa: E402
from pneumo_core.sources import DEFAULT_REPO  # noqa: E402

st.set_page_config(page_title="Pneumo Explorer", page_icon=":material/pulmonology:", layout="wide")
st.session_state["_via_app"] = True  # see pages/_common.start_page

PAGES = [
    st.Page("pages/predict.py", title="Predict", icon=":material/search:", url_path="predict", default=True),
    st.Page("pages/compare.py", title="Compare heatmaps", icon=":material/compare:", url_path="compare"),
    st.Page("pages/thresholds.py", title="Thresholds", icon=":material/tune:", url_path="thresholds"),
    st.Page("pages/calibration.py", title="Calibration", icon=":material/straighten:", url_path="calibration"),
    st.Page("pages/errors.py", title="Errors", icon=":material/error:", url_path="errors"),
    st.Page("pages/models.py", title="Models", icon=":material/table_chart:", url_path="models"),
]
page = st.navigation(PAGES)

with st.sidebar:
    st.markdown("### Pneumo Explorer")
    state("source_kind", SOURCES[0])
    st.radio("Models from", SOURCES, key="source_kind")
    if st.session_state["source_kind"] == SOURCES[1]:
        state("local_dir", "")
        st.text_input("Checkpoints folder (what train.py --out wrote)", key="local_dir")
    elif st.session_state["source_kind"] == SOURCES[2]:
        state("hub_repo", DEFAULT_REPO)
        st.text_input("Hub repo id", key="hub_repo")
    _, status = current_source()
    st.caption(status)
    state("data_dir", "")
    st.text_input("Dataset folder (optional)", key="data_dir", placeholder="…/chest_xray",
                  help="A Kermany layout folder. Galleries need it; everything else works without.")

page.run()
