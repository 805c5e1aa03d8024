"""Where models look: how much of each model's heatmap falls on the lungs over a set of images, and the
images where it falls least (likely shortcuts). Every number comes from pneumo_core.explain.audit."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from pages._shared.images import data_dir, sample_images
from pages._shared.layout import show_figure, start_page
from pages._shared.models import cam, current_source, focus_cached, focus_table, loaded, model_keys, predictor
from pneumo_core.data.images import load_grayscale
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.explain.audit import (BORDER, RANDOMIZATION_HELP, TOP, agreement, least_focused,
                                       summarise, to_shape, top_region)
from pneumo_core.explain.cams import METHODS, images_cost, overlay
from pneumo_core.explain.lungs import draw_contours, lung_contours, lung_mask
from pneumo_core.files import escape_markdown
from pneumo_core.visualize.charts import lung_focus_figure

start_page("Where models look")
st.markdown(
    "A model that is right for the right reasons puts its heatmap on the lungs; heat on the image border (where "
    "markers and text sit) or outside the chest suggests a shortcut. **Lung focus** is the share of a heatmap's "
    f"positive mass inside the lung fields; **border share** the share on the outer {BORDER:.0%} of each side.")
st.caption("The lung mask (green outline) is approximate: a classical segmentation of the dark air regions "
           "(scikit-image), not a clinical one. Dense consolidations are bright and may fall outside it.")

source, src_label = current_source()
keys = model_keys(source, best_only=True)
preferred = [k for k in ("binary/resnet18",) if k in keys]  # one model first: a quick first look
c1, c2, c3 = st.columns([3, 2, 2])
chosen = c1.multiselect("Models", keys, default=preferred or keys[:1], key="audit_models")
method = c2.selectbox("Method", [m for m, v in METHODS.items() if not v[2]], format_func=lambda m: METHODS[m][1],
                      key="audit_method")
sanity = c3.toggle("Sanity check (slower)", value=False, key="audit_sanity", help=RANDOMIZATION_HELP)

root = data_dir()
if root is None:
    paths = [str(p) for p in sample_images()]
    st.info(f"No dataset folder set: using the {len(paths)} bundled sample images. Set one in the sidebar for more.")
else:
    from pneumo_core.data.datasets import kermany_splits

    d1, d2 = st.columns(2)
    split = d1.selectbox("Split", ["test", "val"], key="audit_split")
    n = d2.slider("Images (a fixed random sample)", 10, 200, 40, step=10, key="audit_n")
    try:
        frame = kermany_splits(root)[split]
    except PneumoError as exc:
        st.error(escape_markdown(exc))
        st.stop()
    paths = sorted(frame.sample(min(n, len(frame)), random_state=0)["path"].astype(str))
chosen = loaded(source, src_label, chosen)  # a checkpoint that does not load is named and skipped
if not chosen or not paths:
    st.info("Choose at least one model.")
    st.stop()


@st.cache_data(show_spinner=False, max_entries=256)
def lungs_of(path: str):
    gray = load_grayscale(path)
    return gray, lung_mask(gray)


@st.cache_data(show_spinner=False, max_entries=4096)
def unreadable(path: str) -> str | None:
    """Why a dataset image cannot be read (None when it can): asked only once a table met such an image."""
    try:
        load_grayscale(path)
        return None
    except ImageLoadError as exc:
        return str(exc)


def bounded(paths: list[str]) -> None:
    """The run's expected time, from each model's measured cost (as the slow methods'); refused above the cap.
    Tables already computed (by any visitor) are not counted: they come back at once."""
    todo = [k for k in chosen if not focus_cached(source, src_label, k, method, tuple(paths), sanity)]
    if not todo:
        return
    cost = images_cost([predictor(source, src_label, k) for k in todo], method, len(paths), 2 if sanity else 1)
    if not cost.allowed:
        st.warning(escape_markdown(cost.message))
        st.stop()
    st.caption(escape_markdown(cost.message))


def focus_tables(paths: list[str]) -> dict[str, pd.DataFrame]:
    tables = {}
    for k in chosen:
        bar = st.progress(0.0, text=f"{k}: heatmaps and lung masks…")
        try:
            tables[k] = focus_table(source, src_label, k, method, tuple(paths), sanity,
                                    lambda done, total, k=k, bar=bar: bar.progress(done / total,
                                                                                   text=f"{k}: {done}/{total} images"))
        finally:
            bar.empty()
    return tables


bounded(paths)
try:
    tables = focus_tables(paths)
except ImageLoadError:  # an unreadable image in the sample: named, left out, the others audited
    bad = [p for p in paths if unreadable(p) is not None]
    st.error(escape_markdown(f"{len(bad)} image(s) could not be read and are left out: {unreadable(bad[0])}"
                             if bad else "an image could not be read"))
    paths = [p for p in paths if p not in bad]
    if not paths or not bad:
        st.stop()
    tables = focus_tables(paths)

summaries = {k: summarise(t) for k, t in tables.items()}
even = next(iter(summaries.values()))["lung_area"]
show_figure(lung_focus_figure({k: t["lung_share"] for k, t in tables.items()}, even,  # short: a phone's width
                              title="Lung focus of each heatmap"), key="audit_hist")
cols = {"lung_share": "lung focus (mean)", "lung_share_median": "lung focus (median)",
        "border_share": "border share (mean)", "lung_area": "evenly spread map"}
if sanity:
    cols["randomization_spearman"] = "randomisation Spearman (mean)"
st.dataframe(pd.DataFrame([{"model": k, **{v: s[c] for c, v in cols.items()}} for k, s in summaries.items()]).round(3),
             hide_index=True, key="audit_table")
st.caption(f"{len(paths)} images. An evenly spread map would score the 'evenly spread map' column; a model that "
           "looks at the lungs scores well above it." + (" " + RANDOMIZATION_HELP if sanity else ""))


def picture(gray, mask, heat):
    return draw_contours(overlay(gray, heat), lung_contours(mask))


st.subheader("Least lung focus: likely shortcuts")
k_show = st.slider("Images per model", 3, 12, 6, key="audit_k")
for tab, k in zip(st.tabs(chosen), chosen):
    worst = least_focused(tables[k], k_show)
    cells = [c for _ in range(0, len(worst), 2) for c in tab.columns(2)]  # two a row: large enough to read
    for col, (_, row) in zip(cells, worst.iterrows()):
        path = paths[int(row["image"])]
        gray, mask = lungs_of(path)
        r = cam(source, src_label, k, path, method, None, gray)
        col.image(picture(gray, mask, r.normalised), clamp=True, width="stretch",
                  caption=escape_markdown(f"{path.rsplit('/', 1)[-1]} · {row['cam_class']} {row['probability']:.2f} · "
                                          f"lungs {row['lung_share']:.0%} · border {row['border_share']:.0%}"))

if len(chosen) >= 2:
    st.subheader("Do two models agree on one image?")
    a1, a2, a3 = st.columns(3)
    ka = a1.selectbox("Model A", chosen, index=0, key="audit_a")
    kb = a2.selectbox("Model B", chosen, index=1, key="audit_b")
    path = a3.selectbox("Image", paths, format_func=lambda p: p.rsplit("/", 1)[-1], key="audit_img")
    gray, mask = lungs_of(path)
    ra, rb = (cam(source, src_label, k, path, method, None, gray) for k in (ka, kb))
    ag = agreement(ra.raw, rb.raw, gray.shape)
    st.markdown(f"**Spearman** {ag.spearman:.3f} · **IoU of the hottest {TOP:.0%}** {ag.iou:.3f} "
                "(1 = the same map; both maps resized to the image)")
    for col, k, r in zip(st.columns(2), (ka, kb), (ra, rb)):
        hot = lung_contours(top_region(to_shape(r.raw, gray.shape)))
        col.image(draw_contours(picture(gray, mask, r.normalised), hot, color=(255, 255, 255)), clamp=True,
                  width="stretch",
                  caption=escape_markdown(f"{k}: {r.class_name} · white outline: its hottest {TOP:.0%}"))
