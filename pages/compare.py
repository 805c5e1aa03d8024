"""Compare heatmaps: two or three models side by side on one image, each on its own colour scale by default."""
from __future__ import annotations

from itertools import combinations

import streamlit as st

from pages._shared.images import data_dir, decoded, digest, image_picker
from pages._shared.layout import show_figure, start_page
from pages._shared.models import cam, current_source, faithfulness, loaded, model_keys, predictor
from pneumo_core.errors import ImageLoadError
from pneumo_core.explain.audit import agreement, agreement_sentence, chance_iou
from pneumo_core.explain.cams import (FAITHFULNESS_HELP, METHODS, cam_grid, faithfulness_sentence, overlay, own_scale,
                                      shared_scale)
from pneumo_core.files import escape_markdown
from pneumo_core.visualize.charts import colorbar_figure

start_page("Compare heatmaps")
source, src_label = current_source()
keys = model_keys(source, best_only=True)
preferred = [k for k in ("binary/resnet18", "binary/densenet121") if k in keys]
linked = st.query_params.get("model")  # a link from the Errors page: the model whose error it was, first
if linked in keys:
    task = linked.split("/")[0]
    preferred = [linked] + [k for k in preferred + keys if k != linked and k.split("/")[0] == task][:1]
chosen = st.multiselect("Models (two or three)", keys, default=preferred or keys[:2], max_selections=3,
                        key="cmp_models")
picked = image_picker("cmp", data_dir())
chosen = loaded(source, src_label, chosen)  # a checkpoint that does not load is named and skipped
if picked is None or len(chosen) < 2:
    st.info("Choose at least two models and an image: upload one, or try a sample.")
    st.stop()
name, data = picked
try:
    gray = decoded(data, name)
except ImageLoadError as exc:
    st.error(escape_markdown(str(exc)))
    st.stop()
h = digest(data)


@st.fragment
def maps() -> None:
    c1, c2 = st.columns(2)
    method = c1.selectbox("Method", [m for m, v in METHODS.items() if not v[2]], format_func=lambda m: METHODS[m][1],
                          key="cmp_method")
    shared = c2.toggle("One shared colour scale", value=False, key="cmp_shared",
                       help="Off (default): each map on its own scale, its hottest pixel full colour — the shape of "
                            "what each model looks at. On: one scale for all, which compares raw magnitudes; "
                            "those differ between architectures and are rarely comparable.")
    results = [cam(source, src_label, k, h, method, None, gray) for k in chosen]
    scaled = shared_scale([r.raw for r in results]) if shared else [own_scale(r.raw) for r in results]
    st.caption("Colours: red = the regions that raised the model's score for the class it predicted most; blue = "
               "those that did not. " + ("All maps share one scale." if shared else "Each map on its own scale."))
    cells = [c for _ in range(0, len(chosen) + 1, 2) for c in st.columns(2)]  # two a row: ~650 px each at 1440
    first, cols = cells[0], cells[1:len(chosen) + 1]
    first.image(gray, caption=escape_markdown(f"original · {name}"), clamp=True, width="stretch")
    for col, k, r, m in zip(cols, chosen, results, scaled):
        p = predictor(source, src_label, k)
        col.image(overlay(gray, m), caption=escape_markdown(k), clamp=True, width="stretch")
        col.markdown(f"**{escape_markdown(r.class_name)}** ({max(r.probs):.3f})")
        g = cam_grid(p)
        col.caption(f"{p.meta.arch} sees {p.prep.image_size} × {p.prep.image_size} px; its {r.method} grid is "
                    f"{g} × {g} cells, smoothed up to the image.")
        if r.degenerate:
            col.warning(escape_markdown(r.message))
    show_figure(colorbar_figure(), key="cmp_colorbar")
    for (ka, ra), (kb, rb) in combinations(zip(chosen, results), 2):
        ag = agreement(ra.raw, rb.raw, gray.shape)
        st.markdown(escape_markdown(agreement_sentence(ka.split("/")[-1], kb.split("/")[-1], ag)),
                    help="IoU: the overlap of the two maps' hottest fifths (1 = the same region, 0 = none in "
                         f"common; two random fifths overlap by {chance_iou():.2f}). Spearman: the rank correlation "
                         "of the whole "
                         "maps (1 = same ordering of pixels, 0 = unrelated, negative = opposite).")
    if st.toggle("Faithfulness scores", key="cmp_faith", help=FAITHFULNESS_HELP):
        for col, k, r in zip(cols, chosen, results):
            f = faithfulness(source, src_label, k, h, method, None, gray)
            col.caption(escape_markdown(faithfulness_sentence(f, float(r.probs[r.target]), r.class_name)))


maps()
