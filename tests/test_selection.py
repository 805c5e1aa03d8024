"""One truth: the zoo's rules (pneumo_core.evaluation.selection) against the committed assets, the
bundled checkpoints, ``report`` and the Predict page's verdicts; and a shared predictor under threads."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from pneumo_core.evaluation import artifacts, selection
from pneumo_core.evaluation.predictions import ensemble, read_predictions
from pneumo_core.evaluation.report import report_many
from pneumo_core.evaluation.thresholds import choose
from pneumo_core.files import ASSETS
from pneumo_core.models.keys import ModelKey
from pneumo_core.models.sources import bundled_source

SOURCE = bundled_source()
BUNDLED = [r for r in SOURCE.list() if r.seed is None]


@pytest.mark.parametrize("ref", BUNDLED, ids=lambda r: r.key)
def test_bundled_checkpoint_is_the_rules_best_seed_with_its_validation_threshold(ref):
    meta = SOURCE.load(ref).meta
    best = selection.best_seed(ASSETS, ref.task, ref.arch)
    assert meta.seed == best
    val = artifacts.load_set(ASSETS, ref.task, ref.arch, best, "val")
    if val.is_binary:  # three-class models decide by the largest probability
        youden = choose(val.y_binary, val.p_positive, "youden").threshold
        assert meta.threshold == pytest.approx(youden, abs=1e-7)


def test_best_seed_is_the_bundled_checkpoints_and_the_rules():
    """An unbundled architecture's seed is the decision rule's (three-class ResNet18: seed 0, the default, kept); a
    bundled one's is its checkpoint's, which is the rule's for the binary models retrained for it (seed 0 kept,
    although seed 2 has the lower validation log loss: its paired interval holds 0)."""
    from sklearn.metrics import log_loss

    from pneumo_core.evaluation import decisions

    best = selection.best_seed(ASSETS, "three_class", "resnet18")
    assert best == selection.rule_seed(ASSETS, "three_class", "resnet18") == 0
    for task, arch in (("binary", "efficientnet_lite0"), ("binary", "resnet18")):
        losses = {}
        for s in artifacts.seeds_of(ASSETS, task, arch):
            v = artifacts.load_set(ASSETS, task, arch, s, "val")
            losses[s] = log_loss(v.y_true, v.probs, labels=list(range(len(v.classes))))
        assert min(losses, key=losses.get) == 2  # the lowest point estimate is not what the rule keeps
        assert selection.best_seed(ASSETS, task, arch) == decisions.bundled_seed(ASSETS, task, arch) == 0
        assert selection.rule_seed(ASSETS, task, arch) == 0


def test_the_best_bundled_binary_model_is_the_decision_functions_not_the_lowest_point_estimate():
    """Predict's and the Lesson's first model is stage A's decision (the spec's default, ResNet18, kept unless
    clearly beaten), not the lowest validation log loss: EfficientNet-Lite0 seed 0 is lower, inside the noise."""
    from pneumo_core.evaluation import decisions

    lowest = selection.best_model(ASSETS, "binary")  # without the bundle: the point estimate
    assert (lowest.arch, lowest.seed) == ("efficientnet_lite0", 0)
    best = selection.best_model(ASSETS, "binary", with_checkpoint=True)
    assert (best.arch, best.seed) == ("resnet18", 0)
    d = decisions.stage_a_decision(ASSETS)
    assert decisions.stage_a_arch(d) == best.arch and not d.switched
    assert selection.hierarchical_plan(ASSETS).stage_a == best


def test_selection_reads_no_test_split_file(monkeypatch):
    read = []
    real = artifacts.read_predictions
    monkeypatch.setattr(artifacts, "read_predictions",
                        lambda path, *a, **k: read.append(str(path)) or real(path, *a, **k))
    for cache in (selection._best_seed, selection._zoo_models, selection._hierarchical_plan):
        cache.cache_clear()  # earlier tests may have answered from the caches without reading
    for task in ("binary", "three_class", "bacteria_virus"):
        for z in selection.zoo_models(ASSETS, task):
            assert z.members
        for arch in artifacts.archs_of(ASSETS, task):
            selection.best_seed(ASSETS, task, arch)
    assert selection.hierarchical_plan(ASSETS) is not None
    assert read and not [p for p in read if "_test" in p]
    assert all(p.endswith("_val.csv") for p in read)


def test_ensemble_threshold_is_chosen_on_the_ensembles_own_validation_predictions():
    members = selection.ensemble_members(ASSETS, "binary")
    assert len(members) >= 2
    vals = [artifacts.load_set(ASSETS, m.task, m.arch, m.seed, "val") for m in members]
    tests = [artifacts.load_set(ASSETS, m.task, m.arch, m.seed, "test") for m in members]
    ens_val = ensemble(vals)
    want = choose(ens_val.y_binary, ens_val.p_positive, "youden")
    assert selection.ensemble_threshold(ASSETS, members) == pytest.approx(want.threshold)
    member_ts = [choose(v.y_binary, v.p_positive, "youden").threshold for v in vals]
    assert abs(np.mean(member_ts) - want.threshold) > 1e-3  # the old rule would give another number
    # report decides the ensemble at that threshold
    r = report_many(tests, member_ts, [None] * len(tests), ensemble_threshold=want.threshold, ensemble_op=want)
    assert r["ensemble"]["threshold"] == pytest.approx(want.threshold)


def test_report_cli_ensemble_uses_the_ensemble_validation_threshold(capsys):
    import json

    from pneumo_core.cli.main import main

    members = selection.ensemble_members(ASSETS, "binary")
    index = artifacts.prediction_index(ASSETS)
    path = {s: [index.query(f"task == 'binary' and arch == '{m.arch}' and seed == {m.seed} "
                            f"and split == '{s}'").path.iloc[0] for m in members]
            for s in ("val", "test")}
    assert main(["report", *path["test"], "--operating-point", "youden", "--on", *path["val"], "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    table = selection.ensemble_set(ASSETS, members, "test")
    t = selection.ensemble_threshold(ASSETS, members)
    assert r["ensemble"]["threshold"] == pytest.approx(t)
    pred = table.p_positive >= t
    assert r["ensemble"]["accuracy"] == pytest.approx(float((pred == table.y_binary).mean()))


@pytest.fixture(scope="module")
def sample_images(data_dir):
    test = read_predictions(ASSETS / "predictions" / "three_class" / "hierarchical_test.csv").frame
    ids = [i for i in test["image_id"] if "virus" in i][:2] + [i for i in test["image_id"] if "NORMAL" in i][:1]
    return ids


def test_predict_page_verdicts_equal_the_results_rows(sample_images, data_dir):
    """The Predict page's ensemble, seed-ensemble and hierarchical rows, run from the bundled models, give the
    probabilities of the committed prediction sets behind the results table (to three decimals)."""
    from pneumo_core.data.images import load_grayscale
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.inference.verdicts import zoo_verdicts

    keys = {r.key for r in SOURCE.list()}  # with a seed ensemble's other seeds
    predictors: dict = {}
    for image_id in sample_images:
        gray = load_grayscale(data_dir / image_id)

        def probs_of(key):
            p = predictors.setdefault(key, Predictor(SOURCE.load(key)))
            return p.predict_grays([gray])[0]

        verdicts = {(v.task, v.model): v for v in zoo_verdicts(ASSETS, keys, probs_of)}
        for task in ("binary", "three_class"):
            members = selection.ensemble_members(ASSETS, task)
            if not members or not {m.key for m in members} <= keys:
                continue
            row = selection.ensemble_set(ASSETS, members, "test").frame.set_index("image_id").loc[image_id]
            v = verdicts[(task, selection.ensemble_name(members))]
            want = [row[f"prob_{c}"] for c in v.classes]
            np.testing.assert_allclose(v.probs, want, atol=1e-3)
            t = selection.ensemble_threshold(ASSETS, members)
            assert (t is None) == (task != "binary")
        for z in (z for task in ("binary", "three_class") for z in selection.zoo_models(ASSETS, task)
                  if z.kind == "seeds"):  # a seed ensemble: the mean of its bundled seeds, as its row
            row = selection.seed_ensemble_set(ASSETS, z.task, z.members[0].arch, "test").frame.set_index("image_id")
            v = verdicts[(z.task, z.name)]
            np.testing.assert_allclose(v.probs, [row.loc[image_id, f"prob_{c}"] for c in v.classes], atol=1e-3)
        hier = read_predictions(ASSETS / "predictions" / "three_class" / "hierarchical_test.csv").frame
        hier = hier.set_index("image_id")
        v = verdicts[("three_class", "hierarchical")]
        np.testing.assert_allclose(v.probs, [hier.loc[image_id, f"prob_{c}"] for c in v.classes], atol=1e-3)


def test_results_table_carries_intervals_and_the_rules_members():
    from pneumo_core.evaluation.results import load_results

    t = load_results(ASSETS).set_index("model")
    members = selection.ensemble_members(ASSETS, "binary")
    row = t.loc[selection.ensemble_name(members)]
    assert "[" in row["auroc"] and "[" in row["accuracy"]
    assert float(row["threshold"]) == pytest.approx(selection.ensemble_threshold(ASSETS, members), abs=5e-4)
    plan = selection.hierarchical_plan(ASSETS)
    assert t.loc["hierarchical", "init"] == plan.description


def test_shared_predictor_gives_serial_cams_under_threads(data_dir):
    """CAMs on real test images in one thread while another predicts single images on the same
    predictor equal the CAMs computed alone (the forward pass takes the predictor's lock)."""
    from pneumo_core.data.images import load_grayscale
    from pneumo_core.explain.cams import explain
    from pneumo_core.inference.predictors import Predictor

    predictor = Predictor(SOURCE.load("binary/resnet18"))
    paths = (sorted((data_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:12]
             + sorted((data_dir / "test" / "NORMAL").glob("*.jpeg"))[:4])
    grays = [load_grayscale(p) for p in paths]
    serial = [explain(predictor, g, "gradcam", faithfulness=False).raw for g in grays]
    stop = threading.Event()

    def hammer():
        k = 0
        while not stop.is_set():
            predictor.predict_grays([grays[k % len(grays)]])
            k += 1

    t = threading.Thread(target=hammer)
    t.start()
    try:
        threaded = [explain(predictor, g, "gradcam", faithfulness=False).raw for g in grays]
    finally:
        stop.set()
        t.join()
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a, b)


def test_a_member_is_the_model_key_of_its_architectures_bundled_seed():
    """One key for a zoo model: the rule's members are ModelKeys (their files named by keys.py); ``key`` names the
    architecture's best checkpoint, which is the member's seed."""
    from pneumo_core.evaluation.decisions import bundled_seed

    plan = selection.hierarchical_plan(ASSETS)
    members = [*selection.ensemble_members(ASSETS, "binary"), plan.stage_a, plan.stage_b]
    for m in members:
        assert isinstance(m, ModelKey) and m == ModelKey(m.task, m.arch, m.seed) and m.seed is not None
        assert m.key == f"{m.task}/{m.arch}" and SOURCE.load(m.key).meta.seed == m.seed
        assert (ASSETS / m.prediction_file("val")).is_file()
        assert bundled_seed(ASSETS, m.task, m.arch) == m.seed


def test_best_first_moves_the_rules_best_model_to_the_front():
    from pneumo_core.evaluation.selection import best_first, best_model
    from pneumo_core.files import ASSETS

    best = best_model(ASSETS, "binary", with_checkpoint=True)
    keys = ["binary/custom_cnn", "binary/densenet121", "binary/efficientnet_lite0", "binary/resnet18"]
    ordered = best_first(keys, best.key)
    assert ordered[0] == best.key and sorted(ordered) == sorted(keys)
    assert best_first(keys, "binary/absent") == keys and best_first(keys, None) == keys


@pytest.mark.parametrize("ref", [r for r in SOURCE.list() if r.seed is not None], ids=lambda r: r.key)
def test_a_bundled_seed_checkpoint_is_that_seed_and_its_files_run(ref):
    """A seed ensemble's other seeds (``<arch>_seed<n>.safetensors``): each is that seed, with its own validation
    threshold where it has one, and a member of a model the app runs."""
    meta = SOURCE.load(ref).meta
    assert meta.seed == ref.seed != selection.best_seed(ASSETS, ref.task, ref.arch)
    val = artifacts.load_set(ASSETS, ref.task, ref.arch, ref.seed, "val")
    if val.is_binary:
        assert meta.threshold == pytest.approx(choose(val.y_binary, val.p_positive, "youden").threshold, abs=1e-7)
    assert ref.key in selection.runnable_keys(ASSETS)


def test_the_first_three_class_model_is_the_decision_functions():
    """The three-class model the app shows first (Predict's first three-class row, the pages' first set) is the
    decision function's pick, the spec's stated default kept unless clearly beaten on validation; its decision is a
    row of the committed log; without a stated default the lowest validation log loss comes first."""
    from pneumo_core.evaluation import decisions

    d = selection.default_decision(ASSETS, "three_class")
    stated = decisions.stated("three_class_default")
    assert stated is not None and d.extra["choices"][d.default].arch == stated
    first = selection.first_choice(ASSETS, "three_class")
    assert first == d.extra["choices"][d.outcome]
    assert d.outcome == d.default or next(c for c in d.candidates if c.name == d.outcome).clears
    models = selection.zoo_models(ASSETS, "three_class")
    assert first == ModelKey(task="three_class", arch="hierarchical") or models[0].choice == first
    assert selection.set_choices(ASSETS, ("three_class",))[0] == first
    assert {c.name for c in d.candidates} == {z.name for z in models} | {"hierarchical"}
    assert f"| {d.question} |" in (ASSETS / "decisions.md").read_text()


def test_without_a_stated_default_the_first_model_is_the_lowest_validation_log_loss(monkeypatch):
    from pneumo_core.evaluation import decisions

    monkeypatch.setattr(decisions, "stated", lambda choice, spec=None: None)
    assert selection.first_choice(ASSETS, "three_class") is None
    losses = [decisions.selection_loss(selection.load_choice(ASSETS, *z.choice, "val"))
              for z in selection.zoo_models(ASSETS, "three_class")]
    assert losses == sorted(losses) and len(losses) >= 3


def test_a_stated_default_leads_unless_a_challenger_clears_it(monkeypatch):
    """Stating another default (three-class DenseNet121 alone) moves it first unless another model's paired
    interval lies wholly below it; then the lowest of those that clear it leads."""
    from pneumo_core.evaluation import decisions

    monkeypatch.setattr(decisions, "stated", lambda choice, spec=None: "densenet121" if "three" in choice else None)
    d = selection.default_decision(ASSETS, "three_class")
    assert d.default.startswith("densenet121 (seed ")
    clear = [c for c in d.candidates if c.clears]
    want = min(clear, key=lambda c: c.val_loss).name if clear else d.default
    assert d.outcome == want
    assert selection.first_choice(ASSETS, "three_class") == d.extra["choices"][want]
