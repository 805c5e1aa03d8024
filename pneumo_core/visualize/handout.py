"""A printable one-page handout (A4 portrait, PNG) of one view: a title, its conclusion sentences, a row of
numbers and up to six images with captions. Matplotlib's object API (no pyplot: no global state, safe in a
server's threads); what goes on the sheet is decided by the caller, nothing is computed here."""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass, field

import numpy as np

#: the sheet in pixels: A4 at 150 dots per inch
DPI = 150
PAGE = (1240, 1754)
MAX_PANELS = 6
FOOTER = "Pneumo Explorer · research and teaching only, not for clinical use"


@dataclass(frozen=True)
class Panel:
    """One picture: a grayscale array in [0, 1] or an RGB uint8 array, and its caption."""
    image: np.ndarray
    caption: str = ""


def panel(picture: np.ndarray, caption: str = "", side: int = 600) -> Panel:
    """A :class:`Panel` of ``picture`` at most ``side`` px on its long side (area-averaged): a page prints ~560
    px a picture, and a session keeping a 2048-px copy for a button that may never be pressed would waste ~50 MB."""
    import cv2

    h, w = picture.shape[:2]
    if max(h, w) > side:
        f = side / max(h, w)
        picture = cv2.resize(picture, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)
    return Panel(picture, caption)


@dataclass(frozen=True)
class Sheet:
    """What one handout shows, top to bottom."""
    title: str
    sentences: tuple[str, ...] = ()
    numbers: tuple[tuple[str, str], ...] = ()  # (label, value), e.g. ("Sick children sent home", "12")
    panels: tuple[Panel, ...] = field(default=())


def panel_boxes(n: int, top: float, bottom: float = 0.06) -> list[tuple[float, float, float, float]]:
    """Where ``n`` pictures go (figure fractions ``left, bottom, width, height``): two to a row (one row of
    one for a single picture), square, as large as the space between ``top`` and ``bottom`` allows, from the top
    down, with room for a caption under each."""
    if n <= 0:
        return []
    cols = 1 if n == 1 else 2
    rows = -(-n // cols)
    w_px, h_px = PAGE
    room = 0.84  # of a row's height, the picture; the rest its caption
    side_px = min((top - bottom) * h_px / rows * room, (w_px - 120 - 40 * (cols - 1)) / cols)
    w, h, row = side_px / w_px, side_px / h_px, side_px / room / h_px
    gap = (1 - cols * w) / (cols + 1)
    return [(gap + (i % cols) * (w + gap), top - (i // cols) * row - h, w, h) for i in range(n)]


def handout_png(sheet: Sheet) -> bytes:
    """The sheet as PNG bytes, :data:`PAGE` pixels."""
    from matplotlib.figure import Figure

    if len(sheet.panels) > MAX_PANELS:
        raise ValueError(f"a handout holds at most {MAX_PANELS} pictures, got {len(sheet.panels)}")
    fig = Figure(figsize=(PAGE[0] / DPI, PAGE[1] / DPI), dpi=DPI, facecolor="white")

    def text(x: float, y: float, s: str, **kw) -> None:  # as written: a file name's "$" is no formula
        fig.text(x, y, s, parse_math=False, **kw)

    line = 26 / PAGE[1]  # one 12-point line, in figure height
    y = 0.96
    text(0.5, y, sheet.title[:90], ha="center", va="top", fontsize=19, weight="bold")
    y -= 2.5 * line
    for sentence in sheet.sentences:
        lines = textwrap.wrap(sentence, 76) or [""]
        text(0.06, y, "\n".join(lines), ha="left", va="top", fontsize=12, linespacing=1.35)
        y -= (len(lines) * 1.35 + 0.8) * line
    if sheet.numbers:
        width = 0.88 / len(sheet.numbers)
        for k, (label, value) in enumerate(sheet.numbers):
            x = 0.06 + (k + 0.5) * width
            text(x, y, value, ha="center", va="top", fontsize=24, weight="bold")
            text(x, y - 2.2 * line, "\n".join(textwrap.wrap(label, max(12, int(90 * width)))), ha="center",
                     va="top", fontsize=10, color="#333333")
        y -= 5 * line
    y -= line
    for box, panel in zip(panel_boxes(len(sheet.panels), y), sheet.panels):
        ax = fig.add_axes(box)
        img = np.asarray(panel.image)
        ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0 if img.ndim == 2 else None,
                  vmax=1 if img.ndim == 2 else None, interpolation="lanczos")
        ax.set_axis_off()
        ax.text(0.5, -0.02, "\n".join(textwrap.wrap(panel.caption, 60)), transform=ax.transAxes, ha="center",
                parse_math=False,
                va="top", fontsize=10)
    text(0.5, 0.02, FOOTER, ha="center", va="bottom", fontsize=8, color="#666666")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    return buf.getvalue()
