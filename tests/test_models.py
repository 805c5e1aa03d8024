"""The zoo: published-compatible state dict names, heads, Grad-CAM layers, init choices."""
from __future__ import annotations

import time

import pytest
import torch

from pneumo_core.models.checkpoints import CheckpointMeta, infer_arch, save_checkpoint
from pneumo_core.errors import ModelError, WeightsUnavailableError
from pneumo_core.models.networks import (ARCHS, DEFAULT_ARCH, FEATURE_ARCH, arch_of_state, build_model, cam_layer_of,
                                        get_arch, head_of, imagenet_weights_file)


@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_arch_builds_predicts_and_is_recognised(arch):
    model = build_model(arch, 3).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 3)
    assert head_of(model, arch).out_features == 3
    assert isinstance(cam_layer_of(model, arch), torch.nn.Module)
    # the architecture can be told from the tensors alone (published files)
    assert infer_arch(model.state_dict()) == arch


@pytest.mark.parametrize("arch", list(ARCHS))
def test_each_arch_entry_describes_its_network(arch):
    """What the package knows about an architecture comes from its Arch: the state-dict signature picks it
    alone, the sanity check's layers are modules of it (its head among them), its default init loads
    offline, and a published file of it is read at its resolution."""
    a, model = get_arch(arch), build_model(arch, 1)
    sd = model.state_dict()
    assert [b.name for b in ARCHS.values() if b.matches(sd)] == [arch] and arch_of_state(sd) == arch
    names = dict(model.named_modules())
    assert all(n in names for n in a.sanity_layers) and any(a.head == n or a.head.startswith(n + ".")
                                                             for n in a.sanity_layers)
    if a.default_init == "imagenet":
        assert a.imagenet_loader is not None  # weights that ship with a package: no download
    assert a.display_name and a.display_name != arch or arch == "custom_cnn"
    assert isinstance(a.channels_last, bool) and 16 <= a.image_size <= 2048
    assert DEFAULT_ARCH in ARCHS and FEATURE_ARCH in ARCHS


def test_a_published_file_gets_its_arch_resolution(tmp_path):
    path = tmp_path / "checkpoints" / "binary" / "resnet18.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": build_model("resnet18", 1).state_dict()}, path)
    from pneumo_core.models.checkpoints import load_checkpoint

    assert load_checkpoint(path).meta.prep.image_size == get_arch("resnet18").image_size


def test_a_state_dict_of_no_zoo_arch_matches_none():
    assert arch_of_state({"conv.weight": torch.zeros(1)}) is None
    with pytest.raises(Exception, match="cannot tell the architecture"):
        infer_arch({"conv.weight": torch.zeros(1)})


def test_custom_cnn_matches_the_published_layout():
    sd = build_model("custom_cnn", 1).state_dict()
    assert sd["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert "features.0.0.bias" not in sd  # conv without bias
    assert sd["features.2.0.weight"].shape == (128, 64, 3, 3)
    assert sd["classifier.3.weight"].shape == (1, 128)
    assert {k.split(".")[0] for k in sd} == {"features", "classifier"}


def test_densenet_cam_layer_is_post_activation():
    model = build_model("densenet121", 1).eval()
    acts = []
    h = cam_layer_of(model, "densenet121").register_forward_hook(lambda m, i, o: acts.append(o))
    with torch.no_grad():
        model(torch.randn(1, 3, 96, 96))
    h.remove()
    assert acts[0].min() >= 0 and acts[0].max() > 0  # non-negative, not blank


def test_efficientnet_lite0_imagenet_weights_load_offline():
    scratch = build_model("efficientnet_lite0", 1, "scratch")
    pre = build_model("efficientnet_lite0", 1, "imagenet")
    assert not torch.equal(scratch._conv_stem.weight, pre._conv_stem.weight)
    # the packaged weights are the real ones: BN running stats are not the init defaults
    assert not torch.allclose(pre._bn0.running_var, torch.ones_like(pre._bn0.running_var))


def test_missing_imagenet_file_is_a_clear_fast_error(tmp_path, monkeypatch):
    import urllib.error

    def offline(*a, **k):  # the same on a machine with network: the download is what fails
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = imagenet_weights_file("resnet18")
    assert str(expected).startswith(str(tmp_path))
    t = time.time()
    with pytest.raises(WeightsUnavailableError, match=r"resnet18-f37072fd\.pth.*scratch"):
        build_model("resnet18", 1, "imagenet")
    assert time.time() - t < 30
    with pytest.raises(WeightsUnavailableError, match="scratch"):
        build_model("custom_cnn", 1, "imagenet")


def test_imagenet_file_in_torch_home_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ref = build_model("resnet18", 1000)
    path = imagenet_weights_file("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    model = build_model("resnet18", 2, "imagenet")
    assert torch.equal(model.conv1.weight, ref.conv1.weight)
    assert model.fc.out_features == 2


def test_init_from_a_checkpoint_path_keeps_the_new_head(tmp_path):
    src = build_model("resnet18", 1)
    meta = CheckpointMeta(arch="resnet18", task="binary", classes=["NORMAL", "PNEUMONIA"], n_outputs=1)
    path = save_checkpoint(tmp_path / "b.pt", src.state_dict(), meta)
    three = build_model("resnet18", 3, str(path))
    assert torch.equal(three.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    assert three.fc.out_features == 3
    with pytest.raises(ModelError, match="does not fit densenet121"):
        build_model("densenet121", 1, str(path))
    with pytest.raises(ModelError, match="scratch"):
        build_model("resnet18", 1, "no/such/file.pt")
    with pytest.raises(ModelError, match="unknown architecture 'vgg'"):
        build_model("vgg", 1)
