"""Predict: upload X-rays -> the results table's models (each at its validation threshold), the OOD
check, a Grad-CAM overlay. Probabilities and maps are computed once per image and model."""
from __future__ import annotations

import io

import streamlit as st
from PIL import Image

from pages._shared.images import (UPLOAD_TYPES, decoded, digest, linked_image, read_image_file, sample_images,
                                  take_uploads)
from pages._shared.layout import start_page
from pages._shared.models import (cam, current_source, faithfulness, loaded, member_keys, model_keys, model_probs,
                                  ood_score, predictor)
from pneumo_core.data.images import shrink
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.files import escape_markdown, safe_cell, safe_filename, unique_names

VIEW_SIDE = 1024  # px: the long side of the image and overlay drawn on the page (two columns of a wide layout)

start_page("Predict")
source, src_label = current_source()
uploads = st.file_uploader("Chest X-rays (JPEG, PNG or DICOM)", type=UPLOAD_TYPES, accept_multiple_files=True,
                           key="uploads")
files, note = take_uploads(uploads or [])
if note:
    st.warning(note)
samples = sample_images()
if samples and st.button("Try a sample", key="predict_sample", help="a bundled test X-ray (the next one each click)"):
    st.session_state["predict_sample_i"] = (st.session_state.get("predict_sample_i", -1) + 1) % len(samples)
if not files and "predict_sample_i" not in st.session_state and (linked := linked_image()) is not None:
    files = [linked]
if not files and "predict_sample_i" in st.session_state:
    pick = samples[st.session_state["predict_sample_i"]]
    files = [(pick.name, read_image_file(pick))]
if not files:
    st.info("Upload one or more frontal chest X-rays, or try a sample, to see each model's verdict and its heatmap.")
    st.stop()
images: dict[str, tuple[str, object]] = {}  # name -> (content digest, grayscale)
for fname, data in unique_names(files):
    try:
        images[fname] = (digest(data), decoded(data, fname))
    except ImageLoadError as exc:
        st.error(escape_markdown(str(exc)))
if not images:
    st.stop()

# pandas, torch, the models and the CAM library load only once there is an image (a fast first page)
import pandas as pd  # noqa: E402

from pages._shared.predictions import source_predictions_root  # noqa: E402
from pneumo_core.evaluation import selection  # noqa: E402
from pneumo_core.explain.cams import (COLORMAPS, FAITHFULNESS_HELP, METHODS, faithfulness_sentence,  # noqa: E402
                                      method_cost, overlay, start_explain)
from pneumo_core.explain.conclusions import verdict_summary  # noqa: E402
from pneumo_core.explain.ood import default_gate  # noqa: E402
from pneumo_core.inference.verdicts import stored_verdicts, verdict_rows, zoo_verdicts  # noqa: E402
from pneumo_core.visualize.handout import Sheet, handout_png, panel  # noqa: E402

keys = model_keys(source, best_only=True)
keys = loaded(source, src_label, keys)  # a checkpoint that does not load is named and skipped
if not keys:
    st.warning("No models available from this source.")
    st.stop()
root = source_predictions_root(source)  # None: a source without its own prediction files
members = loaded(source, src_label, member_keys(source, root, keys))  # a seed ensemble's other seeds
best = selection.best_model(root, "binary", with_checkpoint=True) if root is not None else None  # the rule's best
gate = default_gate()
rows = []
said: dict[str, list[str]] = {}  # per image, the lines a printed view repeats (the summary, the OOD check)
for name, (h, gray) in images.items():
    def probs_of(key: str, h=h, gray=gray):
        return model_probs(source, src_label, key, h, gray)

    errors: list[str] = []  # a model that fails on this image (e.g. NaN outputs) is named and left out
    verdicts = zoo_verdicts(root, {*keys, *members}, probs_of, errors=errors) if root is not None else []
    if not verdicts:  # a source without prediction files: each model at its stored threshold
        verdicts = stored_verdicts({k: (predictor(source, src_label, k).classes,
                                        predictor(source, src_label, k).meta.threshold)
                                    for k in keys}, probs_of, errors=errors)
    ood = ood_score(h, gray) if gate is not None else None
    with st.container(border=True):
        st.markdown(f"**{escape_markdown(name)}**")
        for line in errors:
            st.error(escape_markdown(line))
        summary = verdict_summary(verdicts, None if best is None else best.key)  # the verdict first, in words
        said[name] = []
        if summary is not None:
            st.markdown(summary.sentence)
            said[name].append(summary.sentence.replace("**", ""))
        if ood is not None:
            msg = f"OOD score {ood:.2f} (threshold {gate.threshold:.2f})"
            if gate.flagged(ood):
                said[name].append(f"This does not look like a frontal chest X-ray ({msg}); the verdicts are shown "
                                  "anyway.")
                st.warning(said[name][-1])
            else:
                said[name].append(f"Looks like a frontal chest X-ray: {msg}.")
                st.caption(said[name][-1])
        with st.expander(f"All {len(verdicts)} models' verdicts", expanded=summary is None):
            st.dataframe(pd.DataFrame(verdict_rows(verdicts)), hide_index=True, key=f"verdicts_{h}", column_config={
                "P(pneumonia)": st.column_config.NumberColumn(
                    format="%.3f", help="the model's probability of pneumonia, whatever its verdict"),
                "decides at": st.column_config.TextColumn(help="the rule that turns the probability into the "
                                                               "verdict (a threshold chosen on validation, not 0.5)")})
    for v in verdicts:
        rows.append({"image": safe_cell(name), "model": v.model, "task": v.task, "verdict": v.label,
                     "P(pneumonia)": None if v.p_pneumonia is None else round(v.p_pneumonia, 4),
                     "decides_at": v.decides_at, "decided_by": v.decided_by, "ood_score": ood,
                     **{f"P({c})": round(p, 4) for c, p in zip(v.classes, v.probs)}})
st.download_button("Download results (CSV)", pd.DataFrame(rows).to_csv(index=False), "predictions.csv", "text/csv",
                   key="dl_csv")


cam_keys = selection.best_first(keys, None if best is None else best.key)  # chosen once a run, not per tweak


KEPT_SLOW_RUNS = 4  # finished slow maps a session keeps (a 224-px map pair is ~0.4 MB)


@st.fragment(run_every=1.0)
def slow_progress(run: tuple) -> None:
    """A running slow method's progress and its Stop button, redrawn every second on its own; the page reruns
    once the map is ready (or the run has stopped)."""
    job = st.session_state.get("cam_slow_runs", {}).get(run)
    if job is None:
        return
    if job.done:
        st.rerun()
    label = METHODS[job.method][1].split(" (")[0]
    st.progress(min(job.elapsed / job.seconds, 0.99) if job.seconds > 0 else 0.0,
                text=f"{label}: {job.elapsed:.0f} s of about {job.seconds:.0f} s")
    if job.halt.is_set():
        st.caption("Stopping after the current batch…")
    else:
        st.button(f"Stop {label}", key="cam_slow_stop", on_click=job.stop)


def slow_map(run: tuple, p, gray, method: str, target: int | None):
    """A slow method's map (Score-CAM, Ablation-CAM): its expected time first, refused above the cap; once the
    visitor confirms, computed in the background (the other widgets stay live) and stoppable; None until done."""
    cost = method_cost(p, method)
    if not cost.allowed:
        st.warning(escape_markdown(cost.message))
        return None
    runs = st.session_state.setdefault("cam_slow_runs", {})
    for other, job in runs.items():  # a choice changed: the run it left is stopped (it holds the model's lock)
        if other != run and not job.done:
            job.stop()
    job = runs.get(run)
    if job is None or (job.done and job.result is None):
        if job is not None and job.stopped:
            st.info("Stopped before it finished.")
        elif job is not None:  # failed (e.g. NaN outputs): named in one line
            st.error(escape_markdown(str(job.error)))
        st.info(escape_markdown(cost.message))
        if not st.button(f"Run {METHODS[method][1].split(' (')[0]} (about {cost.seconds:.0f} s)", key="cam_slow_run"):
            return None
        finished = [k for k, j in runs.items() if j.done]
        for k in finished[:max(0, len(finished) - KEPT_SLOW_RUNS + 1)]:
            del runs[k]
        runs[run] = job = start_explain(p, gray, method, target, cost.seconds)
    if not job.done:
        slow_progress(run)
        return None
    return job.result


@st.fragment
def heatmap() -> None:
    st.subheader("Heatmap")
    c1, c2, c3, c4 = st.columns(4)
    img_name = c1.selectbox("Image", list(images), key="cam_image")
    model_key = c2.selectbox("Model", cam_keys, key="cam_model")
    method = c3.selectbox("Method", list(METHODS), format_func=lambda m: METHODS[m][1], key="cam_method")
    p = predictor(source, src_label, model_key)
    cls = c4.selectbox("Class to explain", ["predicted"] + list(p.classes), key="cam_class")
    o1, o2 = st.columns(2)
    opacity = o1.slider("Opacity", 0.0, 1.0, 0.45, 0.05, key="opacity")
    cmap = o2.selectbox("Colour map", list(COLORMAPS), key="cmap")
    h, gray = images[img_name]
    target = None if cls == "predicted" else list(p.classes).index(cls)
    slow = METHODS[method][2]
    if slow:
        r = slow_map((src_label, model_key, h, method, target), p, gray, method, target)
        if r is None:
            return
    else:
        try:
            with st.spinner(f"{METHODS[method][1]}…"):
                r = cam(source, src_label, model_key, h, method, target, gray)
        except PneumoError as exc:  # e.g. a model with NaN outputs: named, not a traceback
            st.error(escape_markdown(str(exc)))
            return
    if r.degenerate:
        st.warning(escape_markdown(r.message))
    view = shrink(gray, VIEW_SIDE)  # drawn at screen size: a 2048-px overlay costs ~250 MB to compose
    pic = overlay(view, r.normalised, opacity, cmap)
    a, b = st.columns(2)  # the same size, each half the page's width (stacked on a phone)
    caption = f"{r.method} for {r.class_name} · {p.meta.arch} at {p.prep.image_size} px"
    a.image(view, caption=escape_markdown(img_name), clamp=True, width="stretch")
    b.image(pic, caption=escape_markdown(caption), clamp=True, width="stretch")
    if slow:
        st.caption("No faithfulness score for a slow method: it would run the method again.")
    elif st.toggle("Faithfulness score", key="cam_faith", help=FAITHFULNESS_HELP):
        f = faithfulness(source, src_label, model_key, h, method, target, gray)
        st.caption(escape_markdown(faithfulness_sentence(f, float(r.probs[r.target]), r.class_name)))
    buf = io.BytesIO()
    Image.fromarray(pic).save(buf, format="PNG")
    stem = safe_filename(img_name.rsplit('.', 1)[0])
    st.download_button("Download overlay (PNG)", buf.getvalue(), f"{stem}_{method}.png", "image/png", key="dl_png")
    sheet = Sheet(img_name, tuple(said.get(img_name, ())), (), (panel(view, img_name), panel(pic, caption)))
    st.session_state["predict_sheet"] = sheet  # what the button prints (the tests read it too)
    st.download_button("Print this view (PNG)", lambda: handout_png(sheet), f"{stem}_{method}_handout.png",
                       "image/png", key="predict_print", on_click="ignore",
                       help="A one-page A4 handout: the verdict line, the X-ray and its heatmap.")


heatmap()
