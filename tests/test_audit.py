"""Explanation quality (pneumo_core.explain.audit, .lungs) on a handful of real test images; the command."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from pneumo_core.data.images import load_grayscale
from pneumo_core.explain.audit import (agreement, border_band, deletion_insertion, lung_focus, randomized_copy,
                                       randomized_layers, randomization_spearman, spearman, summarise, top_region)
from pneumo_core.explain.cams import explain
from pneumo_core.explain.lungs import draw_contours, lung_contours, lung_mask
from pneumo_core.inference.predictors import Predictor
from pneumo_core.models.networks import ARCHS, build_model, get_arch
from pneumo_core.models.sources import resolve_checkpoint


@pytest.fixture(scope="module")
def grays(data_dir):
    """Five test images: the first two NORMAL, the first BACTERIA, the first two VIRUS (by file name)."""
    t = data_dir / "test"
    paths = (sorted((t / "NORMAL").glob("*.jpeg"))[:2] + sorted((t / "PNEUMONIA").glob("*bacteria*.jpeg"))[:1]
             + sorted((t / "PNEUMONIA").glob("*virus*.jpeg"))[:2])
    return [load_grayscale(p) for p in paths]


@pytest.fixture(scope="module")
def resnet():
    from pneumo_core.inference.predictors import Predictor
    from pneumo_core.models.sources import bundled_source

    return Predictor(bundled_source().load("binary/resnet18"))


@pytest.fixture(scope="module")
def cams(resnet, grays):
    rand = randomized_copy(resnet, seed=0)
    own = [explain(resnet, g, "gradcam", faithfulness=False) for g in grays[:3]]
    other = [explain(rand, g, "gradcam", target=c.target, faithfulness=False) for g, c in zip(grays, own)]
    return own, other


def test_lung_mask_is_two_lungs_in_the_chest(grays):
    for g in grays:
        m = lung_mask(g)
        h, w = g.shape
        assert m.shape == g.shape and m.dtype == bool
        assert 0.10 <= m.mean() <= 0.60, m.mean()
        central = m[round(0.1 * h):round(0.9 * h), round(0.1 * w):round(0.9 * w)].sum() / m.sum()
        assert central >= 0.70
        lab, n = ndi.label(m)
        sizes = ndi.sum(m, lab, range(1, n + 1))
        assert n == 2 or (n == 1 and sizes[0] >= 0.10 * h * w)
        assert n <= 2
        contours = lung_contours(m)
        assert len(contours) >= n
        assert all(c.min() >= -0.5 and c[:, 0].max() <= h - 0.5 and c[:, 1].max() <= w - 0.5 for c in contours)
        pic = draw_contours(np.zeros((h, w, 3), np.uint8), contours)
        assert pic[..., 1].any() and pic.shape == (h, w, 3)


def test_lung_mask_of_a_blank_or_large_image():
    assert not lung_mask(np.full((64, 64), 0.5, np.float32)).any()
    big = np.kron(np.random.default_rng(0).random((40, 40)), np.ones((20, 20))).astype(np.float32)  # 800 px
    assert lung_mask(big).shape == (800, 800)


def test_lung_focus_by_hand():
    lungs = np.zeros((100, 100), bool)
    lungs[30:70, 20:45] = lungs[30:70, 55:80] = True
    band = border_band(lungs.shape, 0.08)
    assert band.sum() == 100 * 100 - 84 * 84
    on_lungs = lung_focus(lungs.astype(float), lungs)
    assert on_lungs.lung_share == pytest.approx(1) and on_lungs.border_share == 0
    on_border = lung_focus(band.astype(float), lungs)
    assert on_border.lung_share == 0 and on_border.border_share == pytest.approx(1)
    even = lung_focus(np.ones((10, 10)), lungs)  # resized to the mask: spread evenly
    assert even.lung_share == pytest.approx(lungs.mean()) == pytest.approx(even.lung_area)
    assert np.isnan(lung_focus(np.zeros((10, 10)), lungs).lung_share)
    assert np.isnan(lung_focus(np.ones((10, 10)), np.zeros((100, 100), bool)).lung_share)


def test_agreement_by_hand():
    a = np.arange(100, dtype=float).reshape(10, 10)
    same = agreement(a, a)
    assert same.spearman == pytest.approx(1) and same.iou == 1
    opposite = agreement(a, -a)
    assert opposite.spearman == pytest.approx(-1) and opposite.iou == 0
    assert top_region(a).sum() == 20 and top_region(a)[-2:].all()
    assert spearman(np.zeros((4, 4)), a) == 0.0 and np.isnan(spearman(np.zeros((4, 4)), np.ones((4, 4))))


def test_model_agrees_with_itself_and_less_with_its_randomised_copy(cams, grays):
    own, other = cams
    for c, r in zip(own, other):
        self_ag = agreement(c.raw, c.raw, grays[0].shape)
        assert self_ag.spearman == pytest.approx(1) and self_ag.iou == pytest.approx(1)
        rand_ag = agreement(c.raw, r.raw, grays[0].shape)
        assert rand_ag.spearman < 0.99 and rand_ag.iou < 1


def test_randomisation_correlation_of_a_trained_model_is_below_self(resnet, grays, cams):
    own, _ = cams
    rhos = [randomization_spearman(resnet, g, "gradcam", cam=c) for g, c in zip(grays, own)]
    for r, c in zip(rhos, own):
        assert spearman(c.raw, c.raw) == pytest.approx(1.0)
        assert r < 0.99
    assert np.mean(rhos) < 0.9


@pytest.mark.parametrize("arch", list(ARCHS))
def test_randomised_layers_are_the_archs(arch):
    """The sanity check re-initialises what the architecture's Arch entry names, and those modules only."""
    from pneumo_core.models.checkpoints import Checkpoint, CheckpointMeta

    model = build_model(arch, 1).eval()
    meta = CheckpointMeta(arch=arch, task="binary", classes=["NORMAL", "PNEUMONIA"], n_outputs=1)
    p = Predictor(Checkpoint(model.state_dict(), meta, fingerprint=arch))
    assert randomized_layers(arch) == get_arch(arch).sanity_layers
    orig, new = p.model.state_dict(), randomized_copy(p, seed=1).model.state_dict()
    changed = {k for k in orig if not torch.equal(orig[k], new[k])}
    inside = {k for k in orig if any(k.startswith(n + ".") for n in randomized_layers(arch))}
    assert changed and changed <= inside


def test_randomised_copy_touches_only_the_last_block_and_head(resnet):
    state = torch.get_rng_state()
    a, b = randomized_copy(resnet, seed=3), randomized_copy(resnet, seed=3)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is left alone
    orig, new = resnet.model.state_dict(), a.model.state_dict()
    changed = {k.split(".")[0] for k in orig if not torch.equal(orig[k], new[k])}
    assert changed == {"layer4", "fc"}
    assert all(torch.equal(v, b.model.state_dict()[k]) for k, v in new.items())  # seeded
    assert a.model is not resnet.model and a.key != resnet.key


def test_deletion_and_insertion_curves(resnet, grays, cams):
    own, _ = cams
    c = own[0]
    dele, ins = deletion_insertion(resnet, grays[0], c.raw, c.target, steps=5)
    assert list(dele.fractions) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1])
    assert dele.scores[0] == pytest.approx(c.probs[c.target], abs=1e-4)  # nothing removed: the image itself
    assert ins.scores[-1] == pytest.approx(dele.scores[0], abs=1e-5)  # everything restored: the image again
    assert ins.scores[0] == pytest.approx(dele.scores[-1], abs=1e-5)  # both end on the blurred image
    assert 0 <= dele.auc <= 1 and 0 <= ins.auc <= 1


def test_summary_ignores_missing_values():
    import pandas as pd

    t = pd.DataFrame({"lung_share": [0.5, np.nan], "border_share": [0.1, 0.3], "lung_area": [0.2, 0.0],
                      "randomization_spearman": [np.nan, np.nan], "deletion_auc": [0.3, 0.5],
                      "insertion_auc": [0.9, 0.7], "cam_flat": [False, False], "randomized_flat": [True, False]})
    s = summarise(t)
    assert s["lung_share"] == 0.5 and s["border_share"] == pytest.approx(0.2) and np.isnan(s["randomization_spearman"])
    assert s["no_lung_mask"] == 1 and s["randomized_flat"] == 1 and s["n_images"] == 2


def test_explain_audit_command(data_dir, capsys):
    from pneumo_core.cli.main import main

    from pneumo_core.files import ASSETS

    rc = main(["explain-audit", "--checkpoint", str(ASSETS / "models/checkpoints/binary/resnet18"), "--data-dir",
               str(data_dir), "--split", "test", "--n", "3", "--no-curves", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)  # strict: no NaN
    s = out["summary"]
    assert s["n_images"] == 3 and len(out["images"]) == 3
    for k in ("lung_share", "border_share", "randomization_spearman"):
        assert isinstance(s[k], float) and -1 <= s[k] <= 1
    assert 0 <= s["lung_share"] <= 1 and s["randomization_spearman"] < 1
    assert [r["image_id"] for r in out["images"]] == sorted(r["image_id"] for r in out["images"])


def test_explain_audit_agreement_with_itself_and_another_model(data_dir, capsys):
    from pneumo_core.cli.main import main
    from pneumo_core.files import ASSETS

    m = ASSETS / "models/checkpoints/binary"
    base = ["explain-audit", "--checkpoint", str(m / "resnet18"), "--data-dir", str(data_dir), "--n", "3",
            "--no-curves", "--no-sanity", "--json", "--agree-with"]
    assert main(base + [str(m / "resnet18")]) == 0
    same = json.loads(capsys.readouterr().out)
    assert [r["agreement_spearman"] for r in same["images"]] == pytest.approx([1.0] * 3)
    assert same["summary"]["agreement_iou"] == pytest.approx(1.0)
    assert main(base + [str(m / "densenet121")]) == 0
    out = json.loads(capsys.readouterr().out)
    other = out["summary"]
    assert -1 <= other["agreement_spearman"] < 0.99 and 0 <= other["agreement_iou"] < 0.99
    # the second model's map is taken for the first model's class
    first = out["images"][0]
    a, b = (Predictor(resolve_checkpoint(str(m / k))) for k in ("resnet18", "densenet121"))
    gray = load_grayscale(data_dir / first["image_id"])
    cam = explain(a, gray, faithfulness=False)
    want = agreement(cam.raw, explain(b, gray, target=cam.target, faithfulness=False).raw, gray.shape)
    assert (first["agreement_spearman"], first["agreement_iou"]) == pytest.approx((want.spearman, want.iou))
    assert main(base + [str(ASSETS / "models/checkpoints/three_class/densenet121")]) == 2
    assert "the classes differ" in capsys.readouterr().err


def test_where_models_look_page():
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "app.py"), default_timeout=300)
    at.session_state["audit_models"] = ["binary/custom_cnn"]  # the fastest model
    at.run()
    at.switch_page("pages/audit.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("approximate" in c.value for c in at.caption)
    table = next(d.value for d in at.dataframe if "lung focus (mean)" in d.value.columns)
    assert list(table["model"]) == ["binary/custom_cnn"]
    assert table["lung focus (mean)"].between(0, 1).all()
    assert len(at.tabs) == 1
