"""The zoo's bundling on real tiny runs (fp32 re-prediction, best-seed export, hierarchical model, results table)
and studies as specs: the parser's one-line errors, the two committed specs, a tiny demo zoo trained, picked and
bundled from its spec."""
from __future__ import annotations

import json
import shutil

import huggingface_hub.constants
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pneumo_core.evaluation.predictions import read_predictions
from pneumo_core.training.loop import select_best_seed
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.decisions import Picked
from pneumo_core.models.checkpoints import load_checkpoint
from pneumo_core.cli.main import main as cli_main
from pneumo_core.evaluation import artifacts
from pneumo_core.files import ASSETS
from pneumo_core.data.images import load_grayscale
from pneumo_core.inference.predictors import Predictor
from pneumo_core.inference.verdicts import zoo_verdicts
from pneumo_core.models.keys import seed_ensemble_key
from pneumo_core.models.sources import LocalSource, checkpoint_relpath
from pneumo_core.training import study
from pneumo_core.training.zoo import bundle, export_best, export_seeds, repredict
from tests.checkpoint_utils import make_hub_cache, tiny_checkpoint
from tests.zoo_fixture import copy_zoo


@pytest.fixture(scope="module")
def zoo(tmp_path_factory, tiny_zoo):
    """The session's tiny zoo, its custom_cnn (two binary seeds, bacteria_virus, three_class) and resnet18 runs."""
    out = copy_zoo(tiny_zoo, tmp_path_factory.mktemp("zoo") / "zoo", archs=("custom_cnn", "resnet18"))
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
    bv = read_predictions(zoo / "predictions" / "bacteria_virus" / "custom_cnn_seed0_test.csv")
    assert set(bv.classes) == {"BACTERIA", "VIRUS"} and len(bv.frame) == 390


def test_bundle_exports_models_hierarchical_and_table(zoo, data_dir, tmp_path):
    table = bundle(zoo, data_dir, tmp_path, leave_out=["binary/resnet18"])
    models = sorted(p.relative_to(tmp_path / "models").as_posix() for p in (tmp_path / "models").rglob("*.safetensors"))
    assert models == ["checkpoints/bacteria_virus/custom_cnn.safetensors", "checkpoints/binary/custom_cnn.safetensors",
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


def test_bundling_every_seed_makes_the_seed_ensemble_a_model_of_the_app(zoo, data_dir, tmp_path, normal_image):
    """[bundle] all_seeds: the other seeds as <arch>_seed<n>.safetensors beside the best; the results table's
    seed-ensemble row becomes a model the app runs, its verdict the mean of the bundled seeds' probabilities at the
    seed ensemble's own validation threshold (issue 26 item 4)."""
    bundle(zoo, data_dir, tmp_path, leave_out=["binary/resnet18"], all_seeds=["binary/custom_cnn"])
    best = selection.best_seed(tmp_path, "binary", "custom_cnn")
    other = 1 - best
    f = tmp_path / "models" / checkpoint_relpath("binary", "custom_cnn", other, ".safetensors")
    assert load_checkpoint(f).meta.seed == other
    assert not list((tmp_path / "models/checkpoints/three_class").glob("*_seed*"))  # one seed there: nothing to add
    z = next(z for z in selection.zoo_models(tmp_path, "binary") if z.kind == "seeds")
    assert z.name == "custom_cnn (2-seed ensemble)" and z.choice == seed_ensemble_key("binary", "custom_cnn")
    assert set(z.keys) == {"binary/custom_cnn", f"binary/custom_cnn/seed{other}"}
    val = selection.seed_ensemble_set(tmp_path, "binary", "custom_cnn", "val")
    files = [read_predictions(tmp_path / f"predictions/binary/custom_cnn_seed{s}_val.csv") for s in (0, 1)]
    np.testing.assert_allclose(val.p_positive, np.mean([p.p_positive for p in files], axis=0))
    assert z.threshold == pytest.approx(selection.threshold_on(val))

    src = LocalSource(tmp_path / "models")
    gray = load_grayscale(normal_image)
    probs = {k: Predictor(src.load(k)).predict_grays([gray])[0] for k in z.keys}
    assert not np.allclose(*probs.values())  # two different models
    v = next(v for v in zoo_verdicts(tmp_path, set(probs), probs.__getitem__) if v.model == z.name)
    np.testing.assert_allclose(v.probs, np.mean(list(probs.values()), axis=0))
    assert v.members == z.keys and v.threshold == z.threshold
    assert selection.load_choice(tmp_path, *z.choice, "val").p_positive.tolist() == val.p_positive.tolist()

    f.unlink()  # a seed's checkpoint missing: the seed ensemble is no model of the app
    assert all(z.kind != "seeds" for z in selection.zoo_models(tmp_path, "binary"))
    export_best(zoo, "binary", "custom_cnn", tmp_path / "models", other, as_seed=True)
    export_seeds(zoo, "binary", "custom_cnn", tmp_path / "models", [])  # a bundle without it: the seed files go
    assert not list((tmp_path / "models/checkpoints/binary").glob("*_seed*"))


# ---------------------------------------------------------------- studies as specs (issue 27)

STUDY_224 = study.EXPERIMENTS / "zoo224" / study.SPEC
GOOD = """
[study]
name = "s"

[[stage]]
name = "a"
task = "binary"
arch = "resnet18"
init = "scratch"
image_size = 128
epochs = 8
seeds = [0, 1]

[[stage]]
name = "b"
task = "binary"
arch = "resnet18"
init = "stage:a"
image_size = 224
epochs = 3
seeds = [0, 1]

[[pick]]
candidates = ["a", { stage = "b", label = "224 px" }]
"""


def test_a_good_spec_reads_as_stages_and_picks(tmp_path):
    (tmp_path / "study.toml").write_text(GOOD)
    s = study.load_study(tmp_path)
    assert [st.name for st in s.stages] == ["a", "b"] and s.stage("b").parent == "a"
    assert s.stage("b").config == {"image_size": 224, "epochs": 3}
    assert [(o.stage, o.label) for o in s.picks[0].options] == [("a", "a"), ("b", "224 px")]
    cfg = study.run_config(s, s.stage("b"), 1, tmp_path / "out", "data")
    assert (cfg.seed, cfg.image_size, cfg.epochs) == (1, 224, 3)
    assert cfg.init == str(tmp_path / "out/runs/a/checkpoints/binary/resnet18_seed1.pt")  # its own seed's run


@pytest.mark.parametrize("old, new, message", [
    ('name = "s"', 'name = "S s"', "[study] name: must be a folder name"),
    ("epochs = 8", 'epochs = "8"', "[[stage]] 'a' epochs: must be a non-negative int, not '8'"),
    ("epochs = 8", "epoch = 8", "[[stage]] 'a': unknown field 'epoch'"),
    ("epochs = 8", "lr = -1.0", "[[stage]] 'a' lr: must be a non-negative int or float"),
    ('task = "binary"', 'task = "binray"', "[[stage]] 'a' task: must be one of"),
    ("seeds = [0, 1]", "seeds = []", "[[stage]] 'a' seeds: must be a non-empty list"),
    ('init = "stage:a"', 'init = "stage:c"', "[[stage]] 'b' init: stage 'c' is not an earlier stage"),
    ('init = "stage:a"', 'init = "hf://only-a-repo"', "[[stage]] 'b' init: a Hub file is hf://"),
    ("epochs = 3", 'epochs = 3\nteacher = { stage = "b" }', "[[stage]] 'b' teacher stage: 'b' is not an earlier"),
    ('candidates = ["a"', 'candidates = ["z"', "[[pick]] 1 candidates: 'z' is not a stage"),
    ("[[pick]]", "[[pik]]", "the file: unknown field 'pik'"),
    ("[[pick]]", '[bundle]\nthree_class_default = "best"\n[[pick]]', "[bundle] three_class_default: must be one of "
                                                                       "ensemble, hierarchical, "),
    ("[[pick]]", '[bundle]\nall_seeds = "binary/resnet18"\n[[pick]]',
     "[bundle] all_seeds: must be a list of TASK/ARCH"),
    ('name = "s"', 'name = "s', "not TOML"),
])
def test_a_bad_spec_fails_in_one_line_naming_the_field(tmp_path, old, new, message):
    assert old in GOOD
    f = tmp_path / "study.toml"
    f.write_text(GOOD.replace(old, new, 1))
    with pytest.raises(study.StudyError) as err:
        study.load_study(f)
    assert message in str(err.value) and str(err.value).startswith(str(f)) and "\n" not in str(err.value)


def test_a_missing_starting_checkpoint_fails_in_one_line_before_any_training(tmp_path, capsys, data_dir):
    (tmp_path / "study.toml").write_text(GOOD.replace('init = "scratch"', 'init = "low/resnet18_seed{seed}.pt"'))
    assert cli_main(["zoo", "train", str(tmp_path), "--data-dir", str(data_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {tmp_path / 'study.toml'}: stage 'a' seed 0: starting checkpoint "
                   f"{tmp_path / 'low/resnet18_seed0.pt'} not found")
    assert not (tmp_path / "runs").exists()


def test_a_hub_starting_checkpoint_that_cannot_be_fetched_fails_in_one_line(tmp_path):
    """``init = "hf://OWNER/REPO@REVISION/PATH"`` is fetched when its run starts; offline (as tests run) it names
    the file and stops there."""
    (tmp_path / "study.toml").write_text(GOOD.replace('init = "scratch"',
                                                      'init = "hf://owner/repo@v1/binary/resnet18_seed{seed}.pt"'))
    s = study.load_study(tmp_path)
    study.check_inputs(s)  # Hub files are fetched on the way, not checked beforehand
    with pytest.raises(study.StudyError) as err:
        study.run_config(s, s.stage("a"), 1, tmp_path, "data")
    assert str(err.value).startswith(f"{tmp_path / 'study.toml'}: stage 'a' seed 1: starting checkpoint "
                                     "hf://owner/repo@v1/binary/resnet18_seed1.pt not available (")
    assert "\n" not in str(err.value)


def test_a_hub_starting_checkpoint_comes_through_huggingface_hub(tmp_path, monkeypatch):
    """The same spec with the file in a huggingface_hub cache laid out as a download leaves it (HF_HUB_OFFLINE=1,
    as tests run): the run starts from the cached file of that revision, read by ``hf_hub_download`` itself."""
    ckpt = tiny_checkpoint(tmp_path / "src" / "resnet18_seed1.pt")
    cache = tmp_path / "hf-cache"
    make_hub_cache(cache, "owner/repo", {"binary/resnet18_seed1.pt": ckpt}, commit="b" * 40, refs=("v1",))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    (tmp_path / "study.toml").write_text(GOOD.replace('init = "scratch"',
                                                      'init = "hf://owner/repo@v1/binary/resnet18_seed{seed}.pt"'))
    s = study.load_study(tmp_path)
    init = study.run_config(s, s.stage("a"), 1, tmp_path, "data").init
    assert init == str(cache / "models--owner--repo" / "snapshots" / ("b" * 40) / "binary/resnet18_seed1.pt")
    assert load_checkpoint(init).meta.arch == "custom_cnn"  # the tiny file put there
    with pytest.raises(study.StudyError):  # a file the cached revision does not hold (seed 0) is not fetched
        study.run_config(study.load_study(tmp_path), s.stage("a"), 0, tmp_path, "data")


def test_zoo_train_resumes_an_interrupted_run_and_skips_finished_ones(tmp_path, data_dir):
    """A run stopped after its first epoch (as kill -9 would) continues from its resume state on the next
    ``zoo train``: epoch 1 is not trained again; a third call trains nothing."""
    tiny = GOOD.replace('arch = "resnet18"', 'arch = "custom_cnn"').split("[[stage]]\nname = \"b\"")[0]
    tiny = tiny.replace("image_size = 128\nepochs = 8\nseeds = [0, 1]",
                        "image_size = 32\nepochs = 2\nlimit = 16\nbatch_size = 8\nlr = 1e-3\nseeds = [0]")
    (tmp_path / "study.toml").write_text(tiny)
    s = study.load_study(tmp_path)
    over = {"cache_dir": str(tmp_path / "cache")}

    class Stop(Exception):
        pass

    def die(msg: str) -> None:
        if "custom_cnn_seed0 epoch 1/2:" in msg:
            raise Stop

    with pytest.raises(Stop):
        study.train_study(s, data_dir, log=die, **over)
    run = tmp_path / "runs" / "a" / "runs" / "binary" / "custom_cnn_seed0"
    assert not (run / "metrics.json").exists()
    logged: list[str] = []
    assert len(study.train_study(s, data_dir, log=logged.append, **over)) == 1
    assert not any("epoch 1/2:" in m for m in logged) and any("epoch 2/2:" in m for m in logged)
    history = json.loads((run / "history.json").read_text())
    assert [h["epoch"] for h in history if h["phase"] == "finetune"] == [1, 2]
    assert study.train_study(s, data_dir, log=logged.append, **over) == []


def test_train_py_zoo_trains_the_demo_spec():
    """The demo spec holds one stage per model of the committed zoo (assets/predictions), each task/arch once."""
    plan = study.plan(study.load_study(study.DEMO_ZOO))
    keys = [(e["task"], e["arch"]) for e in plan]
    committed = {(t, a) for t in ("binary", "three_class", "bacteria_virus") for a in artifacts.archs_of(ASSETS, t)}
    assert len(keys) == len(set(keys)) and set(keys) == committed
    for e in plan:  # each stage's seeds are the committed ones (ResNet18 / DenseNet121 binary: then 224 px)
        assert set(e["seeds"]) <= set(artifacts.seeds_of(ASSETS, e["task"], e["arch"]))


def test_the_224_px_spec_restates_its_committed_runs():
    """Every committed run under experiments/zoo224/runs/<stage> was trained with its stage's recipe: seed,
    resolution, epochs, learning rate, init (a checkpoint for a stage that starts from another) and teacher."""
    s = study.load_study(STUDY_224)
    seen = set()
    for st in s.stages:
        root = study.stage_root(s, None, st.name)
        for f in sorted(root.glob(f"runs/{st.task}/*/metrics.json")):
            cfg = json.loads(f.read_text())["config"]
            want = study.run_config(s, st, cfg["seed"], None, "data")
            assert cfg["seed"] in st.seeds and (cfg["task"], cfg["arch"]) == (st.task, st.arch), f
            for k in ("image_size", "epochs", "head_epochs", "freeze_fraction", "lr"):
                assert cfg[k] == getattr(want, k), (f, k)
            assert (cfg["init"] in ("scratch", "imagenet")) == (st.parent is None), f
            if st.parent is None:
                assert cfg["init"] == st.init, f
            assert len(cfg.get("teacher") or []) == (len(st.teacher.seeds) if st.teacher else 0), f
            seen.add(st.name)
    assert seen == {st.name for st in s.stages}


def test_a_study_bundles_the_picks_whose_checkpoint_is_on_disk(tmp_path):
    """Only picks whose run's checkpoint is on disk (a .pt or an fp16 .safetensors export) are bundled, the others
    named and left as assets/ has them; the picked zoo holds our file names (the BACTERIA-vs-VIRUS run's are the
    published ones) and the exported seed is the pick's."""
    runs = study.EXPERIMENTS / "zoo224" / "runs"
    bv, three = tmp_path / "low_bacteria_virus", tmp_path / "low_three_class"
    for name, dst in (("low_bacteria_virus", bv), ("low_three_class", three)):
        shutil.copytree(runs / name, dst, ignore=shutil.ignore_patterns("checkpoints"))
    ck = bv / "checkpoints" / "bacteria_virus" / "densenet121_seed0.safetensors"
    ck.parent.mkdir(parents=True)
    shutil.copyfile(ASSETS / "models" / checkpoint_relpath("bacteria_virus", "densenet121", suffix=".safetensors"), ck)
    picks = [Picked("bacteria_virus", "densenet121", {0: bv}, 0), Picked("three_class", "densenet121", {0: three}, 0)]

    ready, missing = study.ready_to_bundle(picks)
    assert ready == picks[:1]
    assert len(missing) == 1 and missing[0].startswith("three_class/densenet121: not bundled")
    assert str(three / checkpoint_relpath("three_class", "densenet121", 0)) in missing[0]
    with pytest.raises(study.StudyError, match="checkpoint is missing"):
        study.picked_zoo(picks[1:], tmp_path / "none")

    zoo = study.picked_zoo(ready, tmp_path / "zoo")
    assert sorted(p.relative_to(zoo).as_posix() for p in zoo.rglob("*") if p.is_file()) == [
        "checkpoints/bacteria_virus/densenet121_seed0.safetensors",
        "predictions/bacteria_virus/densenet121_seed0_test.csv", "predictions/bacteria_virus/densenet121_seed0_val.csv",
        "runs/bacteria_virus/densenet121_seed0/history.json", "runs/bacteria_virus/densenet121_seed0/metrics.json"]
    src = bv / "predictions" / "bacteria_virus" / "densenet121_bacteria_virus_seed0_val.csv"
    assert (zoo / "predictions/bacteria_virus/densenet121_seed0_val.csv").read_bytes() == src.read_bytes()
    out = export_best(zoo, "bacteria_virus", "densenet121", tmp_path / "models", seed=0)
    meta = load_checkpoint(out).meta
    assert meta.seed == 0 and meta.threshold == pytest.approx(
        selection.model_threshold(zoo, selection.Member("bacteria_virus", "densenet121", 0)))


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """The demo spec, one stage per task, as custom_cnn at 32 px for one epoch on a handful of images."""
    demo = study.load_study(study.DEMO_ZOO)
    tiny = demo.overridden(["binary_efficientnet_lite0", "three_class_efficientnet_lite0",
                            "bacteria_virus_densenet121"], arch="custom_cnn", init="scratch", seeds=[0, 1],
                           image_size=32, epochs=1, head_epochs=0, freeze_fraction=0.0, limit=24, batch_size=8,
                           cache_dir=str(tmp_path_factory.mktemp("cache")))
    assert tiny.repredict  # seeds limited to a few images each are re-predicted on whole splits to be bundled
    return tiny, tmp_path_factory.mktemp("study")


@pytest.mark.slow  # six tiny runs, each re-predicted on the whole val and test splits: ~1.5 min of CPU
def test_a_tiny_demo_zoo_trains_picks_and_bundles(tiny_study, data_dir, tmp_path):
    s, out = tiny_study
    assert len(s.picks) == 3
    ran = study.train_study(s, data_dir, out, log=lambda m: None)
    assert len(ran) == 6
    assert study.train_study(s, data_dir, out, log=lambda m: None) == []  # done runs are skipped
    for st in s.stages:
        assert (study.stage_root(s, out, st.name) / checkpoint_relpath(st.task, "custom_cnn")).is_file()  # best

    rows, picked = study.pick_study(s, out, tmp_path)
    assert {(k.task, k.arch) for k in picked} == {("binary", "custom_cnn"), ("three_class", "custom_cnn"),
                                                  ("bacteria_virus", "custom_cnn")}
    plan = json.loads((out / "picked.json").read_text())
    assert {k: v["seed"] for k, v in plan.items()} == {f"{k.task}/{k.arch}": k.seed for k in picked}
    assert (out / "decisions.md").is_file() and (out / "decisions.csv").is_file()

    assets = tmp_path / "assets"
    table = study.bundle_study(s, data_dir, out, assets)
    models = sorted(p.relative_to(assets / "models").as_posix() for p in (assets / "models").rglob("*.safetensors"))
    assert models == ["checkpoints/bacteria_virus/custom_cnn.safetensors", "checkpoints/binary/custom_cnn.safetensors",
                      "checkpoints/three_class/custom_cnn.safetensors"]
    for k in picked:  # the bundle holds what the pick chose
        meta = load_checkpoint(assets / "models" / checkpoint_relpath(k.task, k.arch, suffix=".safetensors")).meta
        assert meta.seed == k.seed
    assert len(read_predictions(assets / "predictions" / "three_class" / "hierarchical_test.csv").frame) == 624
    assert "hierarchical" in set(table["model"]) and (assets / "results.md").is_file()
