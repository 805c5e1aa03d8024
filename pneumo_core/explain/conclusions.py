"""The lesson's plain words: one-sentence conclusions computed from the numbers, and the choices behind them
(the true label of a sample, the slider's ends from "miss no pneumonia" to "no false alarms", the hardest
errors). For a class, not a paper: no jargon in the sentences, the terms explained in :data:`GLOSSARY`.

Pure functions over numbers and arrays (numpy, pandas); the pages only show what they return.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pneumo_core.data.datasets import subtype_of
from pneumo_core.errors import ModelError
from pneumo_core.models.keys import ModelKey

LABELS = ("NORMAL", "PNEUMONIA")
RIGHT, WRONG = "✓", "✗"

#: the terms the lesson avoids on screen, each in one plain sentence (shown in a "Words" expander)
GLOSSARY: dict[str, str] = {
    "Heatmap (Grad-CAM)": "A picture of where the model's attention went: warm colours mark the parts of the X-ray "
                          "that pushed its answer most. Grad-CAM is the method that draws it from the model's "
                          "last layers; it shows where the model looked, not why it was right.",
    "Threshold (cut-off)": "The model gives each X-ray a pneumonia score between 0 and 1; the cut-off is the score "
                           "from which it says PNEUMONIA. Lower it and fewer sick children are missed but more "
                           "healthy ones are flagged; raise it and the opposite.",
    "Sensitivity": "Of the children who really have pneumonia, the share the model flags (100 % = none missed).",
    "Specificity": "Of the healthy children, the share the model leaves alone (100 % = no false alarms).",
    "AUROC": "How well the scores rank sick children above healthy ones, whatever the cut-off: 1.0 ranks every "
             "sick child higher, 0.5 is a coin toss.",
    "Validation and test X-rays": "X-rays the model never trained on. The validation ones (from the same collection "
                                  "as the training ones) were used to choose the model and its cut-off; the test ones "
                                  "were kept apart until the end, as the final exam.",
    "Calibration": "Whether the model's confidence can be taken at its word: of the X-rays it gives 80 %, about "
                   "80 % should really show pneumonia.",
}

def display_name(key: str) -> str:
    """``binary/resnet18``, ``binary/resnet18/seed2``, a page's label or ``resnet18`` -> ``ResNet18`` (the
    architecture's :attr:`~pneumo_core.models.networks.Arch.display_name`; an unknown one keeps its name;
    ``binary/resnet18_seeds`` -> ``ResNet18 seed ensemble``)."""
    from pneumo_core.models.networks import ARCHS

    try:
        k = ModelKey.parse(key)
    except ModelError:  # a bare architecture name
        return ARCHS[key].display_name if key in ARCHS else key
    if k.ensembled_arch in ARCHS:
        return f"{ARCHS[k.ensembled_arch].display_name} seed ensemble"
    return ARCHS[k.arch].display_name if k.arch in ARCHS else k.arch


def pct(x: float) -> str:
    """A share as the lesson writes it: ``0.172`` -> ``17 %`` (a whole percent)."""
    return f"{round(100 * float(x))} %"


def true_label(name: str) -> str | None:
    """NORMAL or PNEUMONIA from a Kermany file name or dataset id (never shown: it gives the answer away);
    None when the name does not say."""
    sub = subtype_of(name)
    return None if not sub else "NORMAL" if sub == "NORMAL" else "PNEUMONIA"


def lesson_order(names: list[str]) -> list[int]:
    """The order a lesson shows images in: fixed, and mixed (the samples come sorted by class, which would
    give the answers away), by a hash of each name."""
    import hashlib

    return sorted(range(len(names)), key=lambda i: hashlib.sha256(str(names[i]).encode()).hexdigest())


# ---------------------------------------------------------------- step 1: guess, then reveal

@dataclass(frozen=True)
class Reveal:
    model_label: str  # NORMAL or PNEUMONIA, by the model's own cut-off
    model_right: bool
    class_right: bool | None  # None without a vote
    sentence: str


def reveal(vote: str | None, p_pneumonia: float, threshold: float, truth: str, model: str) -> Reveal:
    """The class's vote and the model's verdict (``inference.verdicts.decide``, as every page decides) against the
    true label, in one sentence with ✓ / ✗."""
    from pneumo_core.inference.verdicts import decide

    model_label = decide((1 - p_pneumonia, p_pneumonia), LABELS, threshold)[0]
    model_right = model_label == truth
    class_right = None if vote is None else vote == truth
    mark = RIGHT if model_right else WRONG
    side = "at or above" if p_pneumonia >= threshold else "below"
    said = "" if vote is None else f"The class said {vote} {RIGHT if class_right else WRONG}, "
    sentence = (f"{said}{'t' if vote is not None else 'T'}he model said {model_label} {mark} (its pneumonia score "
                f"{pct(p_pneumonia)} is {side} its cut-off {pct(threshold)}), and the X-ray is {truth}.")
    return Reveal(model_label, model_right, class_right, sentence)


# ---------------------------------------------------------------- step 2: where the models look

#: lung shares within this factor of an even spread's read as "about what an even spread would give"
EVEN_BAND = 1.25


def lung_focus_sentence(model: str, lung_share: float, lung_area: float, border_share: float | None = None) -> str:
    """How much of a heatmap lies on the lungs against what an evenly spread map would put there (the lungs'
    share of the image), e.g. "ResNet18 puts 17 % of its heat on the lungs, about what an even spread would
    give (16 %): it is not looking at the lungs." A border share of 20 % or more is named too."""
    if not np.isfinite(lung_share):
        return f"{model}'s heat cannot be placed: no lungs were found on this X-ray, or the heatmap is empty."
    even = f"({pct(lung_area)})"
    if lung_area > 0 and lung_share < lung_area / EVEN_BAND:
        verdict = f"less than an even spread would give {even}: it is looking away from the lungs"
    elif lung_area > 0 and lung_share <= lung_area * EVEN_BAND:
        verdict = f"about what an even spread would give {even}: it is not looking at the lungs"
    elif lung_share < 0.5:
        verdict = f"more than an even spread would give {even}, but most of its heat is elsewhere"
    else:
        verdict = f"well above an even spread {even}: it is looking at the lungs"
    border = ""
    if border_share is not None and np.isfinite(border_share) and border_share >= 0.2:
        border = f"; {pct(border_share)} lies on the image's edges, where markers and text sit"
    return f"{model} puts {pct(lung_share)} of its heat on the lungs, {verdict}{border}."


# ---------------------------------------------------------------- step 3: the threshold trade-off

def tradeoff_thresholds(y: np.ndarray, p: np.ndarray, n: int = 21, include: float | None = None) -> np.ndarray:
    """``n`` cut-offs from "miss no pneumonia" (the highest one that still flags every sick child: the lowest
    score of a sick child) to "no false alarms" (the lowest one that flags no healthy child: just above the
    highest score of a healthy child), evenly spaced, ascending; ``include`` (the model's own cut-off) added
    when it lies between. A prediction is PNEUMONIA when p >= cut-off."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    if not y.any() or y.all():
        raise ValueError("the trade-off needs both sick and healthy children")
    miss_none = float(p[y].min())
    no_alarm = float(np.nextafter(p[~y].max(), np.inf))
    lo, hi = sorted((miss_none, no_alarm))
    out = np.linspace(lo, hi, n)
    out[0], out[-1] = lo, hi  # exact ends (linspace may round them)
    if include is not None and lo < include < hi:
        out = np.unique(np.append(out, float(include)))
    return out


@dataclass(frozen=True)
class TradeOff:
    threshold: float
    sent_home_sick: int  # false negatives: pneumonia called NORMAL
    treated_needlessly: int  # false positives: NORMAL called PNEUMONIA
    sick: int
    healthy: int
    sentence: str


def tradeoff(y: np.ndarray, p: np.ndarray, threshold: float) -> TradeOff:
    """The counts of children sent home sick and treated needlessly at one cut-off, and the sentence."""
    y = np.asarray(y).astype(bool)
    flagged = np.asarray(p, dtype=np.float64) >= threshold
    fn, fp = int((~flagged & y).sum()), int((flagged & ~y).sum())
    sick, healthy = int(y.sum()), int((~y).sum())
    if fn == 0 and fp == 0:
        tail = "no child is sent home sick and none is treated needlessly"
    elif fn == 0:
        tail = f"no sick child is missed, at the price of {fp} healthy children treated needlessly"
    elif fp == 0:
        tail = f"no healthy child is treated needlessly, at the price of {fn} sick children sent home"
    else:
        tail = f"{fn} sick children are sent home and {fp} healthy children are treated needlessly"
    sentence = f"Of these {sick} sick and {healthy} healthy children, {tail}."
    return TradeOff(float(threshold), fn, fp, sick, healthy, sentence)


# ---------------------------------------------------------------- step 4: trust

@dataclass(frozen=True)
class Trust:
    confident: int  # X-rays the model is at least ``level`` sure about (either way)
    right: int  # of those, how many it got right
    confidence: float  # its mean confidence on them
    sentence: str


def trust(y: np.ndarray, p: np.ndarray, level: float = 0.9) -> Trust:
    """How often the model is right when it is at least ``level`` sure (P(pneumonia) >= level, or <= 1 - level),
    against how sure it says it is: "When the model is at least 90 % sure (540 X-rays) it says it is 98 % sure
    on average, and it is right on 86 % of them: it is more sure of itself than it should be." """
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    sure = (p >= level) | (p <= 1 - level)
    n = int(sure.sum())
    if n == 0:
        return Trust(0, 0, float("nan"), f"The model is never {pct(level)} sure on these X-rays.")
    said = p[sure] >= 0.5
    right = int((said == y[sure]).sum())
    conf = float(np.where(said, p[sure], 1 - p[sure]).mean())
    acc = right / n
    gap = round(100 * conf) - round(100 * acc)
    if gap >= 3:
        verdict = "it is more sure of itself than it should be"
    elif gap <= -3:
        verdict = "it is less sure of itself than it could be"
    else:
        verdict = "its confidence can be taken at its word"
    sentence = (f"When the model is at least {pct(level)} sure ({n} X-rays), it says it is {pct(conf)} sure on "
                f"average and it is right on {pct(acc)} of them: {verdict}.")
    return Trust(n, right, conf, sentence)


@dataclass(frozen=True)
class ValTest:
    val_accuracy: float
    test_accuracy: float
    sentence: str


def val_vs_test(y_val: np.ndarray, p_val: np.ndarray, y_test: np.ndarray, p_test: np.ndarray,
                threshold: float) -> ValTest:
    """The share right on validation and on test at the same cut-off, and why they differ."""
    acc = [float(((np.asarray(p, np.float64) >= threshold) == np.asarray(y).astype(bool)).mean())
           for y, p in ((y_val, p_val), (y_test, p_test))]
    nv, nt = len(y_val), len(y_test)
    head = (f"At the same cut-off the model is right on {pct(acc[0])} of the {nv} validation X-rays and on "
            f"{pct(acc[1])} of the {nt} test X-rays")
    if round(100 * acc[1]) < round(100 * acc[0]) - 2:
        why = (": the validation X-rays come from the same collection as the training ones and the cut-off was "
               "chosen on them, while the test X-rays were kept apart from both: the test is the fairer exam.")
    elif round(100 * acc[1]) > round(100 * acc[0]) + 2:
        why = ": the test set happened to be easier than the validation set."
    else:
        why = ": what it learned held up on X-rays it had never seen."
    return ValTest(acc[0], acc[1], head + why)


# ---------------------------------------------------------------- step 5: the hardest errors

def hardest_false_alarms(image_ids, y: np.ndarray, p: np.ndarray, threshold: float, n: int = 6) -> pd.DataFrame:
    """The healthy X-rays the model called PNEUMONIA with the highest pneumonia score: image_id, p_pneumonia,
    most confident first (ties by id), at most ``n``."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    mask = ~y & (p >= threshold)
    out = pd.DataFrame({"image_id": np.asarray(image_ids)[mask], "p_pneumonia": p[mask]})
    return out.sort_values(["p_pneumonia", "image_id"], ascending=[False, True]).head(n).reset_index(drop=True)


def false_alarm_sentence(y: np.ndarray, p: np.ndarray, threshold: float, shown: pd.DataFrame) -> str:
    """How many healthy X-rays were called PNEUMONIA, and how sure the model was on the worst ones shown."""
    y = np.asarray(y).astype(bool)
    p = np.asarray(p, dtype=np.float64)
    wrong, healthy = int((~y & (p >= threshold)).sum()), int((~y).sum())
    if wrong == 0:
        return f"The model called none of the {healthy} healthy X-rays PNEUMONIA."
    low = math.floor(100 * float(shown["p_pneumonia"].min()))  # rounded down: "or more" stays true
    return (f"The model called {wrong} of the {healthy} healthy X-rays PNEUMONIA, the {len(shown)} worst with a "
            f"pneumonia score of {low} % or more: being sure is not being right.")


# ---------------------------------------------------------------- step 2 too: a picture that is not an X-ray

def not_an_xray_sentence(flagged: bool | None, said: list[tuple[str, str, float]]) -> str:
    """What the checker that runs before the models (the out-of-distribution gate; ``flagged`` None without
    one) and the models make of a picture that is not a chest X-ray. ``said``: (model, its label, its pneumonia
    score) for each model shown."""
    answers = " and ".join(f"{m} says {label} (pneumonia score {pct(p)})" for m, label, p in said)
    if flagged is None:
        return (f"No checker runs before the models here, and they answer: {answers}. A model answers whatever it "
                "is shown.")
    if flagged:
        return (f"The checker that runs before the models says this is not a chest X-ray, yet the models answer "
                f"anyway: {answers}. A model answers whatever it is shown; only the checker can say "
                "“this is not what I learned from”.")
    return (f"The checker that runs before the models takes this picture for a chest X-ray, and the models answer: "
            f"{answers}. Here the checker itself was fooled.")


# ---------------------------------------------------------------- Predict: the summary above the table

@dataclass(frozen=True)
class VerdictSummary:
    model: str  # the best model's row
    label: str  # its verdict
    p_pneumonia: float | None
    threshold: float | None  # None: it decides by the largest probability
    threshold_origin: str  # e.g. "Youden's J on validation", "stored in the checkpoint"
    agree: int  # models whose verdict says the same about pneumonia (pneumonia or not)
    total: int  # models whose verdict says anything about pneumonia (bacteria-vs-virus rows do not)
    sentence: str


def says_pneumonia(verdict) -> bool | None:
    """Whether a verdict (``inference.verdicts.Verdict``) calls the image pneumonia (any kind); None for a
    bacteria-vs-virus model, which assumes it."""
    if "NORMAL" not in verdict.classes:
        return None
    return verdict.label != "NORMAL"


def verdict_summary(verdicts: list, best_key: str | None) -> VerdictSummary | None:
    """The readable line above Predict's table: the best model's verdict (``best_key``: the source key of
    ``selection.best_model``; its single-model binary row, else the first binary row, else the first row that
    says anything about pneumonia), P(pneumonia) against its threshold and where that came from, and how
    many models agree with it. None without such a row."""
    rows = [v for v in verdicts if says_pneumonia(v) is not None]
    binary = [v for v in rows if v.task == "binary"]
    top = next((v for v in binary if v.members == (best_key,)), None) or next(iter(binary + rows), None)
    if top is None:
        return None
    mine = says_pneumonia(top)
    agree = sum(says_pneumonia(v) == mine for v in rows)
    origin = top.decided_by.rsplit(" (", 1)[-1].rstrip(")")  # "P(PNEUMONIA) ≥ 0.641 (Youden's J on validation)"
    p, t = top.p_pneumonia, top.threshold
    if t is not None and p is not None:
        rule = f"P(pneumonia) {p:.3f} {'≥' if p >= t else '<'} its threshold {t:.3f} ({origin})"
    else:
        rule = f"the largest probability{'' if p is None else f', P(pneumonia) {p:.3f}'}"
    others = f"{agree - 1} of the other {len(rows) - 1} models agree." if len(rows) > 1 else "No other model to ask."
    which = "the best model on validation" if top.members == (best_key,) else "the first model of the table"
    sentence = f"**{top.label}** by {top.model}, {which}: {rule}. {others}"
    return VerdictSummary(top.model, top.label, p, t, origin, agree, len(rows), sentence)
