"""Charts as pictures (RGB arrays, matplotlib's object API: no pyplot, safe in a server's threads), for a page
that is projected and printed rather than explored: a picture costs the browser almost nothing to draw, where a
plotly chart took ~0.4 s of the page's CPU at every visit of the Lesson's step 4 (headless Chromium, this 2-core
machine), and the same picture goes on the printed handout. Layout only: the numbers come from ``evaluation``."""
from __future__ import annotations

import numpy as np

from pneumo_core.evaluation.calibration import Reliability


def reliability_picture(rel: Reliability, title: str = "Reliability diagram",
                        x_title: str = "predicted probability", y_title: str = "observed frequency",
                        model_name: str = "model", ideal_name: str = "perfect calibration", count_title: str = "images",
                        size: tuple[int, int] = (1200, 900), dpi: int = 150) -> np.ndarray:
    """The reliability diagram of ``rel`` (as ``charts.reliability_figure``: each bin's mean confidence against
    its observed frequency over the diagonal, the bins' counts below) as an RGB uint8 array of ``size`` (width,
    height) pixels, in large type; every label is the caller's (the lesson's plain words)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [0.72, 0.28], "hspace": 0.08})
    top.plot([0, 1], [0, 1], ls=":", color="gray", lw=2, label=ideal_name)
    top.plot(rel.confidence, rel.frequency, "o-", color="#1f77b4", lw=2.5, ms=7, label=model_name)
    top.set(xlim=(0, 1), ylim=(0, 1.02))
    top.set_ylabel(y_title, fontsize=13)
    top.set_title(title, fontsize=14, loc="left")
    top.legend(loc="upper left", fontsize=12, frameon=False)
    bottom.bar((rel.lower + rel.upper) / 2, rel.count, width=rel.upper - rel.lower, color="lightsteelblue",
               edgecolor="white")
    bottom.set_xlabel(x_title, fontsize=13)
    bottom.set_ylabel(count_title, fontsize=13)
    for ax in (top, bottom):
        ax.tick_params(labelsize=11)
        ax.grid(alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    for t in (top.title, top.xaxis.label, top.yaxis.label, bottom.xaxis.label, bottom.yaxis.label):
        t.set_parse_math(False)
    fig.subplots_adjust(left=0.1, right=0.97, top=0.93, bottom=0.1)
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
