"""Issue 26: the one decision function (validation log loss, patient-clustered paired bootstrap, the default
kept unless the interval of the difference excludes 0), the generated decision log against the bundle, and
the hierarchical model's stage B deciding at its validated threshold. Built on the committed prediction files."""
from __future__ import annotations

import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import sklearn.metrics as skm

from pneumo_core.data.tasks import get_task
from pneumo_core.evaluation import artifacts, decisions, selection
from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.files import ASSETS
from pneumo_core.inference.predictors import Hierarchical
from pneumo_core.training import study

PRED = ASSETS / "predictions"


# ---------------------------------------------------------------- stage B at its validated threshold

def _stub(task: str, p1: float, threshold: float | None = None):
    """A predictor stand-in: one task, P(classes[1]) = p1 for every image, a stored threshold."""
    return SimpleNamespace(task=get_task(task), name=task, key=task, meta=SimpleNamespace(threshold=threshold),
                           predict_grays=lambda grays: np.tile([1 - p1, p1], (len(grays), 1)))


@pytest.mark.parametrize("v, expected", [(0.40, "BACTERIA"), (0.42, "VIRUS"), (0.49, "VIRUS"), (0.30, "BACTERIA")])
def test_hierarchical_stage_b_decides_at_its_stored_threshold(v, expected):
    hier = Hierarchical(_stub("binary", 0.9), _stub("bacteria_virus", v, threshold=0.411))
    assert hier.threshold_b == pytest.approx(0.411)
    p = hier.predict_grays([np.zeros((4, 4))])[0]
    np.testing.assert_allclose(p.sum(), 1.0)
    assert p[0] == pytest.approx(0.1)  # stage A's probabilities are untouched
    assert hier.classes[int(np.argmax(p))] == expected
    # at 0.5 the product is the plain one
    np.testing.assert_allclose(Hierarchical.combine([0.9], [v], 0.5)[0], [0.1, 0.9 * (1 - v), 0.9 * v])


def test_hierarchical_plan_carries_stage_bs_validation_threshold():
    plan = selection.hierarchical_plan(ASSETS)
    assert plan.threshold_b == pytest.approx(selection.model_threshold(ASSETS, plan.stage_b))
    assert f"{plan.threshold_b:.3f}" in plan.description


@pytest.mark.parametrize("split", ["val", "test"])
def test_committed_hierarchical_files_decide_bacteria_virus_at_stage_bs_threshold(split):
    """Among the pneumonia images, the committed hierarchical file says VIRUS rather than BACTERIA exactly where
    stage B's own prediction file has P(VIRUS) above its validation threshold (0.478), not above 0.5."""
    plan = selection.hierarchical_plan(ASSETS)
    stage_b = artifacts.load_set(ASSETS, "bacteria_virus", plan.stage_b.arch, plan.stage_b.seed, split)
    hier = read_predictions(PRED / "three_class" / f"hierarchical_{split}.csv")
    h = hier.frame.set_index("image_id").loc[list(stage_b.frame["image_id"])]
    v = stage_b.probs[:, 1]
    says_virus = (h["prob_VIRUS"] > h["prob_BACTERIA"]).to_numpy()
    away = np.abs(v - plan.threshold_b) > 1e-3  # fp16 weights / fp32 files: leave the threshold's own image out
    assert ((v > plan.threshold_b) == says_virus)[away].all()
    assert ((v > 0.5) != says_virus).any()  # the threshold changes some decisions (it did not before)


# ---------------------------------------------------------------- the one decision function

def _noisy(p, scale: float, seed: int):
    """The same predictions with small noise on the logit of P(classes[1])."""
    from pneumo_core.evaluation.predictions import Predictions

    rng = np.random.default_rng(seed)
    q = np.clip(p.probs[:, 1], 1e-6, 1 - 1e-6)
    q = 1 / (1 + np.exp(-(np.log(q / (1 - q)) + rng.normal(0, scale, len(q)))))
    f = p.frame.copy()
    f[f"prob_{p.classes[0]}"], f[f"prob_{p.classes[1]}"] = 1 - q, q
    return Predictions(f, p.classes, p.source + "+noise")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decision_keeps_the_default_against_the_same_predictions_plus_noise(seed):
    val = artifacts.load_set(ASSETS, "binary", "resnet18", 0, "val")
    for first, second in ((val, _noisy(val, 0.1, seed)), (_noisy(val, 0.1, seed), val)):
        d = decisions.decide("noise", [("default", first), ("challenger", second)], n_boot=500)
        assert d.outcome == "default" and not d.switched
        assert d.candidates[1].diff_low <= 0 <= d.candidates[1].diff_high
        assert d.n_val == len(val.frame) and 300 < d.n_patients < d.n_val  # patients, not images, are resampled


def test_decision_switches_on_a_clearly_better_candidate():
    worse = artifacts.load_set(ASSETS, "binary", "custom_cnn", 1, "val")  # log loss 0.21
    better = artifacts.load_set(ASSETS, "binary", "efficientnet_lite0", 2, "val")  # 0.07
    d = decisions.decide("clear", [("default", worse), ("better", better)], n_boot=500)
    assert d.switched and d.outcome == "better"
    assert d.candidates[1].diff_high < 0
    assert d.candidates[0].val_loss == pytest.approx(skm.log_loss(worse.y_true, worse.probs))  # the selection score
    assert d.candidates[0].low < d.candidates[0].val_loss < d.candidates[0].high
    # and the other way round the default (now the better one) stays
    assert decisions.decide("clear", [("default", better), ("worse", worse)], n_boot=500).outcome == "default"


@pytest.fixture(scope="module")
def log():
    return decisions.decision_log(ASSETS, [q for f in sorted(study.EXPERIMENTS.glob("*/study.toml"))
                                           for q in study.questions(study.load_study(f))]) + \
        selection.model_decisions(ASSETS)


def test_decision_log_picks_equal_the_bundle_or_say_why_not(log):
    seed_rows = [d for d in log if d.question.endswith(": seed") or "as the rule picks it" in d.question]
    assert seed_rows
    for d in seed_rows:
        bundled = d.extra.get("bundled_seed")
        if bundled is None:
            continue
        if d.extra["rule_seed"] == bundled and decisions.NOT_REBUNDLED not in d.note:
            assert d.note.startswith(f"bundled: seed {bundled}")
        else:
            assert decisions.NOT_REBUNDLED in d.note, d
    # every seed the rule picks for an architecture whose bundle has its seed's files: what selection answers
    for d in log:
        if d.question.endswith(": seed") and d.extra.get("bundled_seed") is not None:
            task, arch = d.question.split(":")[0].split()
            assert selection.best_seed(ASSETS, task, arch) == d.extra["bundled_seed"]
            assert selection.rule_seed(ASSETS, task, arch) == d.extra["rule_seed"]


def test_the_bundles_re_prediction_of_a_runs_weights_counts_as_that_run(log):
    """assets' 112-px three-class DenseNet121 files are the bundle's fp32 re-prediction of the study run's weights:
    not equal to its files, within decisions.SAME_RUN_ATOL, so the log says it is bundled; another run of the same
    seed (224 px, fine-tuned from it) is not the same run, nor is the retrained ResNet18 seed 0 the lost one."""
    zoo = study.EXPERIMENTS / "zoo224" / "runs"
    bundled = artifacts.load_set(ASSETS, "three_class", "densenet121", 0, "val")
    run = artifacts.load_set(zoo / "low_three_class", "three_class", "densenet121", 0, "val")
    other = artifacts.load_set(zoo / "three_class_224", "three_class", "densenet121", 0, "val")
    assert 0 < np.abs(bundled.probs - run.probs).max() < decisions.SAME_RUN_ATOL
    assert decisions._same(bundled, run) and not decisions._same(run, other)
    lost = artifacts.load_set(zoo / "distill1_resnet18", "binary", "resnet18", 0, "val")
    assert not decisions._same(lost, artifacts.load_set(ASSETS, "binary", "resnet18", 0, "val"))
    row = next(d for d in log if d.question == "three_class densenet121 seed 0: resolution")
    assert row.note == "bundled: 112 px (experiments/zoo224/runs/low_three_class)"
    row = next(d for d in log if d.question == "binary resnet18: seed (each seed's run as the rule picks it)")
    assert row.note.startswith("bundled: seed 0, another run of it") and decisions.NOT_REBUNDLED in row.note


def test_committed_decision_log_is_the_generated_one(log):
    assert (ASSETS / "decisions.md").read_text() == decisions.decisions_markdown(log)


def test_the_224_px_studys_picks_are_its_specs_candidates_in_order(log):
    """The study's rows of the log come from experiments/zoo224/study.toml: each decision's candidates are its
    pick's stages (the default first) read from their folders, and the rule's switch (ResNet18 seed 0 distilled
    from Lite0 seed 2) is found there."""
    spec = study.load_study(study.EXPERIMENTS / "zoo224" / "study.toml")
    log = [d for d in log if all("(experiments/zoo224/runs/" in c.name for c in d.candidates)]  # not another study's
    rows = {d.question: d for d in log}
    assert len(rows) == len(log) > 0
    for p in spec.picks:
        first = spec.stage(p.options[0].stage)
        for seed in first.seeds:
            d = rows.get(f"{first.task} {first.arch} seed {seed}: {p.what}")
            if d is None:
                continue
            names = [c.name for c in d.candidates]
            assert names[0] == f"{p.options[0].label} (experiments/zoo224/runs/{first.name})"
            assert all(any(n.startswith(f"{o.label} (experiments/zoo224/runs/{o.stage})") for o in p.options)
                       for n in names)
            assert d.constraint == p.constraint
    switched = [d.question for d in log if d.switched and "seed 0: distillation" in d.question]
    assert switched == ["binary resnet18 seed 0: distillation"]
    assert rows["binary resnet18 seed 0: distillation"].outcome.endswith("(experiments/zoo224/runs/distill1_resnet18)")


@pytest.mark.parametrize("name", ["zoo224", "resnet18_rerun"])
def test_committed_study_log_is_the_generated_one(name):
    """experiments/<study>/decisions.md and picked.json are what ``zoo pick experiments/<study>/study.toml`` writes."""
    spec = study.load_study(study.EXPERIMENTS / name / "study.toml")
    rows, picked = study.pick_study(spec, write=False)
    assert (spec.folder / "decisions.md").read_text() == study.log_markdown(spec, rows)
    on_disk = json.loads((spec.folder / "picked.json").read_text())
    assert {f"{k.task}/{k.arch}": k.seed for k in picked if k.seed is not None} == \
        {k: v["seed"] for k, v in on_disk.items()}


def test_pick_writes_the_studys_decisions_and_picks(tmp_path):
    """``zoo pick`` on the committed 224-px runs: the same rows as the log, and each bundled pick's seed and runs."""
    spec = study.load_study(study.EXPERIMENTS / "zoo224" / "study.toml")
    out = tmp_path / "zoo224"
    shutil.copytree(spec.folder / "runs", out / "runs")
    rows, picked = study.pick_study(spec, out, ASSETS, n_boot=200)
    assert len(rows) == 14 and (out / "decisions.md").read_text().count("\n| ") == 14 + 1
    plan = json.loads((out / "picked.json").read_text())
    assert plan["binary/resnet18"]["seed"] == 0 and plan["binary/resnet18"]["runs"]["0"].endswith("distill1_resnet18")
    assert plan["binary/densenet121"]["seed"] == 0
    assert plan["three_class/densenet121"] == {"seed": 0, "runs": {"0": str(out / "runs" / "low_three_class")}}
    assert "binary/efficientnet_lite0" not in plan  # the teacher is trained, never bundled


def test_the_choices_named_in_advance_come_from_the_bundled_studys_spec(tmp_path):
    """The hierarchical model's default stage A and the seed ensemble ``compare --ensembles`` quotes are the demo
    zoo spec's ``[bundle] stage_a_default`` and ``seed_ensemble``, not code: another stated architecture leads the
    candidates or names the row; an architecture that is not bundled leaves no stage A decision; a spec without the
    field states none; a spec naming an unknown architecture fails in one line."""
    from pneumo_core.evaluation.comparison import ensemble_differences

    assert decisions.stated("stage_a_default") in decisions.stage_a_decision(ASSETS, n_boot=100).default
    d = decisions.stage_a_decision(ASSETS, n_boot=100, default="densenet121")
    assert d.default == f"densenet121 seed {decisions.bundled_seed(ASSETS, 'binary', 'densenet121')}"
    assert decisions.stage_a_decision(ASSETS, n_boot=100, default="mobilenet_v3_small") is None
    rows = ensemble_differences(ASSETS, n_boot=50, seed_ensemble="resnet18")
    assert rows[0]["name"].startswith("binary: ResNet18 seed ensemble - ensemble(")
    text = study.DEMO_ZOO.read_text()
    (tmp_path / "none.toml").write_text(text.replace('stage_a_default = "', 'unused = "'))
    assert decisions.stated("stage_a_default", tmp_path / "none.toml") is None
    (tmp_path / "bad.toml").write_text(re.sub(r'stage_a_default = "\w+"', 'stage_a_default = "vgg16"', text))
    with pytest.raises(study.StudyError, match=r"\[bundle\] stage_a_default: must be one of .*, not 'vgg16'$"):
        study.load_study(tmp_path / "bad.toml")
