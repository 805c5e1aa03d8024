"""One key for a zoo model: its names round-trip, the published names still read, the committed files parse."""
from __future__ import annotations

import pytest

from pneumo_core.errors import ModelError
from pneumo_core.evaluation import artifacts, selection
from pneumo_core.files import ASSETS
from pneumo_core.models.keys import (ENSEMBLE, HIERARCHICAL, ModelKey, parse_checkpoint_relpath,
                                     parse_prediction_file, seed_ensemble_key)
from pneumo_core.models.sources import bundled_source

KEYS = [ModelKey("binary", "resnet18"), ModelKey("binary", "resnet18", 2), ModelKey("three_class", "densenet121", 0),
        ModelKey("bacteria_virus", "densenet121"), ModelKey("bacteria_virus", "custom_cnn", 11),
        ModelKey("binary", ENSEMBLE), ModelKey("three_class", HIERARCHICAL),
        seed_ensemble_key("three_class", "resnet18")]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.source_key)
def test_every_name_of_a_key_reads_back_as_the_key(key):
    assert ModelKey.parse(key.source_key) == key
    assert ModelKey.parse(key.label) == key
    assert ModelKey.from_stem(key.task, key.stem) == key
    for suffix in (".pt", ".safetensors"):
        assert parse_checkpoint_relpath(key.checkpoint_relpath(suffix)) == key
        assert all(parse_checkpoint_relpath(rel) == key for rel in key.checkpoint_relpaths(suffix))
    for split in ("val", "test"):
        assert parse_prediction_file(key.prediction_file(split)) == (key, split)
    assert key.run_dirs()[0] == f"runs/{key.task}/{key.stem}"


def test_the_names_are_these():
    k = ModelKey("bacteria_virus", "densenet121", 0)
    assert k.source_key == "bacteria_virus/densenet121/seed0" and k.stem == "densenet121_seed0"
    assert k.label == "bacteria_virus · densenet121 · seed 0"
    assert k.checkpoint_relpaths() == ("checkpoints/bacteria_virus/densenet121_seed0.pt",
                                       "checkpoints/hierarchical/densenet121_bacteria_virus_seed0.pt")
    assert k.run_dirs() == ("runs/bacteria_virus/densenet121_seed0",
                            "runs/bacteria_virus/densenet121_bacteria_virus_seed0")
    assert k.best == ModelKey("bacteria_virus", "densenet121") and k.best.seed is None
    assert ModelKey("binary", "resnet18", 1).checkpoint_relpaths() == ("checkpoints/binary/resnet18_seed1.pt",)
    assert ModelKey("binary", ENSEMBLE).combined and ModelKey("three_class", HIERARCHICAL).combined
    assert not ModelKey("binary", "resnet18").combined
    e = seed_ensemble_key("three_class", "efficientnet_lite0")
    assert e.source_key == "three_class/efficientnet_lite0_seeds" and e.combined and e.seed is None
    assert e.label == "three_class · efficientnet_lite0 · seed ensemble" and e.ensembled_arch == "efficientnet_lite0"
    assert ModelKey("binary", "resnet18", 1).ensembled_arch is None
    assert ModelKey("binary", ENSEMBLE).ensembled_arch is None
    task, arch, seed = ModelKey("binary", "resnet18", 2)  # unpacks as (task, arch, seed)
    assert (task, arch, seed) == ("binary", "resnet18", 2)


def test_the_published_layout_reads():
    assert parse_checkpoint_relpath("checkpoints/hierarchical/densenet121_bacteria_virus.pt") == \
        ModelKey("bacteria_virus", "densenet121")
    assert parse_checkpoint_relpath("x/checkpoints/hierarchical/resnet18_bacteria_virus_seed3.pth") == \
        ModelKey("bacteria_virus", "resnet18", 3)
    assert parse_prediction_file("predictions/bacteria_virus/densenet121_bacteria_virus_seed0_val.csv") == \
        (ModelKey("bacteria_virus", "densenet121", 0), "val")
    for outside in ("checkpoints/other/resnet18.pt", "binary/resnet18.pt", "checkpoints/binary/resnet18.txt"):
        assert parse_checkpoint_relpath(outside) is None, outside
    assert parse_prediction_file("predictions/binary/notes.txt") is None
    assert parse_prediction_file("predictions/binary/resnet18_seed0_train.csv") is None


@pytest.mark.parametrize("text", ["resnet18", "nonesuch/resnet18", "binary/resnet18/seedX", "a/b/c/d", "",
                                  "binary · resnet18 · seed two"])
def test_a_text_that_is_no_key_is_a_one_line_error(text):
    with pytest.raises(ModelError, match="is not a model key") as e:
        ModelKey.parse(text)
    assert "\n" not in str(e.value)


def test_every_committed_file_has_a_key():
    """Every prediction file and bundled checkpoint under assets/ parses, and the bundled
    BACTERIA-vs-VIRUS model lies in our layout's folder named for its task."""
    files = sorted(ASSETS.glob("predictions/*/*.csv"))
    assert files
    for f in files:
        parsed = parse_prediction_file(str(f.relative_to(ASSETS)))
        assert parsed is not None and parsed[0].task == f.parent.name, f
    refs = bundled_source().list()
    assert {r.relpath for r in refs} == {str(p.relative_to(ASSETS / "models"))
                                         for p in (ASSETS / "models").glob("checkpoints/*/*.safetensors")}
    bv = bundled_source().find("bacteria_virus/densenet121")
    assert bv.relpath == "checkpoints/bacteria_virus/densenet121.safetensors"
    assert bundled_source().stamp("bacteria_virus/densenet121").startswith("densenet121.safetensors:")
    assert bundled_source().stamp("not a key") == ""


def test_set_choices_are_keys_without_magic_seeds():
    choices = selection.set_choices(ASSETS, ("binary", "three_class"))
    assert all(isinstance(k, ModelKey) for k in choices) and len(set(choices)) == len(choices)
    assert ModelKey("binary", ENSEMBLE) in choices and ModelKey("three_class", HIERARCHICAL) in choices
    assert all(k.seed is None or k.seed >= 0 for k in choices)
    assert all((k.seed is None) == k.combined for k in choices)
    runs = artifacts.runs(ASSETS)
    assert all(r.best == k and r.seed is not None for k, rs in runs.items() for r in rs)
    bv = runs[ModelKey("bacteria_virus", "densenet121")]
    assert artifacts.run_info(ASSETS, bv[0])  # a run log named the published way still reads
    assert len(artifacts.load_set(ASSETS, *bv[0], "val").y_true) > 0


def test_display_names_come_from_the_arch_whatever_the_key():
    from pneumo_core.explain.conclusions import display_name
    from pneumo_core.models.networks import get_arch

    for text in ("resnet18", "binary/resnet18", "binary/resnet18/seed2", "binary · resnet18 · seed 2"):
        assert display_name(text) == get_arch("resnet18").display_name == "ResNet18", text
    assert display_name("three_class/hierarchical") == "hierarchical"
    assert display_name("three_class/efficientnet_lite0_seeds") == "EfficientNet-Lite0 seed ensemble"
