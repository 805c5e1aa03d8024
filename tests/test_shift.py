"""Validation vs test (#26, items 6-7): `shift --json` against sklearn on the committed prediction files, the
paragraph's numbers, the page, and the Calibration page's temperature scaling on both splits."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import brier_score_loss, confusion_matrix, log_loss, roc_auc_score
from streamlit.testing.v1 import AppTest

from pneumo_core.cli.main import main
from pneumo_core.errors import PneumoError
from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.evaluation.calibration import calibration_scores, temperature_on_splits, temperature_sentence
from pneumo_core.evaluation.shift import (FIGURES, apart, choice_label, interval_text, resolve_choice, sets_line,
                                          shift_figures, shift_paragraph, split_figures)
from pneumo_core.files import ASSETS
from pneumo_core.visualize.charts import split_histogram_figure

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


def _stored_threshold(task: str, arch: str) -> float:
    """The threshold the bundled checkpoint stores, read from its safetensors header (no torch)."""
    with open(ASSETS / "models" / "checkpoints" / task / f"{arch}.safetensors", "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return float(json.loads(header["__metadata__"]["pneumo"])["threshold"])


def _sets(key: str):
    opt = resolve_choice(ASSETS, key)
    return opt, selection.load_choice(ASSETS, *opt, "val"), selection.load_choice(ASSETS, *opt, "test")


@pytest.mark.parametrize("arch", ["resnet18", "efficientnet_lite0"])
def test_shift_json_equals_sklearn_on_the_committed_files(arch, capsys):
    assert main(["shift", "--model", f"binary/{arch}", "--json", "--bootstrap", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    seed = int(out["key"].rsplit("seed", 1)[1])
    t = _stored_threshold("binary", arch)
    assert out["threshold"] == pytest.approx(t, abs=1e-6)
    for split, name in (("val", "validation"), ("test", "test")):
        df = pd.read_csv(ASSETS / "predictions" / "binary" / f"{arch}_seed{seed}_{split}.csv")
        y, p = df["y_true"].to_numpy(), df["prob_PNEUMONIA"].to_numpy()
        tn, fp, fn, tp = confusion_matrix(y, (p >= out["threshold"]).astype(int), labels=[0, 1]).ravel()
        fig = out[name]
        assert fig["sensitivity"]["value"] == pytest.approx(tp / (tp + fn), abs=1e-12)
        assert fig["specificity"]["value"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert fig["auroc"]["value"] == pytest.approx(roc_auc_score(y, p), abs=1e-12)
        assert fig["normal_below_threshold"] == pytest.approx(tn / (tn + fp), abs=1e-12)
        assert (fig["n_images"], fig["n_normal"]) == (len(y), int((y == 0).sum()))
        edges = np.linspace(0, 1, 16)  # ECE over 15 bins of equal width, by hand
        b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 14)
        ece = sum(abs(p[b == k].mean() - y[b == k].mean()) * (b == k).sum() for k in range(15) if (b == k).any())
        assert fig["ece"]["value"] == pytest.approx(ece / len(y), abs=1e-12)
        for k in FIGURES:
            assert fig[k]["low"] <= fig[k]["value"] <= fig[k]["high"]
    assert out["paragraph"].startswith("On validation, ")


def test_the_paragraph_states_the_computed_numbers():
    _, val, test = _sets("binary/resnet18")
    v, t = shift_figures(val, test, n_boot=300)
    text = shift_paragraph(v, t)
    assert f"On validation, {100 * v.normal_below:.0f} % of NORMAL images fall below" in text
    assert f"on test, {100 * t.normal_below:.0f} %" in text and f"P(pneumonia) = {v.threshold:.3f}" in text
    assert f"{v.normal_median:.2f} on validation and {t.normal_median:.2f} on test" in text
    for k in FIGURES:
        assert f"{interval_text(v.figures[k])} against {interval_text(t.figures[k])}" in text
    differ = [name for k, name in FIGURES.items() if apart(v.figures[k], t.figures[k])]
    assert "Specificity" in differ  # ResNet18: 0.988 on validation, 0.568 on test
    assert "beyond their 95 % intervals: the test images are shifted" in text
    verdict = next(x for x in text.split(". ") if "beyond their 95 % intervals" in x).split(" differ")[0]
    assert all((name in verdict or name.lower() in verdict) == (name in differ) for name in FIGURES.values())


def test_the_sets_line_counts_images_and_patients():
    _, val, test = _sets("binary/resnet18")
    v, t = shift_figures(val, test, n_boot=100)
    n_normal = int((test.y_binary == 0).sum())
    line = sets_line(v, t)
    assert f"test: {len(test.frame)} images ({n_normal} NORMAL, {len(test.frame) - n_normal} PNEUMONIA)" in line
    assert line.startswith(f"Validation: {len(val.frame)} images") and line.endswith(f"≥ {v.threshold:.3f}")
    assert f"of {v.n_patients} patients" in line and v.n_patients < len(val.frame)


def test_the_paragraph_says_no_shift_when_the_splits_agree_and_names_a_shift():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(300), np.ones(300)].astype(int)
    p = np.clip(np.where(y == 1, rng.beta(8, 2, 600), rng.beta(2, 8, 600)), 0, 1)
    ids = [f"person{i}_x.jpeg" for i in range(600)]
    same = split_figures(y, p, 0.5, ids, "validation", n_boot=200), split_figures(y, p, 0.5, ids, "test", n_boot=200)
    text = shift_paragraph(*same)
    assert "agrees between the splits" in text and "shifted" not in text
    moved = np.where(y == 0, np.clip(p + 0.4, 0, 1), p)  # NORMAL images score higher on "test"
    text = shift_paragraph(same[0], split_figures(y, moved, 0.5, ids, "test", n_boot=200))
    assert "Specificity" in text.split("differ")[0] and "the test images are shifted" in text


def test_model_keys_resolve_like_the_pages_names():
    choices = selection.set_choices(ASSETS, ("binary", "three_class"))
    best = next(o for o in choices if o[:2] == ("binary", "resnet18"))
    assert resolve_choice(ASSETS, "binary/resnet18") == best
    assert resolve_choice(ASSETS, choice_label(best)) == best
    other = next(o for o in choices if o[:2] == ("binary", "resnet18") and o != best)
    assert resolve_choice(ASSETS, f"binary/resnet18/seed{other[2]}") == other
    assert resolve_choice(ASSETS, "three_class/ensemble")[1] == "ensemble"
    with pytest.raises(PneumoError, match="binary/ensemble"):
        resolve_choice(ASSETS, "binary/nonesuch")


def test_shift_text_output_and_an_unknown_key(capsys):
    assert main(["shift", "--model", "binary/resnet18", "--bootstrap", "100"]) == 0
    out = capsys.readouterr().out
    assert "Specificity" in out and "validation" in out and "temperature scaling" in out
    assert main(["shift", "--model", "binary/nonesuch"]) == 2
    assert "no prediction set" in capsys.readouterr().err


def test_histogram_figure_shows_each_split_as_shares():
    _, val, test = _sets("binary/resnet18")
    v, t = shift_figures(val, test, n_boot=10)
    fig = split_histogram_figure({s.split: s.histogram() for s in (v, t)}, v.threshold)
    assert [tr.name for tr in fig.data] == ["validation", "test"]
    for tr in fig.data:
        assert sum(tr.y) == pytest.approx(100)


def test_calibration_scores_equal_sklearn():
    _, val, _ = _sets("binary/resnet18")
    s = calibration_scores(val.y_true, val.probs)
    assert s["Brier"] == pytest.approx(brier_score_loss(val.y_true, val.probs[:, 1]), abs=1e-12)
    assert s["NLL"] == pytest.approx(log_loss(val.y_true, val.probs), abs=1e-9)


def test_temperature_scaling_on_both_splits_says_when_test_gets_worse():
    _, val, test = _sets("binary/densenet121")
    ts = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs)
    assert ts.scores["test"]["before"]["NLL"] == pytest.approx(log_loss(test.y_true, test.probs), abs=1e-9)
    assert ts.scores["test"]["after"]["NLL"] == pytest.approx(log_loss(test.y_true, ts.test_scaled), abs=1e-9)
    v = ts.scores["validation"]
    assert ts.hurts_test and v["after"]["NLL"] < v["before"]["NLL"]
    sentence = temperature_sentence(ts)
    b, a = ts.scores["test"]["before"]["NLL"], ts.scores["test"]["after"]["NLL"]
    assert f"raises test NLL {b:.3f} -> {a:.3f}" in sentence and "does not carry over" in sentence
    assert "raises test NLL 0.523 -> 0.619" in sentence
    _, val, test = _sets("binary/resnet18")  # lower on both splits: said so
    ts = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs)
    assert not ts.hurts_test and "lowers test NLL" in temperature_sentence(ts)
    assert "does not carry over" not in temperature_sentence(ts)


def _page(page: str) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.switch_page(page)
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def test_the_shift_page_shows_both_splits():
    at = _page("pages/shift.py")
    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]
    v, t = shift_figures(*(selection.load_choice(ASSETS, *opt, s) for s in ("val", "test")))
    assert at.selectbox(key="shift_model").value == choice_label(opt)
    assert shift_paragraph(v, t) in [i.value for i in at.info]
    table = next(d.value for d in at.table if "figure" in d.value.columns)
    assert {"validation", "test", "validation 95 % CI", "test 95 % CI"} <= set(table.columns)
    row = table[table.figure == "Specificity"].iloc[0]
    assert (row["validation"], row["test"]) == (round(v.figures["specificity"]["value"], 3),
                                                round(t.figures["specificity"]["value"], 3))
    assert len(at.get("plotly_chart")) == 3  # NORMAL histograms, two reliability diagrams
    assert any("not for clinical use" in c.value.lower() for c in at.caption)


def test_the_calibration_page_shows_test_and_says_when_scaling_makes_it_worse():
    at = _page("pages/calibration.py")
    opt, val, test = _sets("binary/densenet121")
    at.selectbox(key="cal_model").set_value(choice_label(opt)).run()
    assert not at.exception
    ts = temperature_on_splits(val.y_true, val.probs, test.y_true, test.probs)
    table = next(d.value for d in at.dataframe if "NLL after" in d.value.columns)
    assert list(table["split"]) == ["validation", "test"]
    got = table.set_index("split")
    for split in ("validation", "test"):
        for k in ("ECE", "NLL"):
            for w in ("before", "after"):
                assert got.loc[split, f"{k} {w}"] == pytest.approx(ts.scores[split][w][k], abs=1e-4)
    assert temperature_sentence(ts) in [w.value for w in at.warning]
    assert "raises test NLL 0.523 -> 0.619" in temperature_sentence(ts)


def test_the_shift_page_offers_the_adabn_experiment_with_its_caveat():
    """AdaBN helped the bundled ResNet18 on test (experiments/adaptation/report.md): the page shows that experiment's
    figures, equal to pneumo_core's, with the caveat; a model it was not run for shows no such section."""
    from pneumo_core.evaluation.adaptation import ADABN_ROOT, CAVEAT, adabn_for, adaptation_rows

    at = _page("pages/shift.py")
    for key, shown in (("binary/resnet18/seed1", False), ("binary/resnet18/seed0", True)):  # seed 0 is bundled
        at.selectbox(key="shift_model").set_value(choice_label(resolve_choice(ASSETS, key))).run()
        assert not at.exception, [e.message for e in at.exception]
        assert any(CAVEAT == c.value for c in at.caption) == shown, key
    table = next(d.value for d in at.table if "adapted" in d.value.columns)
    want = pd.DataFrame(adaptation_rows(adabn_for(ASSETS, ADABN_ROOT, "binary", "resnet18", 0)))
    pd.testing.assert_frame_equal(table.reset_index(drop=True), want, check_dtype=False)
    assert adabn_for(ASSETS, ADABN_ROOT, "binary", "resnet18", 1) is None  # not the bundled seed: not run
