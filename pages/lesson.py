"""Lesson: class mode, for a projector. One model (the best binary one), large images and type, no file names,
no jargon on screen (a glossary at hand), and five steps, one URL each (``/lesson?step=2``): guess then reveal,
where the models look, the threshold trade-off, trust, the hardest errors. Every sentence comes from
pneumo_core.explain.conclusions; probabilities and heatmaps from the cached helpers the warm-up fills."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages._shared.images import (DATA_HINT, data_dir, decoded, digest, image_path, non_xray_images,
                                  read_image_file, sample_images)
from pages._shared.layout import class_mode, start_page
from pages._shared.models import BUNDLED_LABEL, cam, model_probs, ood_score, predictor
from pages._shared.warmup import COMPARE_PAIR, DEFAULT_METHOD
from pneumo_core.data.images import shrink
from pneumo_core.errors import ImageLoadError, PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.explain import conclusions as cc
from pneumo_core.files import ASSETS, escape_markdown
from pneumo_core.models.sources import bundled_source
from pneumo_core.visualize.handout import MAX_PANELS, Panel, Sheet, handout_png, panel

VIEW_SIDE = 1024  # px: the long side of each image drawn (two columns of a wide layout, on a projector)
STEPS = ["Guess first, then look", "Where do the models look?", "Missing sick children or alarming healthy ones",
         "Can we trust how sure it is?", "Its most confident mistakes"]

start_page("Lesson", sidebar="collapsed")  # the images take the screen's width (the sidebar one click away)
class_mode()


def go(to: int) -> None:
    st.query_params["step"] = str(to)


try:
    step = min(max(int(st.query_params.get("step", "1")), 1), len(STEPS))
except ValueError:
    step = 1
st.query_params["step"] = str(step)

a, b, c = st.columns([1, 5, 1], vertical_alignment="center")
a.button("← Previous", key="lesson_prev", on_click=go, args=(step - 1,), disabled=step == 1, width="stretch")
b.markdown(f"## Step {step} of {len(STEPS)} · {STEPS[step - 1]}")
c.button("Next →", key="lesson_next", on_click=go, args=(step + 1,), disabled=step == len(STEPS), width="stretch")
with st.expander("Words used in this lesson"):
    for word, meaning in cc.GLOSSARY.items():
        st.markdown(f"**{word}**: {meaning}")

source = bundled_source()
best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
if best is None:
    st.error("The bundled models are missing: the lesson needs assets/models and assets/predictions.")
    st.stop()
threshold = selection.model_threshold(ASSETS, best)
model = cc.display_name(best.key)


@st.cache_data(show_spinner=False, max_entries=256)
def lungs_of(image: str, _gray):
    from pneumo_core.explain.lungs import lung_mask

    return lung_mask(_gray)


@st.cache_data(show_spinner=False, max_entries=8)
def lesson_images(root: Path | None) -> list[tuple[str, Path]]:
    """(true label, path) of the images the lesson shows as "X-ray 1..n": the bundled samples, and with a dataset
    folder a fixed sample of its test images too; in a fixed mixed order. Their names never reach the page."""
    paths = list(sample_images())
    if root is not None:
        from pneumo_core.data.datasets import kermany_splits

        try:
            test = kermany_splits(root)["test"]
            bundled = {p.name for p in paths}  # the samples are test images too: none twice
            test = test[~test["image_id"].map(lambda i: i.rsplit("/", 1)[-1]).isin(bundled)]
            paths += [root / i for i in test.sample(min(12, len(test)), random_state=0)["image_id"]]
        except PneumoError:
            pass
    paths = [p for p in paths if cc.true_label(str(p))]
    return [(cc.true_label(str(paths[i])), paths[i]) for i in cc.lesson_order([str(p) for p in paths])]


def load(path) -> tuple[str, object] | None:
    """(content digest, grayscale) of an image; None, said without its name, when it cannot be read."""
    try:
        data = read_image_file(path)
        return digest(data), decoded(data, path.name)
    except (ImageLoadError, OSError, PneumoError):
        st.error("This X-ray cannot be read; choose another.")
        return None


def verdict(key: str, h: str, gray, cut: float | None) -> tuple[str, float]:
    """One model's verdict on one image at its cut-off, decided as on every page (inference.verdicts.decide), and
    its pneumonia score."""
    from pneumo_core.inference.verdicts import decide

    classes = list(predictor(source, BUNDLED_LABEL, key).classes)
    probs = model_probs(source, BUNDLED_LABEL, key, h, gray)
    return decide(probs, classes, cut)[0], float(probs[classes.index("PNEUMONIA")])


def heat_picture(key: str, h: str, gray, view):
    from pneumo_core.explain.cams import overlay

    r = cam(source, BUNDLED_LABEL, key, h, DEFAULT_METHOD, None, gray)
    return r, overlay(view, r.normalised, 0.45, "jet")


TRUST_CAPTION = ("Each dot: the X-rays given about that pneumonia score, and how many of them really showed pneumonia. "
                 "A model to be taken at its word stays on the dotted line; the bars count the X-rays.")


@st.cache_data(show_spinner=False, max_entries=4)
def trust_view(arch: str, seed: int | None, threshold: float) -> tuple[cc.Trust, cc.ValTest, bytes, Panel]:
    """Step 4's sentences and chart, computed once per model (the bundled prediction files do not change while
    the server runs): the chart as a picture (PNG bytes: nothing for the browser to lay out, and for the handout
    a 600-px copy) instead of a plotly chart, ~0.4 s of the browser's CPU at each visit."""
    import io

    from PIL import Image

    from pneumo_core.evaluation.calibration import binary_reliability
    from pneumo_core.visualize.pictures import reliability_picture

    val = selection.load_choice(ASSETS, "binary", arch, seed, "val")
    test = selection.load_choice(ASSETS, "binary", arch, seed, "test")
    pic = reliability_picture(binary_reliability(test.y_binary, test.p_positive, 10),
                              "How sure the model is, against how often pneumonia is really there",
                              x_title="the model's pneumonia score", y_title="really pneumonia", model_name="the model",
                              ideal_name="a model to be taken at its word", count_title="X-rays")
    png = io.BytesIO()
    Image.fromarray(pic).save(png, format="PNG", optimize=False)
    return (cc.trust(test.y_binary, test.p_positive),
            cc.val_vs_test(val.y_binary, val.p_positive, test.y_binary, test.p_positive, threshold),
            png.getvalue(), panel(pic, "How sure the model is, against how often pneumonia is really there"))


def pick_xray(images: list) -> int:
    """The X-ray shown (a number, never a name), shared by steps 1 and 2."""
    def another() -> None:
        st.session_state["lesson_xray"] = (st.session_state.get("lesson_xray", 0) + 1) % len(images)

    if st.session_state.get("lesson_xray", 0) >= len(images):  # the dataset folder went away: fewer X-rays
        st.session_state["lesson_xray"] = 0
    a, b = st.columns([3, 1], vertical_alignment="bottom")
    i = a.selectbox("X-ray", range(len(images)), format_func=lambda k: f"X-ray {k + 1}", key="lesson_xray")
    b.button("Another X-ray", key="lesson_another", on_click=another, width="stretch")
    return i


said: list[str] = []  # what the handout prints: the step's sentences, numbers and pictures
numbers: list[tuple[str, str]] = []
panels: list[Panel] = []
images = lesson_images(data_dir()) if step in (1, 2, 5) else []

if step == 1:
    st.markdown("Look at the X-ray. **Does this child have pneumonia?** Vote first; then see what the model says, "
                "where it looked, and the answer.")
    i = pick_xray(images)
    truth, path = images[i]
    got = load(path)
    if got is None:
        st.stop()
    h, gray = got
    view = shrink(gray, VIEW_SIDE)
    vote = st.session_state.get("lesson_votes", {}).get(i)
    if vote is None:
        def cast(v: str, i: int = i) -> None:
            st.session_state["lesson_votes"] = {**st.session_state.get("lesson_votes", {}), i: v}

        said.append("Does this child have pneumonia? The class votes first.")
        cols = st.columns([2, 2, 2], vertical_alignment="center")
        cols[0].markdown("### The class votes:")
        for col, label in zip(cols[1:], cc.LABELS):
            col.button(label, key=f"vote_{label}", on_click=cast, args=(label,), type="primary", width="stretch")
    else:
        _, p = verdict(best.key, h, gray, threshold)
        shown = cc.reveal(vote, p, threshold, truth, model)
        st.markdown(f"### {shown.sentence}")
        said.append(shown.sentence)

        def hide(i: int = i) -> None:
            st.session_state["lesson_votes"] = {k: v for k, v in st.session_state.get("lesson_votes", {}).items()
                                                if k != i}

        st.button("Hide the answer and vote again", key="lesson_hide", on_click=hide)
    left, right = st.columns(2)
    left.image(view, caption=f"X-ray {i + 1}", clamp=True, width="stretch")
    panels.append(panel(view, f"X-ray {i + 1}"))
    if vote is None:
        right.markdown("*Where the model looked appears after the vote.*")
    else:
        _, pic = heat_picture(best.key, h, gray, view)
        right.image(pic, caption=f"Where {model} looked", width="stretch")
        panels.append(panel(pic, f"Where {model} looked"))

elif step == 2:
    from pneumo_core.explain.audit import lung_focus

    st.markdown("Two models, the same X-ray: the warm colours show where each one looked. A model that is right "
                "for the right reasons looks at the lungs.")
    i = pick_xray(images)
    got = load(images[i][1])
    if got is None:
        st.stop()
    h, gray = got
    view = shrink(gray, VIEW_SIDE)
    lungs = lungs_of(h, gray)
    for col, key in zip(st.columns(2), COMPARE_PAIR):
        with col:
            r, pic = heat_picture(key, h, gray, view)
            f = lung_focus(r.raw, lungs)  # the sentence above the picture: on a projector both stay in view
            sentence = cc.lung_focus_sentence(cc.display_name(key), f.lung_share, f.lung_area, f.border_share)
            st.markdown(f"**{sentence}**")
            st.image(pic, caption=f"Where {cc.display_name(key)} looked", width="stretch")
            said.append(sentence)
            panels.append(panel(pic, f"X-ray {i + 1}: where {cc.display_name(key)} looked"))
    cats = non_xray_images()
    got = load(cats[0]) if cats else None
    if got is not None:  # a picture that is not an X-ray: the checker says so, the models answer anyway
        from pneumo_core.explain.ood import default_gate

        h, gray = got
        view = shrink(gray, VIEW_SIDE)
        gate = default_gate()
        score = ood_score(h, gray)
        flagged = None if gate is None or score is None else bool(gate.flagged(score))
        members = {m.key: m for m in selection.best_of_each(ASSETS, "binary", with_checkpoint=True)}
        answers = []
        for key in COMPARE_PAIR:
            label, q = verdict(key, h, gray, selection.model_threshold(ASSETS, members[key]))
            answers.append((cc.display_name(key), label, q))
        st.markdown("### And a picture that is not an X-ray at all?")
        sentence = cc.not_an_xray_sentence(flagged, answers)
        st.markdown(f"**{sentence}**")
        said.append(sentence)
        for col, key in zip(st.columns(2), COMPARE_PAIR):
            _, pic = heat_picture(key, h, gray, view)
            col.image(pic, caption=f"Where {cc.display_name(key)} looked on a cat", width="stretch")
            panels.append(panel(pic, f"A cat: where {cc.display_name(key)} looked"))

elif step == 3:
    test = selection.load_choice(ASSETS, "binary", best.arch, best.seed, "test")
    y, p = test.y_binary, test.p_positive
    st.markdown(f"{model} gives every X-ray of the test set a pneumonia score. Where should it start saying "
                "PNEUMONIA? Move the slider.")
    cuts = [float(t) for t in cc.tradeoff_thresholds(y, p, include=threshold)]
    ends = {0: "miss no pneumonia", len(cuts) - 1: "no false alarms"}
    start = min(range(len(cuts)), key=lambda k: abs(cuts[k] - threshold))
    k = st.select_slider("From “miss no pneumonia” to “no false alarms”", range(len(cuts)), value=start,
                         format_func=lambda k: ends.get(k, f"says PNEUMONIA from a score of {cc.pct(cuts[k])}"),
                         key="lesson_cut")
    t = cc.tradeoff(y, p, cuts[k])
    m1, m2 = st.columns(2)
    m1.metric("Sick children sent home", t.sent_home_sick, help=f"of {t.sick} children with pneumonia")
    m2.metric("Healthy children treated needlessly", t.treated_needlessly, help=f"of {t.healthy} healthy children")
    st.markdown(f"### {t.sentence}")
    said.append(t.sentence)
    numbers += [("Sick children sent home", str(t.sent_home_sick)),
                ("Healthy children treated needlessly", str(t.treated_needlessly)),
                ("Says PNEUMONIA from a score of", cc.pct(cuts[k]))]

elif step == 4:
    tr, vt, chart, chart_panel = trust_view(best.arch, best.seed, threshold)
    left, right = st.columns([3, 2])
    left.image(chart, width="stretch", caption=TRUST_CAPTION)
    with right:
        st.markdown(f"### {tr.sentence}")
        st.markdown(f"### {vt.sentence}")
    said += [tr.sentence, vt.sentence]
    numbers += [("right when at least 90 % sure", cc.pct(tr.right / tr.confident) if tr.confident else "–"),
                ("right on the validation X-rays", cc.pct(vt.val_accuracy)),
                ("right on the test X-rays", cc.pct(vt.test_accuracy))]
    panels.append(chart_panel)

elif step == 5:
    test = selection.load_choice(ASSETS, "binary", best.arch, best.seed, "test")
    y, p = test.y_binary, test.p_positive
    worst = cc.hardest_false_alarms(test.frame["image_id"], y, p, threshold)
    st.markdown(f"Healthy children's X-rays that {model} called PNEUMONIA, the most confident first.")
    said.append(cc.false_alarm_sentence(y, p, threshold, worst))
    st.markdown(f"### {said[-1]}")
    shown = []
    for image_id, score in zip(worst["image_id"], worst["p_pneumonia"]):
        if (path := image_path(image_id)) is not None:
            shown.append((path, f"Healthy · pneumonia score {cc.pct(score)}"))
    if not shown:  # no dataset folder: the bundled healthy samples the model gets wrong, if any
        st.caption(DATA_HINT + " Until then, the bundled healthy X-rays it calls PNEUMONIA:")
        scored = [(verdict(best.key, *got, threshold), path) for truth, path in images
                  if truth == "NORMAL" and (got := load(path)) is not None]
        shown = [(path, f"Healthy · pneumonia score {cc.pct(q)}")
                 for (label, q), path in sorted(scored, key=lambda s: -s[0][1]) if label == "PNEUMONIA"]
        if not shown:
            st.markdown(f"{model} gets every bundled healthy X-ray right.")
    for row in range(0, len(shown), 2):
        for col, (path, caption) in zip(st.columns(2), shown[row:row + 2]):
            if (got := load(path)) is None:
                continue
            h, gray = got
            _, pic = heat_picture(best.key, h, gray, shrink(gray, VIEW_SIDE))
            col.image(pic, caption=escape_markdown(caption), width="stretch")
            panels.append(panel(pic, caption))

sheet = Sheet(f"Step {step} of {len(STEPS)} · {STEPS[step - 1]}", tuple(said), tuple(numbers),
              tuple(panels[:MAX_PANELS]))
st.session_state["lesson_sheet"] = sheet  # what the button prints (the tests read it too)
st.download_button("Print this step (PNG)", lambda: handout_png(sheet), f"lesson_step{step}.png", "image/png",
                   key="lesson_print", on_click="ignore", help="A one-page handout: this step's pictures, numbers "
                   "and sentences, on A4.")
