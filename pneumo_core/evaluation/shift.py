"""Validation against test for one model: the figures of each split at the threshold chosen on validation, with
95 % intervals that resample patients, and a paragraph that says in words what those numbers show.

Everything is on P(pneumonia) (a three-class set's binary view: BACTERIA + VIRUS). The threshold is the
model's validation threshold (:func:`pneumo_core.evaluation.selection.pneumonia_threshold_on`, the one the
bundle stores); ECE and the reliability diagram use 15 bins of equal width.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.bootstrap import bootstrap_binary, patient_groups
from pneumo_core.evaluation.calibration import Reliability, binary_reliability
from pneumo_core.evaluation.predictions import Predictions
from pneumo_core.models.keys import ModelKey

#: the figures compared, in the order shown, with their names in words
FIGURES: dict[str, str] = {"sensitivity": "Sensitivity", "specificity": "Specificity", "auroc": "AUROC", "ece": "ECE"}
SPLITS = ("validation", "test")
#: the tasks whose sets have a P(pneumonia) (what the Thresholds page lists)
TASKS = ("binary", "three_class")
N_BINS = 15
HIST_BINS = 20


@dataclass(frozen=True)
class SplitFigures:
    """One split of one model at the validation threshold: each figure of :data:`FIGURES` as
    ``{value, low, high}`` (95 % interval over resampled patients), the P(pneumonia) of its NORMAL images and
    its reliability bins."""

    split: str
    threshold: float
    n_images: int
    n_normal: int
    n_patients: int
    n_boot: int
    figures: dict[str, dict[str, float]]
    normal_p: np.ndarray
    reliability: Reliability

    @property
    def n_pneumonia(self) -> int:
        return self.n_images - self.n_normal

    @property
    def normal_below(self) -> float:
        """Share of NORMAL images with P(pneumonia) below the threshold (= specificity)."""
        return float(np.mean(self.normal_p < self.threshold)) if len(self.normal_p) else float("nan")

    @property
    def normal_median(self) -> float:
        return float(np.median(self.normal_p)) if len(self.normal_p) else float("nan")

    def histogram(self, bins: int = HIST_BINS) -> tuple[np.ndarray, np.ndarray]:
        """(edges, share): the NORMAL images' P(pneumonia) in ``bins`` equal bins over [0, 1], each bin's share
        of the split's NORMAL images (so splits of different sizes compare)."""
        edges = np.linspace(0.0, 1.0, bins + 1)
        counts = np.histogram(np.clip(self.normal_p, 0.0, 1.0), edges)[0].astype(np.float64)
        return edges, counts / max(len(self.normal_p), 1)

    def to_dict(self) -> dict:
        edges, share = self.histogram()
        return {"split": self.split, "threshold": self.threshold, "n_images": self.n_images,
                "n_normal": self.n_normal, "n_pneumonia": self.n_pneumonia, "n_patients": self.n_patients,
                "n_boot": self.n_boot, **{k: dict(self.figures[k]) for k in FIGURES},
                "normal_below_threshold": self.normal_below, "normal_median": self.normal_median,
                "normal_histogram": {"edges": edges.tolist(), "share": share.tolist()},
                "reliability": self.reliability.to_dict()}


def split_figures(y: np.ndarray, p: np.ndarray, threshold: float, image_ids: Sequence[str], split: str,
                  n_boot: int = 1000, seed: int = 0) -> SplitFigures:
    """The figures of one split: ``y`` in {0 NORMAL, 1 PNEUMONIA}, ``p`` = P(pneumonia), decided at
    ``threshold`` (P >= threshold is PNEUMONIA); intervals from :func:`bootstrap_binary` over the patients of
    ``image_ids``."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    groups = patient_groups(image_ids)
    figs = bootstrap_binary(y, p, threshold, n_boot=n_boot, seed=seed, metrics=tuple(FIGURES), n_bins=N_BINS,
                            groups=groups)
    return SplitFigures(split, float(threshold), len(y), int((y == 0).sum()), len(np.unique(groups)), n_boot,
                        figs, p[y == 0], binary_reliability(y, p, N_BINS))


def shift_figures(val: Predictions, test: Predictions, n_boot: int = 1000, seed: int = 0
                  ) -> tuple[SplitFigures, SplitFigures]:
    """Validation and test of one model at its validation threshold (rows with unknown labels left out)."""
    val, test = val.labelled(), test.labelled()
    t = selection.pneumonia_threshold_on(val)
    return tuple(split_figures(s.y_binary, s.p_positive, t, s.frame["image_id"], name, n_boot, seed)
                 for name, s in zip(SPLITS, (val, test)))


def interval_text(d: dict[str, float]) -> str:
    """``0.985 [0.973, 0.995]``; the value alone when there is no interval."""
    if not (np.isfinite(d["low"]) and np.isfinite(d["high"])):
        return f"{d['value']:.3f}"
    return f"{d['value']:.3f} [{d['low']:.3f}, {d['high']:.3f}]"


def apart(a: dict[str, float], b: dict[str, float]) -> bool:
    """Whether two 95 % intervals do not overlap (False when either is missing)."""
    if not all(np.isfinite(v) for v in (a["low"], a["high"], b["low"], b["high"])):
        return False
    return a["high"] < b["low"] or b["high"] < a["low"]


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _word(name: str) -> str:
    """A figure's name inside a sentence: lower case, acronyms kept."""
    return name if name.isupper() else name.lower()


def _names(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def shift_paragraph(val: SplitFigures, test: SplitFigures) -> str:
    """What the two splits' figures show, in plain words and their own numbers: where NORMAL images fall
    against the threshold, each figure side by side, and which differ beyond their intervals."""
    f, g = val.figures, test.figures
    out = [f"On validation, {_pct(val.normal_below)} of NORMAL images fall below the threshold chosen there "
           f"(P(pneumonia) = {val.threshold:.3f}); on test, {_pct(test.normal_below)}. The median NORMAL image "
           f"has P(pneumonia) {val.normal_median:.2f} on validation and {test.normal_median:.2f} on test."]
    out.append("Validation against test: " + "; ".join(
        f"{_word(name)} {interval_text(f[k])} against {interval_text(g[k])}" for k, name in FIGURES.items()) + ".")
    differ = [name for k, name in FIGURES.items() if apart(f[k], g[k])]
    no_intervals = not all(np.isfinite(d[e]) for d in (*f.values(), *g.values()) for e in ("low", "high"))
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        names = _names([differ[0]] + [_word(d) for d in differ[1:]])
        out.append(f"{names} {verb} between the splits beyond their 95 % intervals: the test images are "
                   "shifted from validation, and what was read on validation (the threshold, the probabilities) "
                   "does not describe them as it stands.")
    elif no_intervals:
        out.append("Without intervals, these figures alone do not say whether the splits differ.")
    else:
        out.append("Every figure agrees between the splits within its 95 % interval: these data show no shift "
                   "between validation and test.")
    return " ".join(out)


def shift_rows(val: SplitFigures, test: SplitFigures) -> list[dict]:
    """The figures as a table: one row per figure, each split's value and its 95 % interval."""
    rows = []
    for k, name in FIGURES.items():
        row = {"figure": name}
        for s in (val, test):
            d = s.figures[k]
            row[s.split] = d["value"]
            row[f"{s.split} 95 % CI"] = (f"{d['low']:.3f} – {d['high']:.3f}"
                                         if np.isfinite(d["low"]) and np.isfinite(d["high"]) else "")
        rows.append(row)
    row = {"figure": "Median P(pneumonia) of NORMAL images"}
    for s in (val, test):
        row.update({s.split: s.normal_median, f"{s.split} 95 % CI": ""})
    rows.append(row)
    return rows


def sets_line(val: SplitFigures, test: SplitFigures) -> str:
    """Both splits' sizes and the threshold in one line."""
    def one(s: SplitFigures) -> str:
        return (f"{s.n_images} images ({s.n_normal} NORMAL, {s.n_pneumonia} PNEUMONIA) of {s.n_patients} patients")
    return f"Validation: {one(val)} · test: {one(test)} · threshold P(pneumonia) ≥ {val.threshold:.3f}"


# ---------------------------------------------------------------- naming a model

def choice_key(opt: ModelKey) -> str:
    """``task/arch`` (an ensemble or combined model) or ``task/arch/seedN``."""
    return ModelKey(*opt).source_key


def choice_label(opt: ModelKey) -> str:
    """The name the app's pages give a prediction set: ``task · arch`` or ``task · arch · seed N``."""
    return ModelKey(*opt).label


def resolve_choice(root: str | Path, key: str, tasks: tuple[str, ...] = TASKS) -> ModelKey:
    """The prediction set a key names: ``binary/resnet18`` (that architecture's first set, best first: its best
    seed), ``binary/resnet18/seed1``, ``binary/ensemble``, or a page's name (``binary · resnet18 · seed 2``).
    A :class:`PneumoError` listing the keys there are when none matches."""
    choices = selection.set_choices(root, tasks)
    try:
        want = ModelKey.parse(key.lower())
    except PneumoError:
        want = None
    for opt in choices if want is not None else ():
        if opt[:2] == want[:2] and (want.seed is None or opt.seed == want.seed):
            return opt
    keys = list(dict.fromkeys(choice_key(o) for o in choices))
    raise PneumoError(f"no prediction set {key[:80]!r} of {', '.join(tasks)}; there are: {', '.join(keys) or 'none'}")
