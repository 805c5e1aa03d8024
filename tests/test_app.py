"""The Streamlit app through streamlit.testing.v1.AppTest: every page, the slider, uploads, sources."""
from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from pneumo_core.evaluation import selection
from pneumo_core.evaluation.artifacts import prediction_index
from pneumo_core.files import ASSETS
from tests.app_utils import images_in, run_app
import os
import time
import numpy as np
import torch
from pneumo_core.data.images import load_grayscale
from pneumo_core.models.checkpoints import CheckpointMeta, save_checkpoint
from pneumo_core.models.networks import build_model
from pneumo_core.models.sources import LocalSource
from tests.checkpoint_utils import BINARY, tiny_checkpoint

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["pages/predict.py", "pages/lesson.py", "pages/compare.py", "pages/thresholds.py", "pages/calibration.py",
         "pages/shift.py", "pages/errors.py", "pages/models.py", "pages/audit.py"]

pytestmark = pytest.mark.skipif(prediction_index(ASSETS).empty, reason="no bundled prediction files in assets/")


def _table(at: AppTest, column: str):
    """The first table or dataframe on the page with this column (AppTest does not index them by key)."""
    return next(d.value for d in [*at.table, *at.dataframe] if column in d.value.columns)


def _app(page: str | None = None, timeout: int = 120, **state) -> AppTest:
    return run_app(page, timeout, **state)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_exception(page):
    at = _app(page)
    assert not at.exception, [e.message for e in at.exception]
    assert any("not for clinical use" in c.value.lower() for c in at.caption)


def _default_threshold_set():
    """The set the Thresholds page opens on: the rule's best model first (selection.set_choices)."""
    opt = selection.set_choices(ASSETS, ("binary", "three_class"))[0]
    return selection.load_choice(ASSETS, *opt, "val"), selection.load_choice(ASSETS, *opt, "test")


def test_threshold_slider_updates_confusion_numbers():
    from pneumo_core.evaluation.thresholds import ThresholdSweep

    at = _app("pages/thresholds.py")
    val, test = _default_threshold_set()
    # it opens at the model's validation threshold, the one Errors uses
    assert at.slider(key="threshold").value == pytest.approx(round(selection.pneumonia_threshold_on(val), 3))
    sweep = ThresholdSweep(test.y_binary, test.p_positive)
    for t in (0.2, 0.8):
        at.slider(key="threshold").set_value(t).run()
        assert not at.exception
        m = sweep.at(t)
        text = " ".join(md.value for md in at.markdown)
        assert f"**TP** {m['tp']} · **FP** {m['fp']} · **TN** {m['tn']} · **FN** {m['fn']}" in text
        table = _table(at, "metric")
        sens = table.loc[table.metric == "Sensitivity", "value"].iloc[0]
        assert sens == pytest.approx(m["sensitivity"], abs=1e-4)
    assert at.query_params["threshold"] == ["0.800"] or at.query_params["threshold"] == "0.800"


def test_threshold_from_the_url_and_presets():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["threshold"] = "0.3"
    at.run()
    at.switch_page("pages/thresholds.py")
    at.run()
    assert at.slider(key="threshold").value == pytest.approx(0.3)
    at.button(key="apply_preset").click().run()
    assert not at.exception
    assert "on validation → threshold" in " ".join(c.value for c in at.caption)


def test_calibration_temperature_scaling_and_models_table():
    at = _app("pages/calibration.py")
    at.toggle(key="temp").set_value(True).run()
    assert not at.exception
    table = _table(at, "ECE")
    assert len(table) == 2 and table["set"].iloc[1].startswith("temperature T =")
    at = _app("pages/models.py")
    assert not at.exception
    shown = set().union(*(set(d.value["model"]) for d in at.dataframe if "model" in d.value.columns))
    assert selection.ensemble_name(selection.ensemble_members(ASSETS, "binary")) in shown and "hierarchical" in shown


def test_uploading_a_real_test_image_yields_the_results_tables_models(pneumonia_image):
    at = _app("pages/predict.py", timeout=300)
    # AppTest has no file_uploader element: the page reads uploads from session state like the widget would
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    rec = UploadedFileRec(file_id="1", name=pneumonia_image.name, type="image/jpeg", data=pneumonia_image.read_bytes())
    at.session_state["uploads"] = [UploadedFile(rec, None)]
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    table = _table(at, "verdict")
    models = set(table["model"])
    for task in ("binary", "three_class"):
        for z in selection.zoo_models(ASSETS, task):
            assert z.name in models
    assert "hierarchical" in models
    ens = table[table.model.str.startswith("ensemble(") & (table.task == "binary")].iloc[0]
    t = selection.ensemble_threshold(ASSETS, selection.ensemble_members(ASSETS, "binary"))
    assert f"≥ {t:.3f}" in ens["decided by"]
    assert table["P(pneumonia)"].dropna().between(0, 1).all()
    assert at.get("image")  # the heatmap and the original


def test_sample_button_and_one_tweak_on_predict():
    at = _app("pages/predict.py", timeout=300)
    at.button(key="predict_sample").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert len(_table(at, "verdict")) >= 3
    at.slider(key="opacity").set_value(0.8).run()
    assert not at.exception


def test_sources_degrade_cleanly_offline(tmp_path):
    at = _app(source_kind="Hugging Face Hub", hub_repo="nobody/not-cached-anywhere")
    assert not at.exception
    captions = " ".join(c.value for c in at.sidebar.caption)
    assert "Using the bundled demo models" in captions
    at = _app(source_kind="Local checkpoints folder", local_dir=str(tmp_path / "missing"))
    assert not at.exception
    assert "Using the bundled demo models" in " ".join(c.value for c in at.sidebar.caption)


@pytest.mark.slow
def test_a_source_model_is_evaluated_on_the_dataset_folder(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path))
    at = _app("pages/calibration.py", timeout=600, data_dir=str(data_dir))
    sel = at.selectbox(key="cal_model")
    computed = [o for o in sel.options if "computed on the dataset folder" in o]
    assert computed, sel.options
    sel.set_value(computed[0]).run()
    assert not at.exception, [e.message for e in at.exception]
    table = _table(at, "ECE")
    assert len(table) == 1 and 0 <= table["ECE"].iloc[0] <= 1
    assert list(tmp_path.glob("predictions/*.parquet"))  # cached for the next visit


def test_where_models_look_survives_a_second_interaction():
    """The audit page's table is cached with its progress bar outside the cache: moving a slider (a cache
    hit) once raised CacheReplayClosureError."""
    at = _app("pages/audit.py", timeout=300)
    assert not at.exception, [e.message for e in at.exception]
    at.slider(key="audit_k").set_value(4).run()
    assert not at.exception, [e.message for e in at.exception]
    assert sum(len(col.get("image")) for col in at.tabs[0].columns) == 4


def test_pneumo_data_sets_the_sidebar_dataset_folder(data_dir, monkeypatch):
    monkeypatch.setenv("PNEUMO_DATA", str(data_dir))
    at = _app()
    assert at.sidebar.text_input(key="data_dir").value == str(data_dir)
    at.switch_page("pages/audit.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert at.selectbox(key="audit_split").value == "test"  # the dataset branch, not the bundled samples


def test_after_the_warm_up_a_sample_click_runs_no_model(monkeypatch):
    """The warm-up fills the very cache entries Predict and Compare read: afterwards "Try a sample" and Compare's
    first view run no forward pass (every nn.Module call counted: the models, the OOD gate, Grad-CAM)."""
    import torch

    from pages._shared.warmup import precompute_samples

    stats = precompute_samples()
    # every bundled checkpoint's probabilities (7 models and the three-class Lite0 seed ensemble's other 2 seeds);
    # heatmaps of Predict's first model (the rule's, ResNet18) and the Compare pair (ResNet18, DenseNet121)
    assert stats["samples"] == 12 and stats["probabilities"] == 12 * 9 and stats["heatmaps"] == 12 * 2
    calls = []
    real = torch.nn.Module.__call__

    def counted(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(torch.nn.Module, "__call__", counted)
    at = _app("pages/predict.py")
    at.button(key="predict_sample").click().run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("OOD score" in c.value for c in at.caption) and len(_table(at, "verdict")) >= 7
    at = _app("pages/compare.py")
    assert not at.exception, [e.message for e in at.exception]
    assert len(images_in(at)) == 3  # the original and the pair's two overlays
    assert calls == [], calls[:10]


def test_a_checkpoint_that_failed_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    from pneumo_core.models import weights

    bad = tmp_path / "checkpoints" / "binary" / "resnet18.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    reads = []
    real = weights.check_in_worker
    monkeypatch.setattr(weights, "check_in_worker", lambda path: (reads.append(str(path)), real(path))[1])
    at = _app("pages/compare.py", source_kind="Local checkpoints folder", local_dir=str(tmp_path))
    assert not at.exception and any("binary/resnet18 skipped" in e.value for e in at.error)
    at.run()
    assert any("binary/resnet18 skipped" in e.value for e in at.error) and len(reads) == 1
    bad.write_bytes(b"PK\x03\x04 still not a zip, but changed")
    at.run()
    assert len(reads) == 2  # a changed file is read afresh


def test_uploads_past_the_session_budget_are_left_out_and_named(pneumonia_image):
    """At most MAX_UPLOADS files and MAX_UPLOAD_BYTES at a time: 800 MB of uploads once held 1 GB."""
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    from pages._shared import images

    data = pneumonia_image.read_bytes()
    padded = data + b"\0" * (40 * 2**20)  # a JPEG decoder stops at its end marker: 40 MB that still decode
    files = [UploadedFile(UploadedFileRec(file_id=str(i), name=f"x{i}.jpeg", type="image/jpeg",
                                          data=padded if i < 3 else data), None) for i in range(14)]
    kept, note = images.take_uploads(files)
    assert [n for n, _ in kept] == ["x0.jpeg", "x1.jpeg"]  # a third 40 MB file would pass 100 MB
    assert "14 files uploaded" in note and "the first 2 (80 MB)" in note and "the other 12 are left out" in note
    small = [UploadedFile(UploadedFileRec(file_id=f"s{i}", name=f"s{i}.jpeg", type="image/jpeg", data=data), None)
             for i in range(images.MAX_UPLOADS + 1)]
    kept, note = images.take_uploads(small)
    assert len(kept) == images.MAX_UPLOADS and "the other 1 are left out" in note
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.session_state["uploads"] = small
    at.run()
    at.switch_page("pages/predict.py").run()
    assert not at.exception and any("the other 1 are left out" in w.value for w in at.warning)


def test_cached_outputs_follow_a_checkpoint_replaced_in_place(tmp_path, normal_image):
    """Probabilities and CAMs are keyed by the checkpoint file's stamp, not only by its name."""
    from pages._shared.models import cam, model_probs

    path = tiny_checkpoint(tmp_path / "checkpoints/binary/custom_cnn.pt")
    src = LocalSource(tmp_path)
    gray = load_grayscale(normal_image)
    p1, c1 = model_probs(src, src.label, "binary/custom_cnn", "img", gray), cam(src, src.label, "binary/custom_cnn",
                                                                              "img", "gradcam", None, gray)
    assert np.array_equal(p1, model_probs(src, src.label, "binary/custom_cnn", "img", gray))
    torch.manual_seed(1)
    model = build_model("custom_cnn", 1)
    save_checkpoint(path, model.state_dict(), CheckpointMeta(arch="custom_cnn", task="binary", classes=BINARY,
                                                             n_outputs=1))
    os.utime(path, ns=(time.time_ns() + 10**9,) * 2)  # a new mtime even on coarse file systems
    p2 = model_probs(src, src.label, "binary/custom_cnn", "img", gray)
    assert not np.allclose(p1, p2)
    assert not np.allclose(c1.raw, cam(src, src.label, "binary/custom_cnn", "img", "gradcam", None, gray).raw)
