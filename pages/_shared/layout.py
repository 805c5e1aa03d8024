"""Navigation, the page header and display settings every page uses."""
from __future__ import annotations

from typing import TYPE_CHECKING

import streamlit as st

from pneumo_core import NOT_FOR_CLINICAL_USE

if TYPE_CHECKING:
    import plotly.graph_objects as go

PLOT_CONFIG = {"displayModeBar": False}  # no plotly toolbar: it covers titles on small screens
#: below ~1000 px, columns stack so charts and the confusion matrix keep their width; above, the main column's
#: side margins are 2rem instead of 5rem, so that at 1440 px an X-ray and its heatmap side by side are each ~525
#: px wide next to the open sidebar (477 before)
NARROW_CSS = """<style>
@media (max-width: 1000px) {
  div[data-testid="stHorizontalBlock"] { flex-wrap: wrap; }
  div[data-testid="stHorizontalBlock"] > div[data-testid="stColumn"] { min-width: 100%; }
}
@media (min-width: 1001px) {
  div[data-testid="stMainBlockContainer"] { padding-left: 2rem; padding-right: 2rem; }
}
</style>"""

#: class mode (the Lesson page, projected): large type, the main column using the screen's width; on a wide screen
#: the sidebar, when opened, lies over the page instead of narrowing it, so the two images side by side stay
#: ~675 px wide at 1440 px whatever the sidebar's state (525 px next to an open sidebar before)
CLASS_CSS = """<style>
div[data-testid="stMainBlockContainer"] { max-width: none; padding-left: 2rem; padding-right: 2rem; }
div[data-testid="stMainBlockContainer"] div[data-testid="stMarkdownContainer"] p,
div[data-testid="stMainBlockContainer"] div[data-testid="stMarkdownContainer"] li {
  font-size: 1.45rem; line-height: 1.5; }
div[data-testid="stMainBlockContainer"] button p { font-size: 1.3rem; }
div[data-testid="stMainBlockContainer"] div[data-testid="stCaptionContainer"] { font-size: 1.1rem; }
div[data-testid="stMainBlockContainer"] div[data-testid="stMetricValue"],
div[data-testid="stMainBlockContainer"] div[data-testid="stMetricValue"] div[data-testid="stMarkdownContainer"] p {
  font-size: 3rem; }
@media (min-width: 1001px) {  /* the sidebar, when opened, lies over the page: the images keep their width */
  section[data-testid="stSidebar"] { position: absolute !important; top: 0; left: 0; height: 100% !important;
    z-index: 999990; }
  section[data-testid="stSidebar"][data-collapsed="false"] { box-shadow: 0 0 1.5rem rgba(0, 0, 0, 0.3); }
}
@media (max-width: 700px) {  /* a phone: large type, not a projector's */
  div[data-testid="stMainBlockContainer"] div[data-testid="stMarkdownContainer"] p,
  div[data-testid="stMainBlockContainer"] div[data-testid="stMarkdownContainer"] li { font-size: 1.1rem; }
}
</style>"""

PAGES = [  # (file, title, icon, url path); the root URL goes on to the first
    ("pages/predict.py", "Predict", ":material/search:", "predict"),
    ("pages/lesson.py", "Lesson", ":material/school:", "lesson"),
    ("pages/compare.py", "Compare heatmaps", ":material/compare:", "compare"),
    ("pages/thresholds.py", "Thresholds", ":material/tune:", "thresholds"),
    ("pages/calibration.py", "Calibration", ":material/straighten:", "calibration"),
    ("pages/shift.py", "Validation vs test", ":material/compare_arrows:", "shift"),
    ("pages/errors.py", "Errors", ":material/error:", "errors"),
    ("pages/models.py", "Models", ":material/table_chart:", "models"),
    ("pages/audit.py", "Where models look", ":material/visibility:", "audit"),
]


def _landing() -> None:
    """The root URL, a hidden default page that goes straight on to the first page (query kept): the
    default page is served at ``/`` only, so without this ``/predict`` would be "Page not found"."""
    st.switch_page(PAGES[0][0], query_params=st.query_params.to_dict())


def app_pages() -> list:
    """The hidden landing (the default, at ``/``), then every page of :data:`PAGES` at its own URL."""
    landing = st.Page(_landing, title="Pneumo Explorer", url_path="start", default=True, visibility="hidden")
    return [landing] + [st.Page(f, title=t, icon=i, url_path=u) for f, t, i, u in PAGES]


def navigation(position: str = "sidebar"):
    """The app's pages through the public ``st.navigation``; each page, Predict too, has its own URL."""
    return st.navigation(app_pages(), position=position)


def start_page(title: str, sidebar: str = "auto") -> None:
    """Every page begins here: its sidebar's initial state (``st.set_page_config``), its title and, once,
    quietly, the "not for clinical use" line.

    The sidebar's state is set here, once a run, not in ``app.py`` as well: the browser keeps the last state it
    was sent, and a run that sent ``auto`` (app.py) then ``collapsed`` (the Lesson) sometimes left the sidebar
    open, when the browser read the second before it had applied the first.

    With a ``pages/`` folder beside ``app.py``, a fresh server starts in Streamlit's legacy multipage
    mode, so a deep link (``/thresholds?threshold=0.3``) runs the page file alone, without ``app.py``'s
    sidebar. Calling ``st.navigation`` (public API) switches the server to navigation mode for good;
    the rerun then goes through ``app.py`` to the same page, query parameters kept.
    """
    if not st.session_state.get("via_app"):
        navigation(position="hidden")
        st.rerun()
    st.set_page_config(initial_sidebar_state=sidebar)
    st.title(title)
    st.caption(NOT_FOR_CLINICAL_USE)


#: a page of large images: the main column's side padding narrowed (only while that page is shown)
WIDE_CSS = """<style>
div[data-testid="stMainBlockContainer"] { max-width: none; padding-left: 2rem; padding-right: 2rem; }
</style>"""


def wide_page() -> None:
    """More of the screen's width for a page's images (:data:`WIDE_CSS`)."""
    st.html(WIDE_CSS)


def class_mode() -> None:
    """A page for a projector: :data:`CLASS_CSS` (only while that page is shown)."""
    st.html(CLASS_CSS)


def show_figure(fig: go.Figure, key: str, clickable: bool = False) -> list[dict]:
    """A plotly figure as every page shows it: without the toolbar; in a light theme, in pneumo_core's
    template (``theme=None``). Streamlit's theme is re-applied in the browser at every redraw (on the
    Thresholds slider's three charts ~0.2 s a step in headless Chromium on this 2-core machine), so it is
    used only where its dark variant is needed. ``clickable``: a click on a point reruns the page (the
    fragment it is in); returns the clicked points (empty otherwise)."""
    dark = getattr(st.context.theme, "type", None) == "dark"
    select = dict(on_select="rerun", selection_mode="points") if clickable else {}
    event = st.plotly_chart(fig, key=key, config=PLOT_CONFIG, theme="streamlit" if dark else None, **select)
    return list(event.selection.points) if clickable and event else []


def state(key: str, default):
    """``st.session_state[key]``, set to ``default`` the first time."""
    if key not in st.session_state:
        st.session_state[key] = default
    return st.session_state[key]
