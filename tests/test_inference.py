"""Inference, ensembles, the hierarchical model, CAMs, the OOD gate and export, on checkpoints we train."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch

from pneumo_core.data.datasets import kermany_splits
from pneumo_core.explain.cams import METHODS, explain, overlay, own_scale, shared_scale
from pneumo_core.data.images import load_grayscale
from pneumo_core.inference.predictors import Ensemble, Hierarchical, Predictor, predict_frame, predict_loop
from pneumo_core.models.sources import LocalSource
from tests.cli_utils import cli_result
from tests.zoo_fixture import ARCHS, ZOO_ARCHS


@pytest.fixture(scope="session")
def source(tiny_zoo):
    return LocalSource(tiny_zoo)


@pytest.fixture(scope="session")
def test_frame(data_dir):
    t = kermany_splits(data_dir)["test"]
    return t.iloc[np.linspace(0, len(t) - 1, 40).astype(int)].reset_index(drop=True)


def _pred(source, key):
    return Predictor(source.load(key))


def _binary(source, arch: str) -> Predictor:
    """The tiny zoo's binary ``arch`` (seed 0), or the bundled one for an architecture the zoo leaves out."""
    if arch in ZOO_ARCHS:
        return _pred(source, f"binary/{arch}/seed0")
    from pneumo_core.models.sources import bundled_source

    return Predictor(bundled_source().load(f"binary/{arch}"))


@pytest.mark.parametrize("arch", ARCHS)
def test_fast_copy_folds_batchnorm_and_matches_eager(source, arch, test_frame):
    from pneumo_core.inference.fast_copy import fold_batchnorm

    p = _binary(source, arch)
    x = torch.stack([p.tensor(load_grayscale(f)) for f in test_frame["path"][:6]])
    n_bn = lambda m: sum(isinstance(k, torch.nn.BatchNorm2d) for k in m.modules())  # noqa: E731
    before = n_bn(p.model)
    folded = n_bn(fold_batchnorm(p.model))
    assert folded == 0 if arch != "densenet121" else folded < before  # DenseNet's pre-activation BNs stay
    np.testing.assert_allclose(p.batch_logits(x).numpy(), p.logits(x).numpy(), atol=1e-4)
    assert n_bn(p.model) == before  # the eager model (CAM hooks) is untouched


def test_bf16_mode_is_cached_apart(source, test_frame, tmp_path):
    ck = source.load("binary/resnet18/seed0")
    exact, fast = Predictor(ck), Predictor(ck, precision="bf16")
    assert exact.key != fast.key
    a = predict_frame(exact, test_frame, cache_dir=tmp_path)
    b = predict_frame(fast, test_frame, cache_dir=tmp_path)
    assert len(list((tmp_path / "predictions").glob("*.parquet"))) == 2
    np.testing.assert_allclose(b.probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(b.probs - a.probs).max() < 0.05  # approximate, not another model


def test_batched_equals_per_image_and_cache_hits(source, test_frame, tmp_path, monkeypatch):
    p = _pred(source, "binary/resnet18/seed0")
    loop = predict_loop(p, test_frame)
    calls = []
    batched = predict_frame(p, test_frame, split="test", batch_size=16, cache_dir=tmp_path,
                            progress=lambda d, n: calls.append((d, n)))
    np.testing.assert_allclose(batched.probs, loop, atol=1e-5)
    assert calls[-1] == (40, 40)
    assert list(batched.frame["image_id"]) == list(test_frame["image_id"])
    cached_files = list((tmp_path / "predictions").glob("*.parquet"))
    assert len(cached_files) == 1 and p.fingerprint in cached_files[0].name
    import pneumo_core.inference.predictors as predictors

    def no_model(*a, **k):
        raise AssertionError("a cached prediction set ran the model")

    monkeypatch.setattr(predictors, "_batched_probs", no_model)
    again = predict_frame(p, test_frame, split="test", cache_dir=tmp_path)
    assert again.frame.equals(batched.frame)
    monkeypatch.undo()
    # another model misses the cache
    other = predict_frame(_pred(source, "binary/custom_cnn/seed0"), test_frame, cache_dir=tmp_path)
    assert len(list((tmp_path / "predictions").glob("*.parquet"))) == 2
    assert not np.allclose(other.probs, batched.probs)


def test_ensemble_and_hierarchical_probabilities(source, test_frame, normal_image, pneumonia_image):
    a, b = _pred(source, "binary/resnet18/seed0"), _pred(source, "binary/custom_cnn/seed0")
    ens = Ensemble([a, b])
    grays = [load_grayscale(normal_image), load_grayscale(pneumonia_image)]
    pe = ens.predict_grays(grays)
    np.testing.assert_allclose(pe, (a.predict_grays(grays) + b.predict_grays(grays)) / 2)
    np.testing.assert_allclose(pe.sum(1), 1, atol=1e-6)
    hier = Hierarchical(b, _pred(source, "bacteria_virus/custom_cnn/seed0"))
    ph = hier.predict_grays(grays)
    assert ph.shape == (2, 3)
    np.testing.assert_allclose(ph.sum(1), 1, atol=1e-6)
    np.testing.assert_allclose(ph[:, 0], 1 - b.predict_grays(grays)[:, 1], atol=1e-6)
    table = predict_frame(hier, test_frame, use_cache=False)
    assert table.classes == ("NORMAL", "BACTERIA", "VIRUS") and np.allclose(table.probs.sum(1), 1)
    three = _pred(source, "three_class/custom_cnn/seed0")
    with pytest.raises(Exception, match="one task"):
        Ensemble([a, three])
    with pytest.raises(Exception, match="stage A"):
        Hierarchical(three, b)


BUNDLED_BINARY = ["custom_cnn", "resnet18", "densenet121", "efficientnet_lite0"]


@pytest.mark.parametrize("arch", BUNDLED_BINARY)
def test_cam_is_not_degenerate_on_a_pneumonia_image(arch, pneumonia_image):
    # the bundled trained models, not the tiny fixture models (whose maps depend on how 2 epochs went)
    from pneumo_core.models.sources import bundled_source

    p = Predictor(bundled_source().load(f"binary/{arch}"))
    r = explain(p, load_grayscale(pneumonia_image), "gradcam", target=1)
    s = p.prep.image_size
    assert r.raw.shape == (s, s) and r.normalised.shape == (s, s)
    assert r.ok, r.message
    assert r.raw.max() > 0 and r.normalised.max() == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_allclose(r.normalised, own_scale(r.raw), atol=2e-3)
    assert isinstance(r.faithfulness, float) and np.isfinite(r.faithfulness)


def test_single_logit_model_explains_normal_via_the_negated_logit(source, pneumonia_image):
    p = _pred(source, "binary/resnet18/seed0")
    g = load_grayscale(pneumonia_image)
    pneu, normal = explain(p, g, target=1), explain(p, g, target=0)
    assert (pneu.class_name, normal.class_name) == ("PNEUMONIA", "NORMAL")
    assert not np.allclose(pneu.raw, normal.raw)
    default = explain(p, g)
    assert default.target == int(np.argmax(default.probs))


def test_every_fast_method_explains_and_tells_the_classes_apart(pneumonia_image):
    from pneumo_core.models.sources import bundled_source

    p = Predictor(bundled_source().load("binary/resnet18"))
    g = load_grayscale(pneumonia_image)
    for name, (_, label, slow) in METHODS.items():
        if slow:
            assert "slow" in label
            continue
        r = explain(p, g, name, target=1, faithfulness=False)
        assert r.method == label and r.ok, (name, r.message)
        assert np.isfinite(r.raw).all() and r.raw.min() >= 0
        assert 0.005 < (r.normalised > 0.5).mean() < 0.9, name  # a region, neither a speck nor everything
        if name != "eigencam":  # class-agnostic by design
            other = explain(p, g, name, target=0, faithfulness=False)
            assert not np.allclose(r.normalised, other.normalised, atol=1e-3), name
    with pytest.raises(ValueError, match="unknown CAM method"):
        explain(p, g, "magic")


def test_flat_map_is_flagged(source, pneumonia_image):
    ck = source.load("binary/custom_cnn/seed0")
    ck.state_dict = {k: (torch.zeros_like(v) if k.startswith("classifier.3.weight") else v)
                     for k, v in ck.state_dict.items()}
    r = explain(Predictor(ck), load_grayscale(pneumonia_image), "gradcam", target=1)
    assert r.degenerate and "no signal for PNEUMONIA" in r.message
    assert r.normalised.max() == 0


def test_threads_explaining_at_once_match_sequential_and_leave_no_hooks(source, data_dir):
    p = _binary(source, "densenet121")
    images = sorted((data_dir / "test" / "PNEUMONIA").glob("*.jpeg"))[:6]
    grays = [load_grayscale(f) for f in images]
    expected = [explain(p, g, faithfulness=False).raw for g in grays]
    results: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = explain(p, grays[i], faithfulness=False).raw
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(grays))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, e in enumerate(expected):
        np.testing.assert_allclose(results[i], e, atol=1e-5)
    for m in p.model.modules():
        assert not m._forward_hooks and not m._backward_hooks and not getattr(m, "_forward_pre_hooks", {})


def test_shared_and_own_scales_and_overlay(normal_image):
    a, b = np.array([[0.0, 2.0]]), np.array([[1.0, 4.0]])
    sa, sb = shared_scale([a, b])
    assert sb.max() == 1.0 and sa.max() == 0.5
    assert own_scale(a).max() == 1.0
    g = load_grayscale(normal_image)
    heat = np.zeros_like(g)
    heat[50:100, 50:100] = 1
    img = overlay(g, heat, opacity=0.5)
    assert img.shape == (224, 224, 3) and img.dtype == np.uint8
    assert not np.array_equal(img[75, 75], img[10, 10])


def test_ood_gate_accepts_xrays_and_rejects_other_pictures(data_dir):
    from pneumo_core.explain.ood import default_gate, measure

    gate = default_gate()
    assert gate is not None, "assets/models/ood_gate.npz is missing: python -m pneumo_core ood-build"
    t = kermany_splits(data_dir)["test"]
    sample = t.iloc[np.linspace(0, len(t) - 1, 150).astype(int)]
    m = measure(gate, [load_grayscale(p) for p in sample["path"]])
    print(f"OOD gate: {m['accepted']:.1%} of {m['xrays']} test X-rays accepted, "
          f"{m['rejected']:.1%} of {m['non_xrays']} non-X-rays rejected")
    assert m["accepted"] >= 0.95 and m["rejected"] >= 0.95 and m["non_xrays"] >= 40


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_export_matches_eager(source, fmt, tmp_path, normal_image, pneumonia_image):
    from pneumo_core.models.export import export

    ck = source.load("binary/resnet18/seed0")
    p = Predictor(ck)
    x = torch.stack([p.tensor(load_grayscale(f)) for f in (normal_image, pneumonia_image)])
    eager = p.model.eval()(x).detach().numpy()
    path = export(ck, fmt, tmp_path / f"m.{'pt' if fmt == 'torchscript' else 'onnx'}")
    if fmt == "torchscript":
        out = torch.jit.load(str(path))(x).detach().numpy()
    else:
        import onnxruntime as ort

        out = ort.InferenceSession(str(path)).run(None, {"image": x.numpy()})[0]
    np.testing.assert_allclose(out, eager, atol=1e-4)


def test_predict_and_evaluate_cli(tiny_zoo, tmp_path, normal_image, pneumonia_image, data_dir, monkeypatch):
    bad = tmp_path / "broken.jpeg"
    bad.write_bytes(pneumonia_image.read_bytes()[:500])
    r = cli_result("predict", "--checkpoint", f"{tiny_zoo}/binary/resnet18/seed0", normal_image, bad,
                   pneumonia_image, "--cam", "gradcam", "--out", tmp_path / "o", "--json")
    assert r.returncode == 1, r.stderr  # not all images ran
    out = json.loads(r.stdout)["results"]
    assert "error" in out[1] and "truncated" in out[1]["error"]
    for e in (out[0], out[2]):
        assert sum(e["probabilities"].values()) == pytest.approx(1.0)
        assert "ood_score" in e and (tmp_path / "o").joinpath(e["overlay"].split("/")[-1]).is_file()
    ok = cli_result("predict", "--checkpoint", f"{tiny_zoo}/checkpoints/binary/custom_cnn_seed0.pt", normal_image)
    assert ok.returncode == 0 and "NORMAL" in ok.stdout
    pred = tmp_path / "test_preds.csv"
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    e = cli_result("evaluate", "--checkpoint", f"{tiny_zoo}/three_class/custom_cnn/seed0", "--data-dir", data_dir,
                   "--split", "test", "--out", pred)
    assert e.returncode == 0, e.stderr
    rep = cli_result("report", pred, "--json")
    assert json.loads(rep.stdout)["n"] == 624


def test_ood_gate_flags_images_it_cannot_score(normal_image):
    from pneumo_core.explain.ood import default_gate

    gate = default_gate()
    if gate is None:
        pytest.skip("no bundled OOD gate")
    gray = load_grayscale(normal_image)
    nan = gray.copy()
    nan[5, 5] = np.nan
    scores = gate.score([np.zeros((1, 1), np.float32), nan, gray])
    assert np.isinf(scores[:2]).all() and np.isfinite(scores[2])
    assert gate.flagged(scores).tolist() == [True, True, False] and gate.flagged(float("nan"))


def test_predictor_holds_one_copy_of_the_weights(normal_image):
    """The checkpoint a Predictor keeps shares the model's tensors (it held a second copy: 150 MB over the seven
    bundled models), and still builds the same model."""
    from pneumo_core.models.sources import bundled_source

    source = bundled_source()
    p = Predictor(source.load("binary/resnet18"))
    params = {t.data_ptr() for t in p.model.state_dict().values()}
    assert all(t.data_ptr() in params for t in p.ckpt.state_dict.values())
    again = Predictor(p.ckpt)
    gray = load_grayscale(normal_image)
    assert np.allclose(again.predict_grays([gray]), p.predict_grays([gray]), atol=1e-6)
