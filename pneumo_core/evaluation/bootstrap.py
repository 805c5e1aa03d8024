"""Uncertainty: bootstrap confidence intervals (seeded, vectorised) and seed aggregation. The project's figures
resample patients (a cluster bootstrap, :func:`cluster_weight_blocks`) and, over several seeds, the seeds too
(:func:`run_counts`); rows within each class (:func:`stratified_indices`) where there are no patients.

Memory is bounded: the (resamples x rows) weight matrix is built :data:`BLOCK_ELEMENTS` entries at a
time (:func:`weight_blocks`, the very resamples :func:`stratified_indices` draws), and a bootstrap of
more than :data:`MAX_WORK` resamples x rows is refused with a :class:`~pneumo_core.errors.LimitError`.
"""
from __future__ import annotations

from typing import Iterable, Iterator, Sequence

import numpy as np

from pneumo_core.data.datasets import kermany_patient
from pneumo_core.errors import LimitError
from pneumo_core.evaluation.calibration import bin_edges, bin_index
from pneumo_core.evaluation.metrics import auroc, f1_from_counts, rates

DEFAULT_METRICS = ("auroc", "sensitivity", "specificity", "f1", "ece")
#: entries of the (resamples x rows) weight matrix held at once (~32 MB as float64)
BLOCK_ELEMENTS = 4_000_000
#: most resamples x rows one bootstrap takes (200 resamples of 2 M rows is 4e8)
MAX_WORK = 2_000_000_000


def stratified_indices(y: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """(n_boot, N) resample indices; each class is resampled within itself, keeping class counts."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(y)), dtype=np.int64)
    col = 0
    for cls in np.unique(y):
        members = np.flatnonzero(y == cls)
        out[:, col:col + len(members)] = members[rng.integers(0, len(members), (n_boot, len(members)))]
        col += len(members)
    return out


def check_work(n: int, n_boot: int) -> None:
    """A :class:`LimitError` unless 0 <= ``n_boot`` and ``n_boot`` x ``n`` <= :data:`MAX_WORK`."""
    if n_boot < 0:
        raise LimitError(f"the number of bootstrap resamples must be 0 or more, not {n_boot}")
    if n_boot * n > MAX_WORK:
        raise LimitError(f"a bootstrap of {n_boot:,} resamples over {n:,} rows is more work than we take "
                         f"({MAX_WORK:,} resamples x rows); use at most {max(1, MAX_WORK // max(n, 1)):,} resamples")


def _weights(idx: np.ndarray, n: int) -> np.ndarray:
    """How often each item is drawn in each resample: (n_boot, N)."""
    b = idx.shape[0]
    flat = (idx + (np.arange(b, dtype=np.int64) * n)[:, None]).ravel()
    return np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)


def weight_blocks(y: np.ndarray, n_boot: int, seed: int = 0, block: int | None = None) -> Iterator[np.ndarray]:
    """The resample weights of :func:`stratified_indices` (``y, n_boot, seed``) in consecutive blocks of
    resamples, each block at most ``block`` (default :data:`BLOCK_ELEMENTS`) entries (at least one resample):
    the same resamples, never the
    whole matrix. Each class's draws are a separate stretch of the random stream, so the generator's state
    at the start of each stretch is found first (drawing and dropping), then every stretch is read a block
    of resamples at a time."""
    y = np.asarray(y)
    n = len(y)
    rows = max(1, (BLOCK_ELEMENTS if block is None else block) // max(n, 1))
    if rows >= n_boot:
        if n_boot > 0:
            yield _weights(stratified_indices(y, n_boot, seed), n)
        return
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(y == cls) for cls in np.unique(y)]
    gens = []
    for k, m in enumerate(members):
        g = np.random.Generator(type(rng.bit_generator)())
        g.bit_generator.state = rng.bit_generator.state
        gens.append(g)
        if k < len(members) - 1:  # skip this class's stretch to find where the next one starts
            for b0 in range(0, n_boot, rows):
                rng.integers(0, len(m), (min(rows, n_boot - b0), len(m)))
    for b0 in range(0, n_boot, rows):
        b = min(rows, n_boot - b0)
        idx = np.concatenate([m[g.integers(0, len(m), (b, len(m)))] for m, g in zip(members, gens)], axis=1)
        yield _weights(idx, n)


def cluster_weight_blocks(groups: Sequence, n_boot: int, seed: int = 0, block: int | None = None
                          ) -> Iterator[np.ndarray]:
    """Resample weights (resamples x N) of a cluster bootstrap: as many groups (patients) as there are, drawn with
    replacement; each row weighs as often as its group was drawn. A patient's images move together, so a
    patient with many images does not narrow the interval as that many independent images would."""
    _, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n, g = len(inv), int(inv.max()) + 1 if len(inv) else 0
    rows = max(1, (BLOCK_ELEMENTS if block is None else block) // max(n, g, 1))
    rng = np.random.default_rng(seed)
    for b0 in range(0, n_boot, rows):
        b = min(rows, n_boot - b0)
        draws = rng.integers(0, g, (b, g)) + (np.arange(b, dtype=np.int64) * g)[:, None]
        counts = np.bincount(draws.ravel(), minlength=b * g).reshape(b, g).astype(np.float64)
        yield counts[:, inv]


def resample_blocks(y: np.ndarray, n_boot: int, seed: int = 0, groups: Sequence | None = None) -> Iterator[np.ndarray]:
    """The bootstrap's weights a block at a time: patients resampled when ``groups`` are given (the figures this
    project reports), else rows within each class (:func:`weight_blocks`)."""
    return weight_blocks(y, n_boot, seed) if groups is None else cluster_weight_blocks(groups, n_boot, seed)


def patient_groups(image_ids: Sequence[str]) -> np.ndarray:
    """The patient of each image id (Kermany names: ``personN``, ``IM-NNNN``; other names: each its own)."""
    return np.array([kermany_patient(str(i).replace("\\", "/").rsplit("/", 1)[-1]) for i in image_ids])


def run_counts(n_runs: int, n_boot: int, seed: int = 0) -> np.ndarray:
    """(n_boot, n_runs): how often each run (seed) is drawn in each resample of the runs, with replacement;
    all ones for a single run. The second level of a two-level bootstrap (retraining variation)."""
    if n_runs <= 1:
        return np.ones((n_boot, max(n_runs, 1)))
    rng = np.random.default_rng(seed + 7919)  # a stream apart from the rows'
    draws = rng.integers(0, n_runs, (n_boot, n_runs)) + (np.arange(n_boot, dtype=np.int64) * n_runs)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n_runs).reshape(n_boot, n_runs).astype(np.float64)


def _binned(w: np.ndarray, bins: np.ndarray, n_bins: int, v: np.ndarray) -> np.ndarray:
    """(b, n_bins): per resample, the weighted sum of ``v`` in each bin."""
    b = w.shape[0]
    flat = ((np.arange(b, dtype=np.int64) * n_bins)[:, None] + bins[None, :]).ravel()
    return np.bincount(flat, weights=(w * v[None, :]).ravel(), minlength=b * n_bins).reshape(b, n_bins)


def _auroc_weighted(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """AUROC of each weighted resample by Mann-Whitney: pairs (pos, neg) with pos > neg, ties half."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    if len(pos) == 0 or len(neg) == 0:
        return np.full(w.shape[0], np.nan)
    if len(pos) * len(neg) <= 4_000_000:
        sp, sn = p[pos][:, None], p[neg][None, :]
        pair = (sp > sn) + 0.5 * (sp == sn)
        num = np.einsum("bi,ij,bj->b", w[:, pos], pair, w[:, neg], optimize=True)
        return num / (w[:, pos].sum(1) * w[:, neg].sum(1))
    # large sets: rank-based, one resample at a time
    order = np.argsort(p, kind="mergesort")
    out = np.empty(w.shape[0])
    ps, yb = p[order], y[order]
    lo = np.searchsorted(ps, ps, side="left")
    hi = np.searchsorted(ps, ps, side="right")
    for b in range(w.shape[0]):
        wb = w[b, order]
        wn = np.cumsum(wb * (yb == 0))
        # negatives strictly below each positive, ties half
        below = np.where(lo > 0, wn[lo - 1], 0.0)
        tie = wn[hi - 1] - below
        wp = wb * (yb == 1)
        out[b] = np.sum(wp * (below + 0.5 * tie)) / (wp.sum() * wn[-1])
    return out


def bootstrap_binary(
    y: np.ndarray, p: np.ndarray, threshold: float = 0.5, n_boot: int = 1000, seed: int = 0,
    metrics: Sequence[str] = DEFAULT_METRICS, n_bins: int = 15, level: float = 0.95, groups: Sequence | None = None,
) -> dict[str, dict[str, float]]:
    """Percentile CIs of binary metrics over resamples of patients (``groups``) or, without them, of rows within
    each class: {metric: {value, low, high}}."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    check_work(len(y), n_boot)
    pred = (p >= threshold).astype(np.float64)
    if "ece" in metrics:
        edges = bin_edges(p, n_bins, "uniform")
        bins, nb = bin_index(p, edges), len(edges) - 1
    parts: dict[str, list[np.ndarray]] = {}
    for w in resample_blocks(y, n_boot, seed, groups):
        block = rates(tp=w @ (pred * y), fp=w @ (pred * (1 - y)), tn=w @ ((1 - pred) * (1 - y)),
                      fn=w @ ((1 - pred) * y))
        if "auroc" in metrics:
            block["auroc"] = _auroc_weighted(p, y, w)
        if "ece" in metrics:
            sconf, shit = _binned(w, bins, nb, p), _binned(w, bins, nb, y.astype(np.float64))
            block["ece"] = np.abs(sconf - shit).sum(1) / w.sum(1)
        for k, v in block.items():
            parts.setdefault(k, []).append(v)
    samples = {k: np.concatenate(v) for k, v in parts.items()}
    full = point_estimates(y, p, threshold, n_bins)
    alpha = (1 - level) / 2
    out = {}
    for m in metrics:
        s = samples.get(m, np.array([]))
        s = s[np.isfinite(s)]
        lo, hi = (np.quantile(s, [alpha, 1 - alpha]) if len(s) else (np.nan, np.nan))
        out[m] = {"value": full[m], "low": float(lo), "high": float(hi)}
    return out


def point_estimates(y: np.ndarray, p: np.ndarray, threshold: float, n_bins: int = 15) -> dict[str, float]:
    from pneumo_core.evaluation.calibration import binary_reliability
    from pneumo_core.evaluation.metrics import binary_at

    d = binary_at(y, p, threshold)
    d["auroc"] = auroc(y, p)
    d["ece"] = binary_reliability(y, p, n_bins).ece
    return d


def mean_std(values: Iterable[dict]) -> dict[str, dict[str, float]]:
    """Mean and sample std (ddof=1; 0 for one run) of every numeric key shared by all dicts."""
    runs = list(values)
    if not runs:
        return {}
    keys = [k for k, v in runs[0].items() if isinstance(v, (int, float)) and all(k in r for r in runs)]
    out = {}
    for k in keys:
        arr = np.array([float(r[k]) for r in runs])
        out[k] = {"mean": float(np.nanmean(arr)), "std": float(np.nanstd(arr, ddof=1)) if len(arr) > 1 else 0.0,
                  "n": len(arr)}
    return out


def _f1_counts(w: np.ndarray, pred: np.ndarray, y: np.ndarray, c: int) -> np.ndarray:
    return f1_from_counts(w @ ((pred == c) & (y == c)), w @ ((pred == c) & (y != c)), w @ ((pred != c) & (y == c)))


def resampled_metrics(y: np.ndarray, probs: np.ndarray, threshold: float | None, w: np.ndarray,
                      classes: Sequence[str]) -> dict[str, np.ndarray]:
    """Headline metrics of one prediction set on each weighted resample (rows of ``w``).

    Two classes: accuracy, sensitivity, specificity, f1, auroc at ``threshold`` on P(classes[1]);
    more: accuracy, macro_f1, f1_<CLASS>, auroc (macro one-vs-rest), the class of largest probability.
    """
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    n = w.sum(1)
    if probs.shape[1] == 2:
        p = probs[:, 1]
        pred = (p >= (0.5 if threshold is None else threshold)).astype(np.int64)
        r = rates(tp=w @ ((pred == 1) & (y == 1)), fp=w @ ((pred == 1) & (y == 0)), tn=w @ ((pred == 0) & (y == 0)),
                  fn=w @ ((pred == 0) & (y == 1)))
        return {"accuracy": r["accuracy"], "recall": r["sensitivity"], "specificity": r["specificity"],
                "f1": r["f1"], "auroc": _auroc_weighted(p, y, w)}
    pred = probs.argmax(1)
    per = {c: _f1_counts(w, pred, y, k) for k, c in enumerate(classes)}
    out = {"accuracy": (w @ (pred == y)) / n, "macro_f1": np.mean(list(per.values()), axis=0)}
    out.update({f"f1_{c}": v for c, v in per.items()})
    out["auroc"] = np.mean([_auroc_weighted(probs[:, k], (y == k).astype(np.int64), w)
                            for k in range(len(classes))], axis=0)
    return out


def bootstrap_runs(y: np.ndarray, runs: Sequence[tuple[np.ndarray, float | None]], classes: Sequence[str],
                   n_boot: int = 1000, seed: int = 0, level: float = 0.95, groups: Sequence | None = None,
                   resample_runs: bool = True) -> dict[str, tuple[float, float]]:
    """Percentile CIs of the mean over ``runs`` (one (probs, threshold) per seed, same images) of each headline
    metric. Two levels: patients (``groups``; rows within each class without them) are resampled, every run
    scored on the same resample, and, with several runs and ``resample_runs``, the runs themselves are drawn
    with replacement, so retraining variation is inside the interval."""
    check_work(len(y) * max(1, len(runs)), n_boot)
    counts = run_counts(len(runs) if resample_runs else 1, n_boot, seed)
    parts: dict[str, list[np.ndarray]] = {}
    b0 = 0
    for w in resample_blocks(y, n_boot, seed, groups):
        c = counts[b0:b0 + len(w)] if counts.shape[1] == len(runs) else np.ones((len(w), len(runs)))
        b0 += len(w)
        samples = [resampled_metrics(y, probs, t, w, classes) for probs, t in runs]
        for k in samples[0]:
            per_run = np.stack([r[k] for r in samples], axis=1)  # (resamples, runs)
            parts.setdefault(k, []).append((per_run * c).sum(1) / c.sum(1))
    alpha = (1 - level) / 2
    out = {}
    for k, v in parts.items():
        s = np.concatenate(v)
        s = s[np.isfinite(s)]
        out[k] = tuple(float(v) for v in np.quantile(s, [alpha, 1 - alpha])) if len(s) else (np.nan, np.nan)
    return out


def paired_mean_difference(y: np.ndarray, runs_a: Sequence[tuple[np.ndarray, float | None]],
                           runs_b: Sequence[tuple[np.ndarray, float | None]], classes: Sequence[str], metric: str,
                           n_boot: int = 1000, seed: int = 0, level: float = 0.95, groups: Sequence | None = None,
                           resample_runs: bool = True) -> dict[str, float]:
    """Paired bootstrap of mean metric over ``runs_a`` minus mean over ``runs_b`` (each a (probs, threshold)
    per seed, all of the same images), every run scored on the same resample of patients (``groups``; rows
    within each class without them); with several runs, seeds are drawn with replacement too (the same draw
    on both sides when they pair seed by seed): {diff, low, high}."""
    if not runs_a or not runs_b:
        raise ValueError("a paired difference needs at least one run on each side")
    if n_boot < 1:
        raise LimitError("a paired bootstrap needs at least one resample")
    check_work(len(y) * (len(runs_a) + len(runs_b)), n_boot)
    ca = run_counts(len(runs_a) if resample_runs else 1, n_boot, seed)
    cb = ca if len(runs_b) == len(runs_a) else run_counts(len(runs_b) if resample_runs else 1, n_boot, seed + 1)

    def mean_of(runs, w, c):
        per_run = np.stack([resampled_metrics(y, probs, t, w, classes)[metric] for probs, t in runs], axis=1)
        c = c if c.shape[1] == len(runs) else np.ones((len(w), len(runs)))
        return (per_run * c).sum(1) / c.sum(1)

    full = np.ones((1, len(y)))
    point = float(mean_of(runs_a, full, np.ones((1, len(runs_a))))[0]
                  - mean_of(runs_b, full, np.ones((1, len(runs_b))))[0])
    d, b0 = [], 0
    for w in resample_blocks(y, n_boot, seed, groups):
        d.append(mean_of(runs_a, w, ca[b0:b0 + len(w)]) - mean_of(runs_b, w, cb[b0:b0 + len(w)]))
        b0 += len(w)
    d = np.concatenate(d)
    d = d[np.isfinite(d)]
    alpha = (1 - level) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha]) if len(d) else (np.nan, np.nan)
    return {"diff": point, "low": float(lo), "high": float(hi)}


def paired_difference(y: np.ndarray, a: tuple[np.ndarray, float | None], b: tuple[np.ndarray, float | None],
                      classes: Sequence[str], metric: str, n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95, groups: Sequence | None = None) -> dict[str, float]:
    """Paired bootstrap of metric(a) - metric(b) on the same images: {diff, low, high}."""
    return paired_mean_difference(y, [a], [b], classes, metric, n_boot, seed, level, groups)
