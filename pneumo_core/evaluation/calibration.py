"""Calibration: reliability bins, ECE/MCE/Brier/NLL, temperature scaling.

Binary sets use P(positive) against y in {0, 1}; multi-class sets use the top label (confidence = max
probability, hit = argmax is right) or one class against the rest.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from pneumo_core.evaluation.metrics import log_loss

STRATEGIES = ("uniform", "quantile")

#: one plain sentence per calibration score, for the app to show beside the numbers (lower is better for all)
EXPLANATIONS: dict[str, str] = {
    "ECE": "Expected calibration error: the average gap between the predicted probability and how often the "
           "outcome actually happened, over the bins, weighted by the images in each (0 = perfectly calibrated).",
    "MCE": "Maximum calibration error: the largest such gap in any single bin, the worst case.",
    "Brier": "Brier score: the mean squared difference between the predicted probability and what happened "
             "(1 or 0); it rewards being both right and honestly confident.",
    "NLL": "Negative log-likelihood: the average surprise at the true answer; it punishes confident mistakes "
           "hardest.",
}

#: what the two bin controls do
BIN_HELP: dict[str, str] = {
    "count": "How many bins the predicted probabilities are grouped into for the reliability diagram, ECE and MCE.",
    "strategy": "Equal width: bins of the same probability range (some may hold few images). Equal mass: bins "
                "holding the same number of images.",
}


@dataclass
class Reliability:
    """Per non-empty bin: edges, count, mean confidence, observed frequency."""

    lower: np.ndarray
    upper: np.ndarray
    count: np.ndarray
    confidence: np.ndarray
    frequency: np.ndarray

    @property
    def n(self) -> int:
        return int(self.count.sum())

    @property
    def ece(self) -> float:
        if self.n == 0:
            return float("nan")
        return float(np.sum(self.count * np.abs(self.frequency - self.confidence)) / self.n)

    @property
    def mce(self) -> float:
        return float(np.max(np.abs(self.frequency - self.confidence))) if len(self.count) else float("nan")

    def to_dict(self) -> dict:
        return {k: getattr(self, k).tolist() for k in ("lower", "upper", "count", "confidence", "frequency")}


def bin_edges(conf: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> np.ndarray:
    if n_bins < 1:
        raise ValueError("n_bins must be at least 1")
    if strategy == "uniform":
        return np.linspace(0.0, 1.0, n_bins + 1)
    if strategy == "quantile":
        edges = np.quantile(conf, np.linspace(0, 1, n_bins + 1)) if len(conf) else np.linspace(0, 1, n_bins + 1)
        edges[0], edges[-1] = 0.0, 1.0
        return np.maximum.accumulate(edges)
    raise ValueError(f"strategy must be one of {STRATEGIES}, not {strategy!r}")


def bin_index(conf: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each confidence: [e_i, e_{i+1}), the last bin closed so that 1.0 falls in it."""
    n_bins = len(edges) - 1
    return np.clip(np.searchsorted(edges, conf, side="right") - 1, 0, n_bins - 1)


def reliability(conf: np.ndarray, hit: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> Reliability:
    """Reliability bins of confidences ``conf`` against outcomes ``hit`` (0/1)."""
    conf = np.asarray(conf, dtype=np.float64)
    hit = np.asarray(hit, dtype=np.float64)
    edges = bin_edges(conf, n_bins, strategy)
    idx = bin_index(conf, edges)
    k = len(edges) - 1
    count = np.bincount(idx, minlength=k)
    sum_conf = np.bincount(idx, weights=conf, minlength=k)
    sum_hit = np.bincount(idx, weights=hit, minlength=k)
    keep = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        return Reliability(edges[:-1][keep], edges[1:][keep], count[keep],
                           (sum_conf / count)[keep], (sum_hit / count)[keep])


def binary_reliability(y: np.ndarray, p: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> Reliability:
    return reliability(p, y, n_bins, strategy)


def top_label_reliability(y: np.ndarray, probs: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> Reliability:
    probs = np.asarray(probs)
    return reliability(probs.max(1), probs.argmax(1) == np.asarray(y), n_bins, strategy)


def class_reliability(y: np.ndarray, probs: np.ndarray, k: int, n_bins: int = 15,
                      strategy: str = "uniform") -> Reliability:
    """Class ``k`` against the rest."""
    return reliability(np.asarray(probs)[:, k], np.asarray(y) == k, n_bins, strategy)


def brier(y: np.ndarray, probs: np.ndarray) -> float:
    """Binary: mean (p - y)^2 with ``probs`` = P(positive). Multi-class (2-D): mean over rows of
    sum_k (p_k - 1[y=k])^2."""
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y)
    if probs.ndim == 1:
        return float(np.mean((probs - y) ** 2))
    onehot = np.eye(probs.shape[1])[y]
    return float(np.mean(np.sum((probs - onehot) ** 2, axis=1)))


def nll(y: np.ndarray, probs: np.ndarray) -> float:
    """Negative log-likelihood (:func:`pneumo_core.evaluation.metrics.log_loss`); 1-D ``probs`` = P(positive)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = np.stack([1 - probs, probs], 1)
    return log_loss(y, probs)


def calibration_summary(y: np.ndarray, probs: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> dict:
    """ECE, MCE, Brier, NLL and the bins. ``probs`` (N, K); two columns -> binary on column 1."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 2 and probs.shape[1] == 2:
        rel, b = binary_reliability(y, probs[:, 1], n_bins, strategy), brier(y, probs[:, 1])
    else:
        rel, b = top_label_reliability(y, probs, n_bins, strategy), brier(y, probs)
    return {"ece": rel.ece, "mce": rel.mce, "brier": b, "nll": nll(y, probs), "bins": rel.to_dict(),
            "n_bins": n_bins, "strategy": strategy}


# ---------------------------------------------------------------- temperature scaling

def logits_from_probs(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Logits that reproduce stored probabilities: log p (multi-class, up to a constant)."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0))


def apply_temperature(logits: np.ndarray, t: float) -> np.ndarray:
    return softmax(np.asarray(logits, dtype=np.float64) / t, axis=1)


def _nll_at(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(-np.mean(log_softmax(logits / t, axis=1)[np.arange(len(y)), y]))


def fit_temperature(logits: np.ndarray, y: np.ndarray, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """T minimising validation NLL of softmax(logits / T); searched over log T, never worse than T = 1."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if logits.ndim == 1 or logits.shape[1] == 1:  # one binary logit z -> [0, z]
        z = logits.reshape(-1)
        logits = np.stack([np.zeros_like(z), z], 1)
    res = minimize_scalar(lambda lt: _nll_at(logits, y, float(np.exp(lt))),
                          bounds=(np.log(bounds[0]), np.log(bounds[1])), method="bounded",
                          options={"xatol": 1e-6})
    # a coarse grid guards the bounded search against a flat or non-convex start
    grid = np.exp(np.linspace(np.log(bounds[0]), np.log(bounds[1]), 60))
    candidates = [1.0, float(np.exp(res.x)), *grid.tolist()]
    return float(min(candidates, key=lambda t: _nll_at(logits, y, t)))


def temperature_scale_probs(val_probs: np.ndarray, val_y: np.ndarray,
                            test_probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Fit T on validation probabilities (through their logits) and apply it to test probabilities."""
    t = fit_temperature(logits_from_probs(val_probs), val_y)
    return t, apply_temperature(logits_from_probs(test_probs), t)


# ---------------------------------------------------------------- temperature scaling on both splits

def calibration_scores(y: np.ndarray, probs: np.ndarray, n_bins: int = 15, strategy: str = "uniform"
                       ) -> dict[str, float]:
    """ECE, MCE, Brier and NLL (the keys of :data:`EXPLANATIONS`) of ``probs`` (N, K): two columns are scored
    on P(classes[1]), more on the top label (ECE, MCE) and every class (Brier, NLL)."""
    probs = np.asarray(probs, dtype=np.float64)
    binary = probs.shape[1] == 2
    rel = (binary_reliability(y, probs[:, 1], n_bins, strategy) if binary
           else top_label_reliability(y, probs, n_bins, strategy))
    return {"ECE": rel.ece, "MCE": rel.mce, "Brier": brier(y, probs[:, 1] if binary else probs), "NLL": nll(y, probs)}


@dataclass(frozen=True)
class TemperatureShift:
    """Temperature scaling fitted on validation and applied to validation and to test: the temperature, the
    scaled probabilities, and :func:`calibration_scores` before and after on each split."""

    temperature: float
    val_scaled: np.ndarray
    test_scaled: np.ndarray
    scores: dict[str, dict[str, dict[str, float]]]  # split ("validation", "test") -> "before"/"after" -> scores

    @property
    def hurts_test(self) -> bool:
        """Whether scaling raises test NLL (the score the temperature is fitted to lower) at three decimals."""
        s = self.scores["test"]
        return round(s["after"]["NLL"], 3) > round(s["before"]["NLL"], 3)

    def rows(self) -> list[dict]:
        """One row per split: each score before and after scaling (a table for the page and the CLI)."""
        return [{"split": split, **{f"{k} {when}": s[when][k] for k in ("ECE", "NLL") for when in ("before", "after")}}
                for split, s in self.scores.items()]


def temperature_on_splits(val_y: np.ndarray, val_probs: np.ndarray, test_y: np.ndarray, test_probs: np.ndarray,
                          n_bins: int = 15, strategy: str = "uniform") -> TemperatureShift:
    """Fit T on validation (:func:`fit_temperature` on the probabilities' logits) and score both splits before
    and after dividing their logits by it."""
    t = fit_temperature(logits_from_probs(val_probs), val_y)
    val_scaled = apply_temperature(logits_from_probs(val_probs), t)
    test_scaled = apply_temperature(logits_from_probs(test_probs), t)
    scores = {split: {"before": calibration_scores(y, p, n_bins, strategy),
                      "after": calibration_scores(y, q, n_bins, strategy)}
              for split, y, p, q in (("validation", val_y, val_probs, val_scaled),
                                     ("test", test_y, test_probs, test_scaled))}
    return TemperatureShift(t, val_scaled, test_scaled, scores)


def _move(before: float, after: float) -> str:
    return "leaves" if round(before, 3) == round(after, 3) else "lowers" if after < before else "raises"


def temperature_sentence(ts: TemperatureShift) -> str:
    """What temperature scaling does to NLL and ECE on each split, in one plain sentence; when it raises test
    NLL, it says the calibration fitted on validation does not carry over to test."""
    v, t = ts.scores["validation"], ts.scores["test"]

    def change(split: str, s: dict, score: str) -> str:
        b, a = s["before"][score], s["after"][score]
        move = _move(b, a)
        if move == "leaves":
            return f"leaves {split} {score} at {b:.3f}"
        return f"{move} {split} {score} {b:.3f} -> {a:.3f}"

    head = f"Fitted on validation (T = {ts.temperature:.3f}), temperature scaling {change('validation', v, 'NLL')}"
    test_ece = change("test", t, "ECE")
    if ts.hurts_test:
        return (f"{head} but {change('test', t, 'NLL')} (and {test_ece}): the test images are shifted, and a "
                "calibration fitted on validation does not carry over.")
    if _move(t["before"]["NLL"], t["after"]["NLL"]) == "leaves":
        tail = "on test it makes no difference to NLL"
    elif round(t["after"]["ECE"], 3) > round(t["before"]["ECE"], 3):
        tail = "it lowers test NLL but not test ECE"
    else:
        tail = "on these test images it carries over"
    return f"{head} and {change('test', t, 'NLL')} (and {test_ece}): {tail}."


# ---------------------------------------------------------------- what the Calibration page shows

def reliability_of(y: np.ndarray, probs: np.ndarray, n_bins: int = 15, strategy: str = "uniform") -> Reliability:
    """The reliability diagram a set is judged by: P(classes[1]) for two classes, the top-label confidence for
    more (as :func:`calibration_scores` scores it)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[1] == 2:
        return binary_reliability(y, probs[:, 1], n_bins, strategy)
    return top_label_reliability(y, probs, n_bins, strategy)


def confidence_name(n_classes: int) -> str:
    """What :func:`reliability_of` puts on its x axis, in words."""
    return "P(pneumonia)" if n_classes == 2 else "top-label confidence"


def score_rows(y: np.ndarray, probs: np.ndarray, scaled: np.ndarray | None = None, temperature: float = 1.0,
               n_bins: int = 15, strategy: str = "uniform") -> list[dict]:
    """The scores table: :func:`calibration_scores` of the set as trained and, given ``scaled``, after dividing
    its logits by ``temperature``."""
    rows = [{"set": "as trained", **calibration_scores(y, probs, n_bins, strategy)}]
    if scaled is not None:
        rows.append({"set": f"temperature T = {temperature:.3f}", **calibration_scores(y, scaled, n_bins, strategy)})
    return rows
