"""The zoo's bundling on real tiny runs: fp32 re-prediction, best-seed export, hierarchical model, results table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.training.loop import select_best_seed
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.models.checkpoints import load_checkpoint
from pneumo_core.training.zoo import bundle, repredict
from tests.zoo_fixture import train_tiny


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, data_dir):
    out = tmp_path_factory.mktemp("zoo")
    cache = tmp_path_factory.mktemp("cache")
    for seed in (0, 1):
        train_tiny(out, data_dir, cache, "binary", "custom_cnn", seed=seed)
    train_tiny(out, data_dir, cache, "binary", "resnet18")
    train_tiny(out, data_dir, cache, "bacteria_virus", "custom_cnn")
    train_tiny(out, data_dir, cache, "three_class", "custom_cnn")
    for task, arch, seeds in (("binary", "custom_cnn", [0, 1]), ("binary", "resnet18", [0]),
                              ("bacteria_virus", "custom_cnn", [0]), ("three_class", "custom_cnn", [0])):
        assert select_best_seed(out, task, arch) is not None  # what train.py does after the seeds
    return out


def test_repredict_agrees_with_the_training_loop(zoo, data_dir):
    f = zoo / "predictions" / "binary" / "custom_cnn_seed0_test.csv"
    trained = read_predictions(f).frame.set_index("image_id")
    written = repredict(zoo, data_dir)
    assert len(written) == 5 * 2 and f in written
    again = read_predictions(f).frame.set_index("image_id")
    assert len(again) == 624  # the whole test split, not the run's --limit subset
    assert not again["path"].str.startswith("/").any()  # relative ids, fit to commit
    shared = trained.index
    # training reads its images cached as uint8 at the model's size: a quantisation step apart, no more
    np.testing.assert_allclose(again.loc[shared, "prob_PNEUMONIA"], trained["prob_PNEUMONIA"], atol=2e-3)
    bv = read_predictions(zoo / "predictions" / "bacteria_virus" / "custom_cnn_bacteria_virus_seed0_test.csv")
    assert set(bv.classes) == {"BACTERIA", "VIRUS"} and len(bv.frame) == 390


def test_bundle_exports_models_hierarchical_and_table(zoo, data_dir, tmp_path):
    table = bundle(zoo, data_dir, tmp_path, leave_out=["binary/resnet18"])
    models = sorted(p.relative_to(tmp_path / "models").as_posix() for p in (tmp_path / "models").rglob("*.safetensors"))
    assert models == ["checkpoints/binary/custom_cnn.safetensors",
                      "checkpoints/hierarchical/custom_cnn_bacteria_virus.safetensors",
                      "checkpoints/three_class/custom_cnn.safetensors"]
    hier = read_predictions(tmp_path / "predictions" / "three_class" / "hierarchical_test.csv")
    np.testing.assert_allclose(hier.probs.sum(axis=1), 1.0, atol=1e-5)
    assert len(hier.frame) == 624
    plan = selection.hierarchical_plan(tmp_path)
    assert plan.stage_a.key == "binary/custom_cnn"  # resnet18 was left out: the app could not run it
    assert plan.stage_b.key == "bacteria_virus/custom_cnn"
    # the bundled checkpoint is the rule's seed and carries the rule's threshold
    best = selection.best_seed(zoo, "binary", "custom_cnn")
    meta = load_checkpoint(tmp_path / "models/checkpoints/binary/custom_cnn.safetensors").meta
    assert meta.seed == best
    assert meta.threshold == pytest.approx(
        selection.model_threshold(zoo, selection.Member("binary", "custom_cnn", best)))
    # train.py's <arch>.pt is the same seed
    assert load_checkpoint(zoo / "checkpoints/binary/custom_cnn.pt").meta.seed == best

    rows = table.set_index("model")
    cnn = rows[(rows.task == "binary")].loc["custom_cnn"]
    aurocs = []
    for seed in (0, 1):
        t = read_predictions(tmp_path / "predictions" / "binary" / f"custom_cnn_seed{seed}_test.csv")
        aurocs.append(roc_auc_score(t.y_binary, t.p_positive))
    assert cnn["seeds"] == "2"
    assert cnn["auroc"].startswith(f"{np.mean(aurocs):.3f} ± {np.std(aurocs, ddof=1):.3f} [")
    assert "custom_cnn (2-seed ensemble)" in rows.index
    # the ensemble's members are the architectures the bundle holds (the app can run each of them)
    assert "ensemble(custom_cnn+resnet18)" not in rows.index
    assert rows.loc["hierarchical", "macro_f1"] != ""
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n") == len(table) + 2 and "custom_cnn (2-seed ensemble)" in md
    assert len(pd.read_csv(tmp_path / "results.csv")) == len(table)
    assert set(prediction_index(tmp_path).task) == {"binary", "bacteria_virus", "three_class"}
