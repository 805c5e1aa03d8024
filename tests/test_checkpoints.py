"""Checkpoint format, safe loading, and both sources (local folder, Hub via a real local HF cache)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pneumo_core.models.checkpoints import (
    CheckpointMeta,
    export_safetensors,
    load_checkpoint,
    save_checkpoint,
)
from pneumo_core.errors import ArchitectureMismatchError, CheckpointError, SourceUnavailableError, UnsafeCheckpointError
from pneumo_core.data.images import load_grayscale
from pneumo_core.models.networks import build_model
from pneumo_core.data.preprocessing import to_tensor
from pneumo_core.models.sources import (
    DEFAULT_REPO,
    HubSource,
    LocalSource,
    checkpoint_relpath,
    parse_relpath,
    resolve_checkpoint,
)
from pneumo_core.data.tasks import logits_to_probs
from tests.checkpoint_utils import BINARY, make_hub_cache, tiny_checkpoint
from tests.cli_utils import one_line_error, run_cli


def _published(path: Path, arch: str, n_out: int, seed: int = 0) -> torch.nn.Module:
    """A checkpoint as the published repo writes it: a plain dict, no metadata of ours."""
    torch.manual_seed(seed)
    model = build_model(arch, n_out).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"epoch": 7, "model_state_dict": model.state_dict(), "optimizer_state_dict": {},
                "metrics": {"val_loss": np.float64(0.21), "val_auroc": 0.97}}, path)
    return model


def _predict(model, images):
    x = torch.stack([to_tensor(load_grayscale(p)) for p in images])
    with torch.no_grad():
        return logits_to_probs(model.eval()(x))


@pytest.fixture()
def published_repo(tmp_path):
    """A folder laid out like luanacarolina/pneumonia-chest-xray-classifier."""
    root = tmp_path / "repo"
    models = {
        "checkpoints/binary/custom_cnn.pt": _published(root / "checkpoints/binary/custom_cnn.pt", "custom_cnn", 1),
        "checkpoints/three_class/resnet18.pt": _published(root / "checkpoints/three_class/resnet18.pt", "resnet18", 3),
        "checkpoints/hierarchical/densenet121_bacteria_virus.pt":
            _published(root / "checkpoints/hierarchical/densenet121_bacteria_virus.pt", "densenet121", 1),
    }
    (root / "README.md").write_text("model card")
    return root, models


def test_published_checkpoint_metadata_is_inferred(published_repo):
    root, _ = published_repo
    c = load_checkpoint(root / "checkpoints/binary/custom_cnn.pt")
    assert (c.meta.arch, c.meta.task, c.meta.n_outputs) == ("custom_cnn", "binary", 1)
    assert c.meta.classes == ["NORMAL", "PNEUMONIA"] and c.epoch == 7
    assert c.metrics["val_loss"] == pytest.approx(0.21)  # numpy scalar accepted safely
    t = load_checkpoint(root / "checkpoints/three_class/resnet18.pt")
    assert (t.meta.arch, t.meta.task, t.meta.n_outputs) == ("resnet18", "three_class", 3)
    h = load_checkpoint(root / "checkpoints/hierarchical/densenet121_bacteria_virus.pt")
    assert (h.meta.arch, h.meta.task, h.meta.classes) == ("densenet121", "bacteria_virus", ["BACTERIA", "VIRUS"])
    # the name may lie: the tensors still tell
    shutil.copy(root / "checkpoints/binary/custom_cnn.pt", root / "model.pt")
    assert load_checkpoint(root / "model.pt").meta.arch == "custom_cnn"


def test_local_and_hub_sources_predict_identically(published_repo, tmp_path, normal_image, pneumonia_image):
    root, models = published_repo
    cache = tmp_path / "hf-cache"
    make_hub_cache(cache, DEFAULT_REPO, {rel: root / rel for rel in models} | {"README.md": root / "README.md"})
    local, hub = LocalSource(root), HubSource(DEFAULT_REPO, cache_dir=cache)
    keys = [r.key for r in local.list()]
    assert keys == ["bacteria_virus/densenet121", "binary/custom_cnn", "three_class/resnet18"]
    assert [r.key for r in hub.list()] == keys
    assert "offline" in hub.status
    hub_path = hub.path(hub.find("binary/custom_cnn"))
    assert str(hub_path).startswith(str(cache))  # served by huggingface_hub from its cache
    images = [normal_image, pneumonia_image]
    for rel, model in models.items():
        key = parse_relpath(rel).key
        expected = _predict(model, images)
        a = _predict(local.load(key).build(), images)
        b = _predict(hub.load(key).build(), images)
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, expected, atol=1e-6)
        assert np.allclose(a.sum(1), 1)


def test_bacteria_virus_models_read_from_our_layout_and_the_hubs(tmp_path, monkeypatch, normal_image):
    """Our layout names the folder after the task (checkpoints/bacteria_virus/<arch>.pt); a Hub repo in the
    published layout (checkpoints/hierarchical/<arch>_bacteria_virus.pt) still reads, offline from its cache."""
    import huggingface_hub.constants as hc

    ours = tmp_path / "ours"
    model = _published(ours / checkpoint_relpath("bacteria_virus", "custom_cnn"), "custom_cnn", 1)
    assert checkpoint_relpath("bacteria_virus", "custom_cnn") == "checkpoints/bacteria_virus/custom_cnn.pt"
    hub_rel = "checkpoints/hierarchical/custom_cnn_bacteria_virus.pt"
    cache = tmp_path / "hf-cache"
    make_hub_cache(cache, "someone/published", {hub_rel: ours / checkpoint_relpath("bacteria_virus", "custom_cnn")})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    local, hub = LocalSource(ours), HubSource("someone/published", cache_dir=cache)
    assert [(r.key, r.relpath) for r in local.list()] == [("bacteria_virus/custom_cnn",
                                                           "checkpoints/bacteria_virus/custom_cnn.pt")]
    assert [(r.key, r.relpath) for r in hub.list()] == [("bacteria_virus/custom_cnn", hub_rel)]
    assert "offline" in hub.status
    assert local.stamp("bacteria_virus/custom_cnn").startswith("custom_cnn.pt:")
    expected = _predict(model, [normal_image])
    for src in (local, hub):
        c = src.load("bacteria_virus/custom_cnn")
        assert (c.meta.task, c.meta.classes) == ("bacteria_virus", ["BACTERIA", "VIRUS"])
        np.testing.assert_allclose(_predict(c.build(), [normal_image]), expected, atol=1e-6)


def test_a_binary_model_in_the_bacteria_virus_folder_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path / "checkpoints/bacteria_virus/custom_cnn.pt")
    with pytest.raises(CheckpointError, match="metadata says task binary"):
        load_checkpoint(path)


def test_hub_source_offline_without_cache_is_a_clear_error(tmp_path):
    hub = HubSource("someone/not-cached", cache_dir=tmp_path / "empty-cache")
    with pytest.raises(SourceUnavailableError, match="not in the local cache"):
        hub.list()


def test_resolve_checkpoint_specs(published_repo, tmp_path, monkeypatch):
    root, _ = published_repo
    assert resolve_checkpoint(str(root / "checkpoints/binary/custom_cnn.pt")).meta.arch == "custom_cnn"
    assert resolve_checkpoint(f"{root}/three_class/resnet18").meta.n_outputs == 3
    cache = tmp_path / "hf"
    make_hub_cache(cache, DEFAULT_REPO, {"checkpoints/binary/custom_cnn.pt": root / "checkpoints/binary/custom_cnn.pt"})
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    assert resolve_checkpoint(f"hub:{DEFAULT_REPO}/binary/custom_cnn").meta.arch == "custom_cnn"
    with pytest.raises(SourceUnavailableError, match="has no checkpoint 'binary/resnet50'"):
        resolve_checkpoint(f"{root}/binary/resnet50")


def test_our_format_round_trips_pt_and_safetensors(tmp_path, pneumonia_image):
    torch.manual_seed(1)
    model = build_model("resnet18", 1).eval()
    meta = CheckpointMeta(arch="resnet18", task="binary", classes=["NORMAL", "PNEUMONIA"], n_outputs=1, seed=2,
                          init="scratch", data_fingerprint="abc", threshold=0.37)
    path = save_checkpoint(tmp_path / "checkpoints/binary/resnet18_seed2.pt", model.state_dict(), meta, epoch=3,
                           metrics={"val_auroc": 0.9})
    c = load_checkpoint(path)
    assert c.meta == meta and c.epoch == 3 and c.metrics == {"val_auroc": 0.9}
    expected = _predict(model, [pneumonia_image])
    np.testing.assert_allclose(_predict(c.build(), [pneumonia_image]), expected, atol=1e-6)
    st = export_safetensors(c, tmp_path / "m.safetensors")
    assert st.stat().st_size < path.stat().st_size * 0.6  # fp16
    s = load_checkpoint(st)
    assert s.meta == meta and s.epoch == 3
    np.testing.assert_allclose(_predict(s.build(), [pneumonia_image]), expected, atol=2e-3)
    # the local source lists seeds too
    ref = LocalSource(tmp_path).find("binary/resnet18/seed2")
    assert ref.relpath == checkpoint_relpath("binary", "resnet18", 2)
    assert not list(tmp_path.glob("**/*.tmp"))  # atomic writes leave nothing behind


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/pneumo-pwned",))


def test_pickled_code_is_refused_and_never_runs(tmp_path):
    marker = Path("/tmp/pneumo-pwned")
    marker.unlink(missing_ok=True)
    path = tmp_path / "checkpoints/binary/custom_cnn.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": build_model("custom_cnn", 1).state_dict(), "payload": _Evil()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refused"):
        load_checkpoint(path)
    with pytest.raises(UnsafeCheckpointError):
        LocalSource(tmp_path).load("binary/custom_cnn")
    assert not marker.exists()


def test_wrong_architecture_or_class_count_names_both(tmp_path):
    path = tmp_path / "resnet18.pt"
    torch.save({"model_state_dict": build_model("densenet121", 1).state_dict()}, path)
    with pytest.raises(ArchitectureMismatchError, match="resnet18"):
        load_checkpoint(path).build()
    meta = CheckpointMeta(arch="resnet18", task="three_class", classes=["NORMAL", "BACTERIA", "VIRUS"], n_outputs=3)
    p2 = save_checkpoint(tmp_path / "r.pt", build_model("resnet18", 1).state_dict(), meta)
    with pytest.raises(ArchitectureMismatchError,
                       match=r"expected resnet18 with 3 output\(s\).*resnet18 with 1 output"):
        load_checkpoint(p2).build()
    p3 = tmp_path / "densenet121.pt"
    torch.save({"model_state_dict": build_model("resnet18", 1).state_dict()}, p3)
    with pytest.raises(ArchitectureMismatchError, match=r"densenet121.*resnet18"):
        load_checkpoint(p3)


def test_corrupt_and_foreign_files(tmp_path):
    (tmp_path / "x.pt").write_bytes(b"garbage" * 100)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    (tmp_path / "y.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(tmp_path / "y.safetensors")
    torch.save({"weights": [1, 2, 3]}, tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="no model_state_dict"):
        load_checkpoint(tmp_path / "z.pt")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(SourceUnavailableError, match="no checkpoints/ folder"):
        LocalSource(tmp_path).list()


def test_a_checkpoint_with_compressed_records_is_refused_before_torch_inflates_it(tmp_path):
    """A .pt zip whose records are deflated (1.3 MB could inflate to 1 GB): torch.save never writes one."""
    import zipfile

    from pneumo_core.errors import UnsafeCheckpointError
    from pneumo_core.models.weights import torch_load_safe

    plain = tmp_path / "plain.pt"
    torch.save({"model_state_dict": {"w": torch.zeros(1 << 20)}}, plain)
    assert torch_load_safe(plain)["model_state_dict"]["w"].numel() == 1 << 20
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as zin, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, zin.read(info.filename))
    assert packed.stat().st_size < plain.stat().st_size / 50
    with pytest.raises(UnsafeCheckpointError, match="compressed"):
        torch_load_safe(packed)


@pytest.mark.parametrize("case, message", [
    ("list", "not a mapping of names to tensors"),
    ("int_head", "holds int64, not floating-point weights"),
    ("swapped", "in this order"),
    ("repeated", "in this order"),
    ("relabelled", "lies in the layout's binary/ folder"),
])
def test_lying_or_malformed_checkpoints_are_named(tmp_path, case, message):
    """The review's checkpoints that loaded with wrong labels or ended in a traceback."""
    from pneumo_core.models.sources import bundled_source

    ck = bundled_source().load("binary/resnet18")
    sd, meta = dict(ck.state_dict), ck.meta.to_dict()
    payload = {"model_state_dict": sd, "pneumo": meta}
    if case == "list":
        payload["model_state_dict"] = list(sd.values())
    elif case == "int_head":
        sd["fc.weight"] = torch.zeros_like(sd["fc.weight"], dtype=torch.int64)
    elif case in ("swapped", "repeated"):
        meta["classes"] = ["PNEUMONIA", "NORMAL"] if case == "swapped" else ["NORMAL", "NORMAL"]
    else:
        meta.update(task="bacteria_virus", classes=["BACTERIA", "VIRUS"])
    path = tmp_path / "checkpoints" / "binary" / "resnet18.pt"
    path.parent.mkdir(parents=True)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_odd_epoch_and_metrics_load_as_none(tmp_path):
    from pneumo_core.models.sources import bundled_source

    ck = bundled_source().load("binary/resnet18")
    path = tmp_path / "resnet18.pt"
    torch.save({"model_state_dict": ck.state_dict, "epoch": float("nan"),
                "metrics": {"auroc": 10**400, "loss": float("inf"), "acc": 0.5}}, path)
    loaded = load_checkpoint(path)
    assert loaded.epoch is None and loaded.metrics == {"auroc": None, "loss": None, "acc": 0.5}


def test_a_checkpoint_from_outside_is_read_first_in_a_limited_worker(tmp_path):
    """A weights-only pickle may still build huge objects (a 40 MB file of 5 million floats takes ~200 MB once
    unpickled): read first in a worker limited here to 120 MB, it is refused in one line and this process never
    builds it; a plain file passes, and a local source's bad file is named like any bad checkpoint."""
    from pneumo_core.errors import UnsafeCheckpointError
    from pneumo_core.models.sources import LocalSource, bundled_source
    from pneumo_core.sandbox import Limits, Sandbox

    ck = bundled_source().load("binary/resnet18")
    heavy = tmp_path / "heavy.pt"
    torch.save({"model_state_dict": ck.state_dict, "metrics": {"x": [0.5] * 5_000_000}}, heavy)
    box = Sandbox("pneumo_core.models.weights:probe", UnsafeCheckpointError, size=1,
                  limits=Limits(memory=120 * 2**20, recycle_bytes=2**40), verb="loaded")
    try:
        with pytest.raises(UnsafeCheckpointError, match=r"heavy.pt: could not be loaded safely \(it needs more"):
            box.call(str(heavy), name=str(heavy))
        plain = tmp_path / "checkpoints" / "binary" / "resnet18.pt"
        plain.parent.mkdir(parents=True)
        torch.save({"model_state_dict": ck.state_dict}, plain)
        assert box.call(str(plain), name="plain") == len(ck.state_dict)
        (tmp_path / "broken.pt").write_bytes(b"not a checkpoint")
        with pytest.raises(CheckpointError, match="broken.pt: not a readable PyTorch checkpoint"):
            box.call(str(tmp_path / "broken.pt"), name="broken")  # the worker's own error, as itself
    finally:
        box.close()
    assert LocalSource(tmp_path).load("binary/resnet18").meta.arch == "resnet18"  # through the default worker


def test_a_head_that_does_not_fit_the_task_is_refused(tmp_path, capsys, normal_image):
    """Five outputs in a three_class folder used to give probabilities summing to 0.80."""
    path = tmp_path / "checkpoints/three_class/custom_cnn.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": build_model("custom_cnn", 5).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"5 output\(s\), but task three_class .* needs 3"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="needs 3"):
        LocalSource(tmp_path).load("three_class/custom_cnn")
    one_line_error(*run_cli(capsys, "predict", "--checkpoint", path, normal_image)[::2])
    one_line_error(*run_cli(capsys, "predict", "--checkpoint", f"{tmp_path}/three_class/custom_cnn", normal_image)[::2])


@pytest.mark.parametrize("meta,message", [
    (dict(task="four_class"), "unknown task 'four_class'"),
    (dict(preprocessing={"image_size": 60000}), "image size 60000 is outside 16..2048"),
    (dict(preprocessing={"channels": 2}), "invalid preprocessing"),
    (dict(preprocessing={"std": [0.0, 1.0, 1.0]}), "invalid preprocessing"),
    (dict(image_size=60000), "image size 60000"),
    (dict(threshold=2.0), "not a probability"),
    (dict(classes=["A", "B", "C"]), "metadata lists"),
])
def test_bad_metadata_is_refused(tmp_path, capsys, normal_image, meta, message):
    kw = {"task": "binary", "classes": BINARY, **meta}
    path = tiny_checkpoint(tmp_path / "m.pt", **kw)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    code, _, err = run_cli(capsys, "predict", "--checkpoint", path, normal_image)
    one_line_error(code, err)
    assert message.split()[0] in err


def test_bad_safetensors_metadata_is_refused(tmp_path, capsys, normal_image):
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in build_model("custom_cnn", 1).state_dict().items()}
    cases = {"broken": "{not json", "deep": "[" * 100_000 + "]" * 100_000, "epoch": None}
    for name, pneumo in cases.items():
        path = tmp_path / f"custom_cnn_{name}.safetensors"
        meta = {"epoch": "seven"} if pneumo is None else {"pneumo": pneumo}
        save_file(sd, str(path), metadata=meta)
        with pytest.raises(CheckpointError):
            load_checkpoint(path)
        one_line_error(*run_cli(capsys, "predict", "--checkpoint", path, normal_image)[::2])


def test_one_bad_model_in_a_folder_leaves_the_rest_usable(tmp_path):
    tiny_checkpoint(tmp_path / "checkpoints/binary/custom_cnn.pt")
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    src = LocalSource(tmp_path)
    assert [r.key for r in src.list()] == ["binary/custom_cnn", "binary/resnet18"]
    assert src.load("binary/custom_cnn").meta.arch == "custom_cnn"
    with pytest.raises(CheckpointError, match="resnet18.pt"):
        src.load("binary/resnet18")


def test_local_folder_is_one_cache_entry_however_spelt(tmp_path, monkeypatch):
    path = tiny_checkpoint(tmp_path / "zoo/checkpoints/binary/custom_cnn.pt")
    monkeypatch.chdir(tmp_path)
    spellings = [tmp_path / "zoo", "zoo", "./zoo/", "zoo/../zoo", "zoo/checkpoints"]
    assert len({LocalSource(s).label for s in spellings}) == 1
    src = LocalSource("zoo")
    before = src.stamp("binary/custom_cnn")
    assert before.startswith("custom_cnn.pt:")
    time.sleep(0.01)
    tiny_checkpoint(path, threshold=0.3)  # the file replaced: the cache key changes
    assert src.stamp("binary/custom_cnn") != before and src.stamp("binary/nothing") == ""
