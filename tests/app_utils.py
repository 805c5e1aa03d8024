"""The app through streamlit.testing.v1.AppTest, as the page tests drive it."""
from __future__ import annotations

import io
from pathlib import Path

from PIL import Image
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent


def run_app(page: str | None = None, timeout: int = 120, query: dict | None = None, **state) -> AppTest:
    """``app.py`` run once with these query parameters and session state, then switched to ``page``."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in (query or {}).items():
        at.query_params[k] = v
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    return at


def images_in(node) -> list:
    """Every st.image element under ``node`` (an AppTest, its main block, a column or a tab)."""
    node = getattr(node, "main", node)
    if getattr(node, "type", None) == "image":
        return [node]
    return [img for child in getattr(node, "children", {}).values() for img in images_in(child)]


def png_bytes(img: Image.Image) -> bytes:
    """``img`` as the bytes of a PNG file, as an upload carries them."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()
