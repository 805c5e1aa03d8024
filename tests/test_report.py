"""Prediction files (ours and the two public formats), ensembles, and the ``report`` CLI."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from pneumo_core.data.datasets import scan_kermany
from pneumo_core.errors import PredictionFileError
from pneumo_core.evaluation.predictions import align, ensemble, make_table, read_predictions, write_predictions
from pathlib import Path
from pneumo_core.errors import LimitError
from pneumo_core.evaluation import bootstrap
from tests.checkpoint_utils import BINARY
from tests.cli_utils import cli_result, one_line_error, run_cli, strict_json

BINARY_KEYS = ("tp fp tn fn sensitivity specificity precision npv f1 accuracy auroc average_precision ece brier "
               "threshold").split()
THREE_KEYS = "accuracy macro_f1 per_class confusion_matrix auroc_macro ece".split()


def _cli(*args):
    return cli_result("report", *args)


@pytest.fixture(scope="module")
def test_ids(data_dir):
    f = scan_kermany(data_dir, splits=["test"])
    return f["image_id"].tolist(), f["label"].tolist()


def _binary_table(ids, labels, seed, model="m"):
    rng = np.random.default_rng(seed)
    y = np.array([int(label != "NORMAL") for label in labels])
    p = np.clip(rng.normal(0.3 + 0.45 * y, 0.22), 0, 1)
    return make_table(ids, y, np.stack([1 - p, p], 1), ["NORMAL", "PNEUMONIA"], split="test", model=model,
                      task="binary", seed=seed, checkpoint=f"ck{seed}")


def test_round_trip_csv_and_parquet(tmp_path, test_ids):
    t = _binary_table(*test_ids, seed=0)
    for suffix in (".csv", ".parquet"):
        path = write_predictions(t, tmp_path / f"p{suffix}")
        back = read_predictions(path)
        assert back.classes == ("NORMAL", "PNEUMONIA") and back.task == "binary" and back.name == "m/seed0"
        np.testing.assert_allclose(back.probs, t.probs, rtol=1e-7)
        assert list(back.frame["image_id"]) == list(t.frame["image_id"])
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d.drop(columns=["y_true"]), "missing column"),
    (lambda d: d.assign(prob_NORMAL=d.prob_NORMAL * 0.5 + 0.01), "sum to"),
    (lambda d: d.assign(prob_PNEUMONIA=-d.prob_PNEUMONIA), r"\[0, 1\]"),
    (lambda d: d.assign(y_true=5), "y_true must be integers"),
    (lambda d: d.assign(image_id="same"), "more than once"),
    (lambda d: d.drop(columns=["prob_NORMAL"]), "one prob_<CLASS> column per class"),
    (lambda d: d.iloc[:0], "no rows"),
])
def test_validation_messages(tmp_path, test_ids, mutate, message):
    t = _binary_table(*test_ids, seed=0)
    bad = tmp_path / "bad.csv"
    mutate(t.frame).to_csv(bad, index=False)
    with pytest.raises(PredictionFileError, match=message):
        read_predictions(bad)
    r = _cli(bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.csv" in r.stderr


def test_published_probs_json_reproduces_sklearn_figures(tmp_path):
    rng = np.random.default_rng(11)
    y = np.array([0] * 234 + [1] * 390)
    p = np.clip(rng.normal(0.25 + 0.5 * y, 0.2), 0, 1)
    f = tmp_path / "densenet121_seed0_probs.json"
    f.write_text(json.dumps({"y_true": y.tolist(), "y_prob": p.tolist(), "model": "densenet121", "seed": 0}))
    r = _cli(f, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(BINARY_KEYS) <= set(out)
    tn, fp, fn, tp = skm.confusion_matrix(y, (p >= 0.5).astype(int)).ravel()
    assert (out["tp"], out["fp"], out["tn"], out["fn"]) == (tp, fp, tn, fn)
    assert out["auroc"] == skm.roc_auc_score(y, p)  # exactly
    assert out["model"] == "densenet121/seed0"
    # three-class variant
    probs = rng.dirichlet([1, 1, 1], 624)
    y3 = rng.integers(0, 3, 624)
    f3 = tmp_path / "ensemble_probs.json"
    f3.write_text(json.dumps({"y_true": y3.tolist(), "y_prob": probs.tolist(), "model": "ensemble"}))
    out3 = json.loads(_cli(f3, "--json").stdout)
    assert set(THREE_KEYS) <= set(out3)
    assert out3["confusion_matrix"] == skm.confusion_matrix(y3, probs.argmax(1)).tolist()
    assert out3["macro_f1"] == pytest.approx(skm.f1_score(y3, probs.argmax(1), average="macro"))
    assert out3["binary_view"]["tp"] == int(((probs[:, 0] <= 0.5) & (y3 > 0)).sum())


def test_kaggle_yscores_csv(tmp_path):
    rng = np.random.default_rng(12)
    y = rng.integers(0, 2, 200)
    s = rng.uniform(size=200)
    f = tmp_path / "resnet_yscores.csv"
    pd.DataFrame({"y_true": y, "y_scores": s}).to_csv(f, index=False)
    pred = read_predictions(f)
    assert pred.task == "binary"
    np.testing.assert_allclose(pred.p_positive, s)
    out = json.loads(_cli(f, "--json").stdout)
    assert out["auroc"] == pytest.approx(skm.roc_auc_score(y, s))


def test_several_files_mean_std_and_ensemble(tmp_path, test_ids):
    files = []
    for seed in range(3):
        files.append(write_predictions(_binary_table(*test_ids, seed=seed), tmp_path / f"s{seed}.csv"))
    out = json.loads(_cli(*files, "--json").stdout)
    assert len(out["runs"]) == 3
    aucs = [r["auroc"] for r in out["runs"]]
    assert out["mean_std"]["auroc"]["mean"] == pytest.approx(np.mean(aucs))
    assert out["mean_std"]["auroc"]["std"] == pytest.approx(np.std(aucs, ddof=1))
    preds = [read_predictions(f) for f in files]
    ens = ensemble(preds)
    np.testing.assert_allclose(ens.probs, np.mean([p.probs for p in align(preds)], 0))
    assert out["ensemble"]["auroc"] == pytest.approx(skm.roc_auc_score(ens.y_true, ens.p_positive))
    # recall by subtype from the Kermany file names
    assert set(out["runs"][0]["recall_by_subtype"]) == {"BACTERIA", "VIRUS"}


def test_ensemble_refuses_different_images(test_ids):
    ids, labels = test_ids
    a = _binary_table(ids, labels, 0)
    b = _binary_table(ids[1:], labels[1:], 1)
    with pytest.raises(PredictionFileError, match="other images"):
        ensemble([a, b])
    # same images in another order are aligned by id
    shuffled = a.frame.sample(frac=1, random_state=0)
    from pneumo_core.evaluation.predictions import validate

    e = ensemble([a, validate(shuffled, "shuffled")])
    np.testing.assert_allclose(np.sort(e.p_positive), np.sort(a.p_positive))


def test_operating_point_chosen_on_validation(tmp_path, test_ids):
    ids, labels = test_ids
    val = write_predictions(_binary_table(ids, labels, seed=5), tmp_path / "val.csv")
    test = write_predictions(_binary_table(ids, labels, seed=6), tmp_path / "test.csv")
    out = json.loads(_cli(test, "--operating-point", "sens=0.95", "--on", val, "--json", "--bootstrap", "200").stdout)
    v = read_predictions(val)
    from pneumo_core.evaluation.thresholds import choose

    assert out["threshold"] == pytest.approx(choose(v.y_binary, v.p_positive, "sens=0.95").threshold)
    assert out["operating_point"]["chosen_on"].endswith("val.csv")
    assert out["ci95"]["auroc"]["low"] < out["auroc"] < out["ci95"]["auroc"]["high"]
    r = _cli(test, "--operating-point", "youden")
    assert r.returncode == 2 and "--on" in r.stderr
    r = _cli(test, "--operating-point", "nonsense", "--on", val)
    assert r.returncode == 2 and "unknown operating point" in r.stderr
    text = _cli(test, "--threshold", "0.4")
    assert text.returncode == 0 and "threshold 0.4000" in text.stdout


def test_missing_and_non_table_files(tmp_path):
    r = _cli(tmp_path / "nope.csv")
    assert r.returncode == 2 and "not found" in r.stderr
    (tmp_path / "x_probs.json").write_text("{not json")
    r = _cli(tmp_path / "x_probs.json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr


def test_a_prediction_file_with_thousands_of_classes_is_refused_before_any_matrix(tmp_path):
    """The review's 135 KB CSV with 8000 prob_ columns took 4.3 GB in `report`."""
    from pneumo_core.errors import PredictionFileError
    from pneumo_core.evaluation.predictions import MAX_CLASSES, read_predictions

    cols = {"image_id": ["a", "b"], "y_true": [0, 1]}
    cols.update({f"prob_C{i}": [1 / 8000] * 2 for i in range(8000)})
    pd.DataFrame(cols).to_csv(tmp_path / "wide.csv", index=False)
    with pytest.raises(PredictionFileError, match=f"8000 prob_<CLASS> columns; at most {MAX_CLASSES}"):
        read_predictions(tmp_path / "wide.csv")


def _table(tmp_path: Path, y: np.ndarray, name: str = "p.csv") -> Path:
    rng = np.random.default_rng(1)
    p = np.clip(rng.normal(0.3 + 0.4 * (y == 1), 0.2), 0, 1)
    t = make_table([f"i{k}" for k in range(len(y))], y, np.stack([1 - p, p], 1), BINARY, model="m", task="binary")
    return write_predictions(t, tmp_path / name)


def test_unknown_labels_are_left_out_of_every_metric(tmp_path, capsys):
    y = np.array([0, 1] * 50 + [-1] * 7)
    mixed = _table(tmp_path, y)
    known = pd.read_csv(mixed)
    known = known[known.y_true >= 0]
    known.to_csv(tmp_path / "known.csv", index=False)
    code, out, _ = run_cli(capsys, "report", mixed, "--json")
    r = strict_json(out)
    code2, out2, _ = run_cli(capsys, "report", tmp_path / "known.csv", "--json")
    r2 = strict_json(out2)
    assert code == code2 == 0 and r["n_unknown"] == 7 and r2["n_unknown"] == 0 and "7 row(s)" in r["note"]
    for k in ("tp", "fp", "tn", "fn", "n", "auroc", "ece", "sensitivity"):
        assert r[k] == r2[k], k
    code, out, _ = run_cli(capsys, "report", mixed)
    assert code == 0 and "note: 7 row(s) with an unknown label" in out


@pytest.mark.parametrize("content,message", [
    ({"y_true": {"a": 1}, "y_prob": [0.5]}, "must be lists"),
    ({"y_true": [0, 1], "y_prob": ["x", "y"]}, "y_prob numbers"),
    ({"y_true": [[0], [1]], "y_prob": [0.1, 0.9]}, "flat list"),
    ({"y_true": [0, 1], "y_prob": [0.1, float("nan")]}, "NaN"),
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
])
def test_malformed_probs_json(tmp_path, capsys, content, message):
    f = tmp_path / "m_probs.json"
    f.write_text(content if isinstance(content, str) else json.dumps(content))
    code, _, err = run_cli(capsys, "report", f)
    one_line_error(code, err)
    assert message in err


def test_non_utf8_csv_is_named_as_such(tmp_path, capsys):
    f = tmp_path / "latin.csv"
    f.write_bytes("image_id,y_true,prob_NORMAL,prob_PNEUMONIA\ncaf\xe9,0,0.4,0.6\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "report", f)
    one_line_error(code, err)
    assert "not UTF-8 text" in err and "JSON" not in err


@pytest.mark.parametrize("args", [["--bins", "0"], ["--bins", "1001"], ["--bootstrap", "-1"], ["--bootstrap", "1e8"],
                                  ["--bootstrap", "100001"], ["--threshold", "nan"], ["--threshold", "1.5"]])
def test_report_arguments_are_range_checked(tmp_path, capsys, args):
    code, out, err = run_cli(capsys, "report", _table(tmp_path, np.array([0, 1] * 20)), *args)
    assert code == 2 and "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1].startswith("python -m pneumo_core report: error: argument")


def test_bootstrap_work_is_capped(tmp_path, capsys, monkeypatch):
    with pytest.raises(LimitError, match="at most 1,000 resamples"):
        bootstrap.check_work(2_000_000, 100_000)
    monkeypatch.setattr(bootstrap, "MAX_WORK", 1_000)
    code, _, err = run_cli(capsys, "report", _table(tmp_path, np.array([0, 1] * 20)), "--bootstrap", "200")
    one_line_error(code, err)
    assert "more work than we take" in err
