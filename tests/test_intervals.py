"""Intervals a careful reviewer signs (issue #26): patients resampled, and over several seeds the seeds too."""
from __future__ import annotations

import numpy as np
import pytest

from pneumo_core.evaluation.bootstrap import (bootstrap_runs, cluster_weight_blocks, paired_mean_difference,
                                              patient_groups, run_counts)
from pneumo_core.evaluation import bootstrap

CLASSES = ("NORMAL", "PNEUMONIA")


def _world(rng, n_patients: int, seed_shift: float, images: int = 2):
    """Two images per patient, one label per patient; a patient effect shared by its images (clustering) and a
    per-seed shift of the scores (retraining variation). Returns y, P(PNEUMONIA), patient ids."""
    y = np.repeat(rng.integers(0, 2, n_patients), images)
    patient = np.repeat(np.arange(n_patients), images)
    effect = np.repeat(rng.normal(0, 1.0, n_patients), images)
    z = 1.2 * (2 * y - 1) + effect + seed_shift + rng.normal(0, 0.5, len(y))
    return y, 1 / (1 + np.exp(-z)), patient


def _accuracy(y, p):
    return float(((p >= 0.5) == y).mean())


def test_the_two_level_interval_covers_the_mean_over_seeds_and_patients():
    """A synthetic world whose mean accuracy over retrained seeds and new patients is known (Monte Carlo): the
    two-level interval of 5 seeds on 200 patients covers it about 95 % of the time; resampling images alone
    (the old interval) covers it far less often, so this test can tell the two apart."""
    rng = np.random.default_rng(0)
    shifts = rng.normal(0, 0.35, 4000)
    truth = np.mean([_accuracy(*_world(np.random.default_rng(k), 400, s)[:2]) for k, s in enumerate(shifts[:400])])
    hits = {"two_level": 0, "images_only": 0}
    trials = 80
    for t in range(trials):
        r = np.random.default_rng(1000 + t)
        y, _, patient = _world(r, 200, 0.0)
        runs = []  # every seed scores the same patients (their labels and patient effects), with its own shift
        effect = np.repeat(r.normal(0, 1.0, 200), 2)
        for s in r.normal(0, 0.35, 5):
            p = 1 / (1 + np.exp(-(1.2 * (2 * y - 1) + effect + s + r.normal(0, 0.5, len(y)))))
            runs.append((np.stack([1 - p, p], 1), 0.5))
        lo, hi = bootstrap_runs(y, runs, CLASSES, n_boot=300, seed=t, groups=patient)["accuracy"]
        hits["two_level"] += lo <= truth <= hi
        lo, hi = bootstrap_runs(y, runs, CLASSES, n_boot=300, seed=t, resample_runs=False)["accuracy"]
        hits["images_only"] += lo <= truth <= hi
    two, img = hits["two_level"] / trials, hits["images_only"] / trials
    assert 0.86 <= two <= 1.0, hits
    assert img < two - 0.1, hits


def test_duplicated_images_of_a_patient_do_not_narrow_the_interval():
    rng = np.random.default_rng(3)
    y, p, patient = _world(rng, 300, 0.0, images=1)
    run = [(np.stack([1 - p, p], 1), 0.5)]

    def width(y, run, groups):
        lo, hi = bootstrap_runs(y, run, CLASSES, n_boot=1000, seed=0, groups=groups)["auroc"]
        return hi - lo

    base = width(y, run, patient)
    twice = (np.tile(y, 2), [(np.tile(run[0][0], (2, 1)), 0.5)], np.tile(patient, 2))
    assert width(*twice) == pytest.approx(base, rel=0.12)  # the same patients: as wide
    rows = width(twice[0], twice[1], None)  # the rows as if independent: narrower by about 1/sqrt(2)
    assert rows < 0.85 * base


def test_cluster_weights_move_a_patients_images_together():
    groups = np.array(["a", "a", "b", "c", "c", "c"])
    w = np.concatenate(list(cluster_weight_blocks(groups, 500, seed=1, block=60)))
    assert w.shape == (500, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 3] == w[:, 5]).all()
    assert np.allclose(w[:, [0, 2, 3]].sum(1), 3)  # three patients drawn each time


def test_seed_counts_and_the_paired_difference():
    counts = run_counts(3, 1000, seed=0)
    assert counts.shape == (1000, 3) and (counts.sum(1) == 3).all() and (counts == 0).any()
    assert (run_counts(1, 10) == 1).all()
    rng = np.random.default_rng(5)
    y, p, patient = _world(rng, 200, 0.0)
    a = [(np.stack([1 - p, p], 1), 0.5)]
    same = paired_mean_difference(y, a, a, CLASSES, "accuracy", n_boot=200, groups=patient)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}


def test_patient_groups_of_kermany_ids():
    ids = ["test/PNEUMONIA/person100_bacteria_475.jpeg", "test/PNEUMONIA/person100_bacteria_476.jpeg",
           "test/NORMAL/IM-0001-0001.jpeg", "test/NORMAL/NORMAL2-IM-0337-0001.jpeg", "other.png"]
    g = patient_groups(ids)
    assert g[0] == g[1] and len(set(g)) == 4


def test_bootstrap_blocks_draw_the_same_resamples_in_bounded_memory(monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.array([0] * 300 + [1] * 700)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)
    whole = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=64, seed=3)
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", 5_000)  # 5 resamples a block
    blocks = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=64, seed=3)
    for m in whole:
        for k in ("value", "low", "high"):
            assert blocks[m][k] == pytest.approx(whole[m][k], abs=1e-12), (m, k)
    monkeypatch.undo()
    n = 200_000  # the whole (200 x 200 000) matrix would be 320 MB of weights alone, plus the indices
    y = (rng.random(n) < 0.6).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    tracemalloc.start()
    ci = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=200, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ci["auroc"]["low"] < ci["auroc"]["value"] < ci["auroc"]["high"]
    assert peak < 200 * 2**20, peak / 2**20


def test_compare_keeps_the_default_run_unless_validation_clearly_prefers_the_other():
    """``compare``'s kept column is the decision function's, not the lower point estimate: the distilled ResNet18
    seed 2 has the lower validation log loss (-0.013) but its paired interval over validation patients holds 0, so
    the progressive run (A, the default) is kept; the same pair reversed keeps the distilled one (the default)."""
    from pneumo_core.evaluation.comparison import compare_runs
    from pneumo_core.evaluation.decisions import decide
    from pneumo_core.evaluation.artifacts import load_set
    from pneumo_core.files import ASSETS

    runs = ASSETS.parent / "experiments" / "zoo224" / "runs"
    a, b = runs / "progressive_resnet18", runs / "distill1_resnet18"
    r = compare_runs(a, b, "binary", "resnet18", seeds=[2], n_boot=1000)["runs"][0]
    d = r["val_diff"]
    assert d["diff"] == pytest.approx(r["val_loss"]["B"] - r["val_loss"]["A"])
    assert d["diff"] < 0 < d["high"] and r["kept"] == "A"
    ref = decide("x", [("A", load_set(a, "binary", "resnet18", 2, "val")),
                       ("B", load_set(b, "binary", "resnet18", 2, "val"))])
    assert (d["low"], d["high"]) == pytest.approx((ref.candidates[1].diff_low, ref.candidates[1].diff_high))
    assert compare_runs(b, a, "binary", "resnet18", seeds=[2], n_boot=200)["runs"][0]["kept"] == "A"


def test_stage_a_is_chosen_by_the_decision_function_and_logged():
    """The hierarchical model's stage A goes through the one decision function (default ResNet18, stated in
    advance), over the bundled binary models' validation files; the plan uses its outcome and the log shows it."""
    from pneumo_core.evaluation import decisions, selection
    from pneumo_core.files import ASSETS

    d = decisions.stage_a_decision(ASSETS, n_boot=300)
    assert d.default.startswith(decisions.stated("stage_a_default") + " seed ")
    assert {c.name.split(" seed ")[0] for c in d.candidates} == {"custom_cnn", "densenet121", "efficientnet_lite0",
                                                                 "resnet18"}
    plan = selection.hierarchical_plan(ASSETS)
    assert plan.stage_a.arch == decisions.stage_a_arch(d)
    if not d.switched:  # a challenger replaces the default only when its interval lies below 0
        assert not any(c.clears for c in d.candidates[1:])
    log = decisions.decision_log(ASSETS, n_boot=200, seed_rows=True)
    assert log[-1].question == d.question and log[-1].outcome == d.outcome
