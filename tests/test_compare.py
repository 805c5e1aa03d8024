"""``compare``: two zoo folders' runs of one architecture, on the committed ResNet18 files at 128 px
(``assets/zoo128``) and at 224 px by progressive resizing (``assets/zoo224_progressive``)."""
from __future__ import annotations

import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.bootstrap import paired_difference
from pneumo_core.evaluation.comparison import common_seeds, compare_runs
from pneumo_core.evaluation.thresholds import choose
from pneumo_core.files import ASSETS

LOW, HIGH = ASSETS / "zoo128", ASSETS / "zoo224_progressive"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "pneumo_core", "compare", *map(str, args)],
                          capture_output=True, text=True)


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
        assert run["val_loss"]["A"] == pytest.approx(loss["A"], abs=1e-6)
        assert run["kept"] == min(loss, key=loss.get)
        auc = {k: skm.roc_auc_score(v.y_true, v.prob_PNEUMONIA) for k, v in test.items()}
        assert run["diff"]["auroc"]["diff"] == pytest.approx(auc["B"] - auc["A"], abs=1e-9)
        thr = {k: choose(v.y_true.to_numpy(), v.prob_PNEUMONIA.to_numpy(), "youden").threshold for k, v in val.items()}
        acc = {k: skm.accuracy_score(v.y_true, v.prob_PNEUMONIA >= thr[k]) for k, v in test.items()}
        assert run["test"]["B"]["accuracy"]["value"] == pytest.approx(acc["B"], abs=1e-9)
        assert run["diff"]["accuracy"]["diff"] == pytest.approx(acc["B"] - acc["A"], abs=1e-9)
        for v in (*run["test"]["A"].values(), *run["test"]["B"].values()):
            assert v["low"] <= v["value"] <= v["high"]
    # seed 1 is the one where 224 px lost on test (README, "224-px models"): its interval lies below zero
    assert compared["runs"][1]["diff"]["auroc"]["high"] < 0


def test_the_mean_is_the_mean_of_the_seeds(compared):
    m = compared["mean"]
    for metric in ("auroc", "accuracy"):
        assert m["diff"][metric]["diff"] == pytest.approx(np.mean([r["diff"][metric]["diff"] for r in compared["runs"]]))
        assert m["test"]["A"][metric]["value"] == pytest.approx(
            np.mean([r["test"]["A"][metric]["value"] for r in compared["runs"]]))
    assert m["val_loss"]["B"] == pytest.approx(np.mean([r["val_loss"]["B"] for r in compared["runs"]]))
    # averaging over seeds narrows the interval of the difference
    width = m["diff"]["auroc"]["high"] - m["diff"]["auroc"]["low"]
    assert width < min(r["diff"]["auroc"]["high"] - r["diff"]["auroc"]["low"] for r in compared["runs"])


def test_a_folder_against_itself_differs_by_nothing():
    r = compare_runs(HIGH, HIGH, "binary", "resnet18", seeds=[2], n_boot=50)
    d = r["runs"][0]["diff"]["auroc"]
    assert (d["diff"], d["low"], d["high"]) == (0.0, 0.0, 0.0) and r["runs"][0]["kept"] == "A"


def test_paired_difference_is_the_single_seed_case(compared):
    t = {side: _csv(root, 2, "test").sort_values("image_id") for side, root in (("A", LOW), ("B", HIGH))}
    probs = {k: v[["prob_NORMAL", "prob_PNEUMONIA"]].to_numpy() for k, v in t.items()}
    run = compared["runs"][2]
    d = paired_difference(t["A"].y_true.to_numpy(), (probs["B"], run["threshold"]["B"]),
                          (probs["A"], run["threshold"]["A"]), ["NORMAL", "PNEUMONIA"], "auroc", n_boot=200)
    assert d == pytest.approx(run["diff"]["auroc"])


def test_other_images_are_refused(tmp_path):
    other = tmp_path / "zoo"
    shutil.copytree(LOW / "predictions", other / "predictions")
    f = other / "predictions" / "binary" / "resnet18_seed0_test.csv"
    pd.read_csv(f).iloc[:-5].to_csv(f, index=False)
    with pytest.raises(PredictionFileError, match="other images"):
        compare_runs(other, HIGH, "binary", "resnet18", seeds=[0], n_boot=10)


def test_cli_prints_the_table_and_one_line_errors(tmp_path):
    ok = _cli(LOW, HIGH, "--arch", "resnet18", "--seeds", "2", "--bootstrap", "100")
    assert ok.returncode == 0, ok.stderr
    assert "seed 2: validation log loss A 0.0523, B 0.0688 -> rule keeps A" in ok.stdout
    assert "auroc" in ok.stdout and "B - A +0.031" in ok.stdout
    for args, message in [(("--arch", "vgg16"), "no seed of binary/vgg16"),
                          (("--arch", "resnet18", "--seeds", "7"), "no val predictions for binary/resnet18 seed 7"),
                          (("--arch", "resnet18", "--metrics", "macro_f1"), "unknown metric 'macro_f1'"),
                          (("--arch", "resnet18", "--task", "four_class"), "unknown task 'four_class'")]:
        r = _cli(LOW, HIGH, *args, "--bootstrap", "10")
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
