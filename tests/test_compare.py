"""``compare``: two zoo folders' runs of one architecture, on the committed ResNet18 files of the 224-px study at
128 px (``experiments/zoo224/runs/low_resnet18``) and at 224 px by progressive resizing (``progressive_resnet18``)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.bootstrap import patient_groups, run_counts
from pneumo_core.evaluation.comparison import common_seeds, compare_runs
from pneumo_core.evaluation.thresholds import choose
from pneumo_core.training.study import EXPERIMENTS
from tests.cli_utils import cli_result

LOW, HIGH = (EXPERIMENTS / "zoo224" / "runs" / stage for stage in ("low_resnet18", "progressive_resnet18"))


def _cli(*args):
    return cli_result("compare", *args)


def _csv(root, seed, split):
    return pd.read_csv(root / "predictions" / "binary" / f"resnet18_seed{seed}_{split}.csv")


def _normalised(df: pd.DataFrame) -> np.ndarray:
    p = df[["prob_NORMAL", "prob_PNEUMONIA"]].to_numpy()
    return p / p.sum(1, keepdims=True)  # the files round to 6 decimals


@pytest.fixture(scope="module")
def compared():
    return compare_runs(LOW, HIGH, "binary", "resnet18", n_boot=200)


def test_each_seed_matches_sklearn_on_the_raw_files(compared):
    assert compared["seeds"] == common_seeds(LOW, HIGH, "binary", "resnet18") == [0, 1, 2]
    for run in compared["runs"]:
        s = run["seed"]
        val = {side: _csv(root, s, "val") for side, root in (("A", LOW), ("B", HIGH))}
        test = {side: _csv(root, s, "test").sort_values("image_id") for side, root in (("A", LOW), ("B", HIGH))}
        loss = {k: skm.log_loss(v.y_true, _normalised(v)) for k, v in val.items()}
        assert run["val_loss"] == pytest.approx(loss, abs=1e-6)
        assert run["kept"] == ("B" if run["val_diff"]["high"] < 0 else "A")  # the decision function's rule
        auc = {k: skm.roc_auc_score(v.y_true, v.prob_PNEUMONIA) for k, v in test.items()}
        assert run["diff"]["auroc"]["diff"] == pytest.approx(auc["B"] - auc["A"], abs=1e-9)
        thr = {k: choose(v.y_true.to_numpy(), v.prob_PNEUMONIA.to_numpy(), "youden").threshold for k, v in val.items()}
        acc = {k: skm.accuracy_score(v.y_true, v.prob_PNEUMONIA >= thr[k]) for k, v in test.items()}
        assert run["test"]["B"]["accuracy"]["value"] == pytest.approx(acc["B"], abs=1e-9)
        assert run["diff"]["accuracy"]["diff"] == pytest.approx(acc["B"] - acc["A"], abs=1e-9)
        for v in (*run["test"]["A"].values(), *run["test"]["B"].values()):
            assert v["low"] <= v["value"] <= v["high"]
    # seed 1 is the one where 224 px lost on test (docs/results.md, "The 224-px study"): its interval lies below zero
    assert compared["runs"][1]["diff"]["auroc"]["high"] < 0


def test_the_mean_is_the_mean_of_the_seeds(compared):
    m = compared["mean"]
    for metric in ("auroc", "accuracy"):
        assert m["diff"][metric]["diff"] == pytest.approx(
            np.mean([r["diff"][metric]["diff"] for r in compared["runs"]]))
        assert m["test"]["A"][metric]["value"] == pytest.approx(
            np.mean([r["test"]["A"][metric]["value"] for r in compared["runs"]]))
    for side in ("A", "B"):
        assert m["val_loss"][side] == pytest.approx(np.mean([r["val_loss"][side] for r in compared["runs"]]))


def _resampled(root, seed, idx, threshold=None):
    """Test AUROC (or accuracy at ``threshold``) of one run on each resample, by sklearn on the drawn rows."""
    t = _csv(root, seed, "test").sort_values("image_id")
    y, p = t.y_true.to_numpy(), t.prob_PNEUMONIA.to_numpy()
    if threshold is None:
        return np.array([skm.roc_auc_score(y[i], p[i]) for i in idx])
    return np.array([skm.accuracy_score(y[i], p[i] >= threshold) for i in idx])


def _patient_resamples(ids, n_boot: int, seed: int = 0) -> list[np.ndarray]:
    """The rows of each resample of a plain cluster bootstrap: as many patients as there are, drawn with
    replacement (the generator and order the library uses), each bringing all its images."""
    codes, inv = np.unique(patient_groups(ids), return_inverse=True)
    members = [np.flatnonzero(inv == k) for k in range(len(codes))]
    draws = np.random.default_rng(seed).integers(0, len(codes), (n_boot, len(codes)))
    return [np.concatenate([members[k] for k in row]) for row in draws]


def test_intervals_match_a_plain_two_level_bootstrap(compared):
    """The intervals are the 2.5/97.5 % quantiles over resamples of test patients (and, for the mean over seeds,
    of the seeds: each resample draws the seeds with replacement), scored by sklearn on the drawn rows."""
    ids = _csv(LOW, 0, "test").sort_values("image_id").image_id.to_numpy()
    idx = _patient_resamples(ids, 200, seed=0)
    run = compared["runs"][2]
    d = _resampled(HIGH, 2, idx) - _resampled(LOW, 2, idx)
    assert [run["diff"]["auroc"]["low"], run["diff"]["auroc"]["high"]] == pytest.approx(
        np.quantile(d, [0.025, 0.975]), abs=1e-9)
    per_seed = np.stack([_resampled(HIGH, r["seed"], idx, r["threshold"]["B"]) for r in compared["runs"]], axis=1)
    counts = run_counts(len(compared["runs"]), 200, seed=0)
    acc = (per_seed * counts).sum(1) / counts.sum(1)
    b = compared["mean"]["test"]["B"]["accuracy"]
    assert [b["low"], b["high"]] == pytest.approx(np.quantile(acc, [0.025, 0.975]), abs=1e-9)
    single = np.quantile(np.mean(per_seed, axis=1), [0.025, 0.975])  # seeds fixed: the narrower old interval
    assert b["high"] - b["low"] > single[1] - single[0]


def test_rows_in_any_order_give_the_same_figures(tmp_path, compared):
    other = tmp_path / "zoo"
    shutil.copytree(HIGH / "predictions", other / "predictions")
    f = other / "predictions" / "binary" / "resnet18_seed2_test.csv"
    pd.read_csv(f).sample(frac=1, random_state=0).to_csv(f, index=False)
    r = compare_runs(LOW, other, "binary", "resnet18", seeds=[2], n_boot=200)
    for m in ("auroc", "accuracy"):
        assert r["runs"][0]["diff"][m] == pytest.approx(compared["runs"][2]["diff"][m])
        assert r["runs"][0]["test"]["B"][m] == pytest.approx(compared["runs"][2]["test"]["B"][m])


def test_a_folder_against_itself_differs_by_nothing():
    r = compare_runs(HIGH, HIGH, "binary", "resnet18", seeds=[2], n_boot=50)
    d = r["runs"][0]["diff"]["auroc"]
    assert (d["diff"], d["low"], d["high"]) == (0.0, 0.0, 0.0) and r["runs"][0]["kept"] == "A"


def test_other_images_are_refused(tmp_path):
    other = tmp_path / "zoo"
    shutil.copytree(LOW / "predictions", other / "predictions")
    f = other / "predictions" / "binary" / "resnet18_seed0_test.csv"
    pd.read_csv(f).iloc[:-5].to_csv(f, index=False)
    with pytest.raises(PredictionFileError, match="other images"):
        compare_runs(other, HIGH, "binary", "resnet18", seeds=[0], n_boot=10)
    f = other / "predictions" / "binary" / "resnet18_seed1_test.csv"  # seed 1 with one label flipped
    t = pd.read_csv(f)
    t.loc[0, "y_true"] = 1 - t.loc[0, "y_true"]
    t.to_csv(f, index=False)
    with pytest.raises(PredictionFileError, match="labels differ"):
        compare_runs(other, HIGH, "binary", "resnet18", seeds=[1, 2], n_boot=10)


def test_cli_prints_the_table_and_one_line_errors(tmp_path):
    ok = _cli(LOW, HIGH, "--arch", "resnet18", "--seeds", "2", "--bootstrap", "100")
    assert ok.returncode == 0, ok.stderr
    line = next(x for x in ok.stdout.splitlines() if x.startswith("seed 2:"))
    assert line.startswith("seed 2: validation log loss A 0.0523, B 0.0688; B - A +0.016 [")
    assert line.endswith("-> rule keeps A")  # the interval of B - A contains 0: the default, A, stays
    assert "auroc" in ok.stdout and "B - A +0.031" in ok.stdout
    for args, message in [(("--arch", "vgg16"), "no seed of binary/vgg16"),
                          (("--arch", "resnet18", "--seeds", "7"), "no val predictions for binary/resnet18"),
                          (("--arch", "resnet18", "--metrics", "macro_f1"), "unknown metric 'macro_f1'"),
                          (("--arch", "resnet18", "--task", "four_class"), "unknown task 'four_class'")]:
        r = _cli(LOW, HIGH, *args, "--bootstrap", "10")
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
    one_class = tmp_path / "one_class"  # no threshold can be chosen on a validation file of one class
    shutil.copytree(LOW / "predictions", one_class / "predictions")
    f = one_class / "predictions" / "binary" / "resnet18_seed2_val.csv"
    v = pd.read_csv(f)
    v[v.y_true == 1].to_csv(f, index=False)
    r = _cli(one_class, one_class, "--arch", "resnet18", "--seeds", "2", "--bootstrap", "10")
    assert r.returncode == 2 and "resnet18_seed2_val.csv" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_ensembles_are_the_paired_test_differences_of_the_rules_ensembles(capsys):
    """``compare ROOT ROOT --ensembles`` (what scripts/paired_rows.py printed): the point differences equal sklearn's
    on the committed files, inside their patient-resampled intervals."""
    from pneumo_core.cli.main import main
    from pneumo_core.evaluation import artifacts, selection
    from pneumo_core.evaluation.comparison import ensemble_differences
    from pneumo_core.evaluation.predictions import align, ensemble, read_predictions
    from pneumo_core.files import ASSETS

    rows = {(r["name"].split(":")[0], r["metric"]): r for r in ensemble_differences(ASSETS, n_boot=200)}
    assert set(rows) == {("binary", "auroc"), ("binary", "accuracy"), ("three-class", "macro_f1"),
                         ("three-class", "f1_VIRUS")}
    lite = ensemble([artifacts.load_set(ASSETS, "binary", "efficientnet_lite0", s, "test")
                     for s in artifacts.seeds_of(ASSETS, "binary", "efficientnet_lite0")])
    a, b = align([lite, selection.ensemble_set(ASSETS, selection.ensemble_members(ASSETS, "binary"), "test")])
    auc = skm.roc_auc_score(a.y_true, a.probs[:, 1]) - skm.roc_auc_score(b.y_true, b.probs[:, 1])
    h, t = align([read_predictions(ASSETS / "predictions" / "three_class" / "hierarchical_test.csv"),
                  selection.ensemble_set(ASSETS, selection.ensemble_members(ASSETS, "three_class"), "test")])
    f1 = (skm.f1_score(h.y_true, h.probs.argmax(1), average="macro")
          - skm.f1_score(t.y_true, t.probs.argmax(1), average="macro"))
    for key, want in ((("binary", "auroc"), auc), (("three-class", "macro_f1"), f1)):
        r = rows[key]
        assert r["diff"] == pytest.approx(want, abs=1e-9) and r["low"] <= r["diff"] <= r["high"]
    assert main(["compare", str(ASSETS), str(ASSETS)]) == 2
    assert "--arch" in capsys.readouterr().err
