"""Label-free adaptation (issue 26, item 8): Saerens et al.'s prior EM and AdaBN."""
from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from pneumo_core.evaluation import adaptation
from pneumo_core.evaluation.adaptation import adjusted_threshold, prior_shift, saerens_prior, source_prior
from pneumo_core.files import ASSETS


def _calibrated(prior: float, n: int, seed: int, train_prior: float = 0.5) -> np.ndarray:
    """P(positive | x) of a model calibrated under ``train_prior`` (x ~ N(+-1, 1) per class), on images drawn under
    ``prior``: the setting of Saerens et al., a prior shift with unchanged class-conditionals."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prior
    x = rng.normal(np.where(y, 1.0, -1.0), 1.0)
    # log-likelihood ratio of N(1, 1) vs N(-1, 1) is 2x; the posterior under train_prior
    return 1 / (1 + np.exp(-(2 * x + np.log(train_prior / (1 - train_prior)))))


@pytest.mark.parametrize("target", [0.2, 0.625, 0.85])
def test_em_recovers_a_shifted_prior(target):
    fit = saerens_prior(_calibrated(target, 20_000, seed=1), prior_from=0.5)
    assert fit.converged
    assert fit.prior == pytest.approx(target, abs=0.02)
    # the unadjusted mean of the posteriors is pulled towards the training prior: EM does better
    naive = _calibrated(target, 20_000, seed=1).mean()
    assert abs(fit.prior - target) < abs(naive - target)


def test_em_with_the_training_prior_unshifted_stays_there():
    assert saerens_prior(_calibrated(0.5, 20_000, seed=2), 0.5).prior == pytest.approx(0.5, abs=0.02)


def test_source_prior_finds_the_prior_outputs_are_calibrated_to():
    # outputs computed as if under prior 0.5 on images of prevalence 0.74 (a class-weighted loss): the fit says 0.5
    p = _calibrated(0.74, 20_000, seed=3, train_prior=0.5)
    assert source_prior(p, 0.74) == pytest.approx(0.5, abs=0.03)
    # calibrated to the validation prevalence itself: the fit is that prevalence
    q = _calibrated(0.74, 20_000, seed=3, train_prior=0.74)
    assert source_prior(q, 0.74) == pytest.approx(0.74, abs=0.03)


def test_adjusted_threshold_is_the_same_bayes_decision():
    t, pv, pn = 0.64, 0.74, 0.6
    t2 = adjusted_threshold(t, pv, pn)
    assert t2 > t  # a lower pneumonia prior asks for more evidence
    # an output at t' re-weighted to the new prior sits where t sat under the validation prior
    assert prior_shift(np.array([t2]), 0.5, pn)[0] == pytest.approx(prior_shift(np.array([t]), 0.5, pv)[0])
    assert adjusted_threshold(t, pv, pv) == pytest.approx(t)


def test_the_adaptation_functions_take_no_labels():
    for f in (saerens_prior, adjusted_threshold):
        assert not {"y", "y_true", "labels", "target"} & set(inspect.signature(f).parameters)
    p = _calibrated(0.3, 500, seed=4)
    assert saerens_prior(p.tolist(), 0.5).prior == saerens_prior(p, 0.5).prior  # a bare list of numbers is enough


def test_saerens_on_the_committed_files_uses_test_probabilities_only(monkeypatch):
    """The adapted threshold of the bundled ResNet18 is the same whatever the test labels say."""
    from pneumo_core.evaluation.predictions import Predictions

    r = adaptation.evaluate(ASSETS, ASSETS, "binary/resnet18", "saerens", n_boot=20)
    real = Predictions.y_binary
    monkeypatch.setattr(Predictions, "y_binary", property(lambda self: (
        np.zeros(len(self.frame), dtype=np.int64) if self.frame["split"].iloc[0] == "test" else real.fget(self))))
    shuffled = adaptation.evaluate(ASSETS, ASSETS, "binary/resnet18", "saerens", n_boot=20)
    assert shuffled.adapted_threshold == pytest.approx(r.adapted_threshold)
    assert shuffled.priors["test_estimate"] == pytest.approx(r.priors["test_estimate"])


def test_adabn_changes_batchnorm_statistics_and_nothing_else(data_dir):
    from pneumo_core.data.datasets import for_task, load_dataset
    from pneumo_core.data.tasks import get_task
    from pneumo_core.inference.adabn import adabn_predictor, batchnorm_layers
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import bundled_source

    base = Predictor(bundled_source().load("binary/custom_cnn"), fast=False)
    before = {k: v.clone() for k, v in base.model.state_dict().items()}
    frame = for_task(load_dataset(data_dir).query("split == 'test'"), get_task("binary")).iloc[::40]
    frame = frame.assign(label="?", target=-1)  # no labels reach it
    adapted = adabn_predictor(base, frame, batch_size=8)
    after = adapted.model.state_dict()
    for k, v in base.model.state_dict().items():  # the original untouched
        assert torch.equal(v, before[k]), k
    for name, param in adapted.model.named_parameters():  # every parameter as it was
        assert torch.equal(param, before[name]), name
    stats = [k for k in after if k.endswith(("running_mean", "running_var"))]
    assert stats and all(not torch.allclose(after[k], before[k]) for k in stats)
    assert not adapted.model.training and not any(m.training for m in batchnorm_layers(adapted.model))
    assert adapted.key != base.key


@pytest.mark.parametrize("method", ["saerens", "adabn"])
def test_the_experiments_figures_equal_sklearn_on_the_committed_files(method):
    import pandas as pd
    from sklearn.metrics import accuracy_score, recall_score

    from pneumo_core.evaluation.thresholds import choose

    r = adaptation.evaluate(ASSETS, adaptation.ADABN_ROOT, "binary/resnet18/seed0", method, n_boot=50)  # bundled
    val = pd.read_csv(ASSETS / "predictions/binary/resnet18_seed0_val.csv")
    test = pd.read_csv(ASSETS / "predictions/binary/resnet18_seed0_test.csv").sort_values("image_id")
    adabn = adaptation.ADABN_ROOT / "predictions/binary/resnet18_seed0_test.csv"
    adapted = test if method == "saerens" else pd.read_csv(adabn).sort_values("image_id")
    assert list(adapted.image_id) == list(test.image_id)
    youden = choose(val.y_true.to_numpy(), val.prob_PNEUMONIA.to_numpy(), "youden").threshold
    assert r.threshold == pytest.approx(youden)
    for p, t, figs in ((test.prob_PNEUMONIA, r.threshold, r.at_validation),
                       (adapted.prob_PNEUMONIA, r.adapted_threshold, r.adapted)):
        pred = (p >= t).astype(int)
        assert figs["accuracy"]["value"] == pytest.approx(accuracy_score(test.y_true, pred))
        assert figs["sensitivity"]["value"] == pytest.approx(recall_score(test.y_true, pred))
        assert figs["specificity"]["value"] == pytest.approx(recall_score(test.y_true, pred, pos_label=0))
    acc = r.adapted["accuracy"]["value"] - r.at_validation["accuracy"]["value"]
    assert r.diff["accuracy"]["diff"] == pytest.approx(acc)
    if method == "saerens":
        assert r.priors["validation"] == pytest.approx(val.y_true.mean())
        assert r.adapted_threshold == pytest.approx(adjusted_threshold(r.threshold, r.priors["validation"],
                                                                       r.priors["test_estimate"]))


def test_the_cli_writes_where_the_page_reads():
    from pneumo_core.cli.adapt import EXPERIMENT

    assert EXPERIMENT / "adabn" == adaptation.ADABN_ROOT
