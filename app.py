"""Pneumo Explorer: `streamlit run app.py`. Research and teaching only, not for clinical use."""
from __future__ import annotations

import streamlit as st

from pages._shared.images import data_dir, default_data_dir
from pages._shared.layout import NARROW_CSS, navigation, state
from pneumo_core.serving.memory import give_back_freed_memory, limit_heaps, page_run, passive_threads
from pages._shared.models import SOURCES, current_source
from pages._shared.warmup import start as start_warm_up
from pneumo_core.files import escape_markdown
from pneumo_core.models.sources import DEFAULT_REPO

passive_threads()  # before torch loads: its idle threads sleep, not spin (an upload cost 3x the CPU)
# The imports, the bundled samples' verdicts and heatmaps, in the background, once per server: at launch when
# the server's script health check runs this file (`python -m pneumo_core serve` asks it), else on the first visit
start_warm_up()

st.set_page_config(page_title="Pneumo Explorer", page_icon=":material/pulmonology:", layout="wide")  # sidebar: by page
st.html(NARROW_CSS)
st.session_state["via_app"] = True  # see pages/_shared/layout.start_page

limit_heaps()
page = navigation()

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
    st.caption(escape_markdown(status))
    state("data_dir", default_data_dir())
    st.text_input("Dataset folder (optional)", key="data_dir", placeholder="…/chest_xray",
                  help="A Kermany layout folder. Galleries need it; everything else works without.")
    if st.session_state["data_dir"] and data_dir() is None:
        st.error(escape_markdown(f"Dataset folder not found: {st.session_state['data_dir']}"))

try:
    with page_run():  # never alongside one of the warm-up thread's imports
        page.run()
finally:
    give_back_freed_memory()  # a large upload's decoding buffers, returned to the system
