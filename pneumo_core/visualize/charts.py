"""Plotly figures for the app (layout only; the numbers come from metrics/calibration)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
from plotly.subplots import make_subplots

from pneumo_core.evaluation.calibration import Reliability


#: every figure's template, set once as plotly's default: a figure picks it up for ~3 ms, where
#: ``update_layout(template=...)`` validated it again for ~45 ms a figure (3 per Thresholds slider step)
pio.templates.default = "plotly_white"


def _layout(fig: go.Figure, title: str, height: int = 360) -> go.Figure:
    fig.update_layout(title=title, height=height, margin=dict(l=40, r=10, t=40, b=40))
    return fig


def _curve_figure(x: np.ndarray, y: np.ndarray, name: str, title: str, xtitle: str, ytitle: str,
                  point: tuple[float, float] | None, chance: bool = False) -> go.Figure:
    fig = go.Figure(go.Scatter(x=x, y=y, mode="lines", name=name))
    if chance:
        fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"), name="chance"))
    if point is not None:
        fig.add_trace(go.Scatter(x=[point[0]], y=[point[1]], mode="markers", marker=dict(size=12, color="red"),
                                 name="current threshold"))
    fig.update_xaxes(title=xtitle, range=[0, 1])
    fig.update_yaxes(title=ytitle, range=[0, 1.02])
    return _layout(fig, title)


def roc_figure(fpr: np.ndarray, tpr: np.ndarray, auc: float, point: tuple[float, float] | None = None) -> go.Figure:
    return _curve_figure(fpr, tpr, f"ROC (AUROC {auc:.3f})", "ROC curve", "1 - specificity", "sensitivity", point,
                         chance=True)


def pr_figure(recall: np.ndarray, precision: np.ndarray, ap: float, point: tuple[float, float] | None = None,
              at_prevalence: tuple[np.ndarray, np.ndarray, float] | None = None) -> go.Figure:
    """The PR curve; ``at_prevalence`` = (recall, precision, prevalence) adds the curve at another prevalence
    (``thresholds.pr_curve_at_prevalence``), the one ``point`` should then sit on."""
    fig = _curve_figure(recall, precision, f"PR (AP {ap:.3f})", "Precision-recall curve", "recall (sensitivity)",
                        "precision (PPV)", point)
    if at_prevalence is not None:
        r, q, prevalence = at_prevalence
        fig.add_trace(go.Scatter(x=r, y=q, mode="lines", line=dict(dash="dash"),
                                 name=f"at prevalence {prevalence:.2f}"))
    return fig


def confusion_figure(cm: Sequence[Sequence[int]], labels: Sequence[str], title: str = "Confusion matrix",
                     clickable: bool = False) -> go.Figure:
    """Rows true class, columns predicted. ``clickable``: an invisible marker on each cell, so that a click
    selects the cell (plotly selects points of scatter traces only, not heatmap cells)."""
    cm = np.asarray(cm)
    x, y = [f"pred {c}" for c in labels], [f"true {c}" for c in labels]
    fig = go.Figure(go.Heatmap(z=cm, x=x, y=y, text=cm, texttemplate="%{text}", colorscale="Blues", showscale=False))
    if clickable:
        fig.add_trace(go.Scatter(x=[c for _ in y for c in x], y=[r for r in y for _ in x], mode="markers",
                                 marker=dict(size=90, symbol="square", opacity=0), showlegend=False,
                                 hovertemplate="%{y} · %{x}: click to list its images<extra></extra>",
                                 name="cells"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title, 320)


def reliability_figure(rel: Reliability, title: str = "Reliability diagram", other: Reliability | None = None,
                       other_name: str = "after temperature scaling") -> go.Figure:
    fig = make_subplots(rows=2, cols=1, row_heights=[0.72, 0.28], shared_xaxes=True, vertical_spacing=0.06)
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line=dict(dash="dot", color="gray"),
                             name="perfect calibration"), row=1, col=1)
    fig.add_trace(go.Scatter(x=rel.confidence, y=rel.frequency, mode="lines+markers",
                             name=f"model (ECE {rel.ece:.3f})"), row=1, col=1)
    if other is not None:
        fig.add_trace(go.Scatter(x=other.confidence, y=other.frequency, mode="lines+markers",
                                 name=f"{other_name} (ECE {other.ece:.3f})"), row=1, col=1)
    fig.add_trace(go.Bar(x=(rel.lower + rel.upper) / 2, y=rel.count, width=rel.upper - rel.lower, name="count",
                         marker_color="lightsteelblue"), row=2, col=1)
    fig.update_xaxes(title="predicted probability", range=[0, 1], row=2, col=1)
    fig.update_yaxes(title="observed frequency", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title="images", row=2, col=1)
    return _layout(fig, title, 480)


def learning_curve_figure(histories: dict[str, list[dict]], title: str) -> go.Figure:
    """Loss (train solid, validation dashed) and validation AUROC per fine-tuning epoch, one colour per
    run (e.g. the seeds of one architecture overlaid)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "validation AUROC"), horizontal_spacing=0.12)
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]
    top = 1
    for k, (name, history) in enumerate(histories.items()):
        ft = [h for h in history if h.get("phase") == "finetune"]
        if not ft:
            continue
        c = palette[k % len(palette)]
        ep = [int(h["epoch"]) for h in ft]
        top = max(top, max(ep))
        fig.add_trace(go.Scatter(x=ep, y=[h["train_loss"] for h in ft], name=f"{name} train", line=dict(color=c),
                                 legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[h["val_loss"] for h in ft], name=f"{name} validation",
                                 line=dict(color=c, dash="dash"), legendgroup=name), row=1, col=1)
        fig.add_trace(go.Scatter(x=ep, y=[h["val_auroc"] for h in ft], name=f"{name} val AUROC", line=dict(color=c),
                                 legendgroup=name, showlegend=False), row=1, col=2)
    for col in (1, 2):
        fig.update_xaxes(title="fine-tuning epoch", tickmode="linear", dtick=1, range=[0.8, top + 0.2], row=1, col=col)
    fig.update_yaxes(title="loss", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title="AUROC", range=[0.5, 1.005], row=1, col=2)
    fig = _layout(fig, title, 340)
    fig.update_layout(legend=dict(orientation="h", y=-0.25), margin=dict(l=50, r=10, t=60, b=40))
    return fig


_PLOTLY_COLORSCALE = {"jet": "Jet", "inferno": "Inferno", "viridis": "Viridis", "turbo": "Turbo", "hot": "Hot"}


def colorbar_figure(colormap: str = "jet", low: str = "0 · low heat (no contribution)",
                    high: str = "1 · high heat (strongest contribution)",
                    title: str = "Heat: how much a region raised the score of the explained class",
                    height: int = 90) -> go.Figure:
    """A horizontal colour bar for heatmap overlays, with a title and both ends labelled inside the figure
    (anchored left and right, so neither is cut off at the edges)."""
    fig = go.Figure(go.Heatmap(z=[np.linspace(0, 1, 256)], colorscale=_PLOTLY_COLORSCALE.get(colormap, "Jet"),
                               showscale=False, hoverinfo="skip"))
    for x, text, anchor in ((0, low, "left"), (1, high, "right")):
        fig.add_annotation(x=x, y=0, xref="paper", yref="paper", yanchor="top", xanchor=anchor, text=text,
                           showarrow=False)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=25, b=30), title=dict(text=title, font=dict(size=13)))
    return fig


def lung_focus_figure(shares: dict[str, np.ndarray], even: float | None = None,
                      title: str = "Lung focus: share of each heatmap inside the lung mask") -> go.Figure:
    """Overlaid histograms of per-image lung shares (``pneumo_core.explain.audit``), one per model; a dashed
    line at ``even``, the share of a map spread evenly over the image."""
    fig = go.Figure()
    for name, v in shares.items():
        fig.add_trace(go.Histogram(x=np.asarray(v, float), name=name, opacity=0.6,
                                   xbins=dict(start=0, end=1, size=0.05)))
    if even is not None and np.isfinite(even):
        fig.add_vline(x=even, line_dash="dash", line_color="gray", annotation_text="evenly spread")
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title="share of positive heatmap mass inside the lungs", range=[0, 1])
    fig.update_yaxes(title="images")
    return _layout(fig, title)


def split_histogram_figure(histograms: dict[str, tuple[np.ndarray, np.ndarray]], threshold: float | None = None,
                           title: str = "P(pneumonia) of NORMAL images, per split") -> go.Figure:
    """Overlaid histograms, one per split, each as ``(edges, share)`` (``shift.SplitFigures.histogram``: each
    bin's share of that split's NORMAL images, so splits of different sizes compare); a dashed line at
    ``threshold``."""
    fig = go.Figure()
    for name, (edges, share) in histograms.items():
        edges, share = np.asarray(edges, float), np.asarray(share, float)
        fig.add_trace(go.Bar(x=(edges[:-1] + edges[1:]) / 2, y=100 * share, width=np.diff(edges), name=name,
                             opacity=0.6))
    if threshold is not None and np.isfinite(threshold):
        fig.add_vline(x=threshold, line_dash="dash", line_color="gray",
                      annotation_text=f"validation threshold {threshold:.3f}")
    fig.update_layout(barmode="overlay", legend=dict(orientation="h", y=-0.2))
    fig.update_xaxes(title="P(pneumonia)", range=[0, 1])
    fig.update_yaxes(title="% of the split's NORMAL images", rangemode="tozero")
    return _layout(fig, title)
