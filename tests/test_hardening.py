"""Hostile inputs (issue #16): each costs a bounded amount, ends in a named error (exit 2 on the command
line), never in a traceback, a hang or a silent wrong number. Bombs are made in tmp folders from a few bytes."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pneumo_core.cli.main import main as cli
from pneumo_core.data import images
from pneumo_core.data.images import load_grayscale
from pneumo_core.errors import (
    CheckpointError,
    ImageLoadError,
    ImageTooLargeError,
    ImageTooSmallError,
    LimitError,
    NonFiniteOutputError,
    NotAnImageError,
    NotARegularFileError,
)
from pneumo_core.evaluation import bootstrap
from pneumo_core.evaluation.predictions import make_table, write_predictions
from pneumo_core.files import atomic_write, clean_stale_temps, escape_markdown, safe_cell, safe_filename
from pneumo_core.models.checkpoints import CheckpointMeta, load_checkpoint, save_checkpoint
from pneumo_core.models.networks import build_model
from pneumo_core.models.sources import LocalSource
from tests.bombs import deflated_dicom_bomb, dicom_header_bomb, png_bomb
from tests.browser_utils import CHROMIUM, DRIVER, app_server, chrome
from tests.dicom_utils import write_dicom
from tests.training_utils import interrupt_after_epoch

ROOT = Path(__file__).resolve().parent.parent
BINARY = ["NORMAL", "PNEUMONIA"]


def run(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process: (exit code, stdout, stderr)."""
    try:
        code = cli([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert [ln for ln in err.strip().splitlines() if "error" in ln.lower()], err


def strict_json(text: str):
    def no_constant(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=no_constant)


# ---------------------------------------------------------------- images: bounded before decoding

def test_bombs_are_refused_on_the_header_in_little_memory(tmp_path):
    """The review's 9.7 KB PNG (8900 x 8900, 1 bit) and a DICOM promising 10 frames of 8000 x 8000, in a
    fresh process: refused, and the process stays small (it used to reach 1.6 GB)."""
    png = png_bomb(tmp_path / "bomb.png")
    assert png.stat().st_size < 20_000
    dcm = dicom_header_bomb(tmp_path / "frames.dcm")
    # VmHWM, not getrusage: ru_maxrss of a child carries its parent's peak across exec
    code = ("import re, sys\nfrom pneumo_core.data.images import load_grayscale\n"
            "for f in sys.argv[1:]:\n"
            "    try:\n        load_grayscale(f)\n        print('LOADED', f)\n"
            "    except Exception as e:\n        print(type(e).__name__, e)\n"
            "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
            "print('PEAK_MB', int(hwm) / 1024)\n")
    r = subprocess.run([sys.executable, "-c", code, str(png), str(dcm)], capture_output=True, text=True,
                       timeout=120, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stdout.splitlines()
    assert lines[0].startswith("ImageTooLargeError") and "8900 x 8900" in lines[0], r.stdout + r.stderr
    assert lines[1].startswith("ImageTooLargeError") and "8000 x 8000" in lines[1]
    assert float(lines[2].split()[1]) < 400, lines[2]


def test_dicom_frames_samples_and_bytes_are_bounded(tmp_path):
    # each frame is allowed (4 MP), all 20 of them at 16 bits are not (152 MB)
    with pytest.raises(ImageTooLargeError, match=r"20 frame\(s\).*152\.6 MB"):
        load_grayscale(dicom_header_bomb(tmp_path / "many.dcm", frames=20, rows=2000, cols=2000))
    # a header that promises more than the file holds is a clear error, not a huge allocation
    with pytest.raises(ImageLoadError, match="less than expected"):
        load_grayscale(dicom_header_bomb(tmp_path / "short.dcm", frames=2, rows=2000, cols=2000))


def test_deflated_dicom_is_counted_before_pydicom_inflates_it(tmp_path, monkeypatch):
    gray = (np.random.default_rng(0).random((64, 96)) * 255).astype(np.uint8)
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ok = write_dicom(tmp_path / "small.dcm", gray, transfer_syntax=DeflatedExplicitVRLittleEndian)
    np.testing.assert_allclose(load_grayscale(ok), gray / 255, atol=1e-6)  # a small deflated file still loads
    bomb = deflated_dicom_bomb(tmp_path / "bomb.dcm", frames=1, rows=1024, cols=1024)  # 2 MB inflated
    monkeypatch.setattr(images, "MAX_INFLATED_BYTES", 1 << 20)
    with pytest.raises(ImageTooLargeError, match="inflates to more than 1.0 MB"):
        load_grayscale(bomb)


def test_multi_frame_dicom_gives_its_first_frame(tmp_path):
    import pydicom

    frames = np.stack([np.full((64, 64), v, np.uint8) for v in (10, 200, 90)])
    path = write_dicom(tmp_path / "mf.dcm", frames[0])
    ds = pydicom.dcmread(path)
    ds.NumberOfFrames, ds.PixelData = 3, frames.tobytes()
    ds.save_as(path)
    assert load_grayscale(path).mean() == pytest.approx(10 / 255)


def test_fifo_is_refused_at_once(tmp_path):
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    result: list = []

    def load() -> None:
        try:
            load_grayscale(fifo)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            result.append(exc)

    t = threading.Thread(target=load, daemon=True)
    t0 = time.monotonic()
    t.start()
    t.join(timeout=10)
    assert not t.is_alive(), "reading a FIFO blocked"
    assert time.monotonic() - t0 < 5
    assert isinstance(result[0], NotARegularFileError) and "not a regular file" in str(result[0])


def test_links_to_devices_and_oversized_files(tmp_path):
    zero = tmp_path / "zero.png"
    zero.symlink_to("/dev/zero")
    with pytest.raises(NotARegularFileError):
        load_grayscale(zero)
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(images.MAX_FILE_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ImageTooLargeError, match="larger than 64.0 MB"):
        load_grayscale(big)
    with pytest.raises(ImageTooLargeError, match="more than we read"):
        load_grayscale(b"\0" * (images.MAX_FILE_BYTES + 1))
    with pytest.raises(ImageTooLargeError):
        load_grayscale(io.BytesIO(b"\0" * (images.MAX_FILE_BYTES + 1)))
    with pytest.raises(NotAnImageError, match="folder"):
        load_grayscale(tmp_path)


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def test_tiny_images_are_refused_and_large_ones_shrunk():
    for size in ((1, 1), (300, 20)):
        with pytest.raises(ImageTooSmallError, match="too small"):
            load_grayscale(_png(Image.new("L", size, 128)), name="tiny.png")
    wide = load_grayscale(_png(Image.new("L", (3000, 1000), 77)), name="wide.png")
    assert wide.shape == (683, 2048) and np.allclose(wide, 77 / 255)


def test_large_dicom_is_shrunk_before_its_lookup_tables(tmp_path):
    values = np.tile(np.linspace(0, 4095, 2500), (3000, 1)).astype(np.uint16)
    out = load_grayscale(write_dicom(tmp_path / "big.dcm", values, bits_stored=12, window=(2048, 4096)))
    assert out.shape == (2048, 1707)
    assert 0 <= out.min() < 0.01 and 0.99 < out.max() <= 1


def test_a_dcm_that_is_not_dicom_is_named_so(tmp_path):
    (tmp_path / "notes.dcm").write_text("this is a text file\n" * 20)
    with pytest.raises(NotAnImageError, match="not a DICOM file"):
        load_grayscale(tmp_path / "notes.dcm")
    (tmp_path / "png.dcm").write_bytes(_png(Image.new("L", (64, 64), 200)))  # a PNG under a DICOM name
    assert load_grayscale(tmp_path / "png.dcm").mean() == pytest.approx(200 / 255)


def test_eps_is_not_opened(tmp_path):
    """PIL's EPS decoder runs Ghostscript: only plain raster formats are opened."""
    (tmp_path / "x.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n")
    with pytest.raises(NotAnImageError):
        load_grayscale(tmp_path / "x.png")


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


# ---------------------------------------------------------------- checkpoints: refused by name

def _ours(path: Path, n_outputs: int = 1, task: str = "binary", classes=BINARY, nan: bool = False, **meta) -> Path:
    torch.manual_seed(0)
    model = build_model("custom_cnn", n_outputs)
    sd = model.state_dict()
    if nan:
        sd["classifier.3.weight"][0, 0] = float("nan")
    m = CheckpointMeta(arch="custom_cnn", task=task, classes=list(classes), n_outputs=n_outputs, **meta)
    return save_checkpoint(path, sd, m)


def test_a_head_that_does_not_fit_the_task_is_refused(tmp_path, capsys, normal_image):
    """Five outputs in a three_class folder used to give probabilities summing to 0.80."""
    path = tmp_path / "checkpoints/three_class/custom_cnn.pt"
    path.parent.mkdir(parents=True)
    torch.save({"model_state_dict": build_model("custom_cnn", 5).state_dict()}, path)
    with pytest.raises(CheckpointError, match=r"5 output\(s\), but task three_class .* needs 3"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="needs 3"):
        LocalSource(tmp_path).load("three_class/custom_cnn")
    one_line_error(*run(capsys, "predict", "--checkpoint", path, normal_image)[::2])
    one_line_error(*run(capsys, "predict", "--checkpoint", f"{tmp_path}/three_class/custom_cnn", normal_image)[::2])


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
    path = _ours(tmp_path / "m.pt", **kw)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)
    code, _, err = run(capsys, "predict", "--checkpoint", path, normal_image)
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
        one_line_error(*run(capsys, "predict", "--checkpoint", path, normal_image)[::2])


def test_nan_weights_are_an_error_for_each_image_not_a_verdict(tmp_path, capsys, normal_image, pneumonia_image):
    from pneumo_core.inference.predictors import Predictor

    path = _ours(tmp_path / "custom_cnn.pt", nan=True)
    p = Predictor(load_checkpoint(path))
    with pytest.raises(NonFiniteOutputError, match="custom_cnn.*NaN"):
        p.predict_grays([load_grayscale(normal_image)])
    code, out, err = run(capsys, "predict", "--checkpoint", path, normal_image, pneumonia_image, "--json")
    assert code == 1 and "Traceback" not in err
    results = strict_json(out)["results"]
    assert all("NaN" in r["error"] and "probabilities" not in r for r in results)


def test_cam_method_is_checked_before_the_model_loads(tmp_path, capsys, normal_image):
    code, _, err = run(capsys, "predict", "--checkpoint", tmp_path / "missing.pt", normal_image, "--cam", "foo")
    one_line_error(code, err)
    assert "unknown CAM method 'foo'" in err  # not "checkpoint file not found": nothing was loaded


def test_predict_json_is_valid_and_names_bad_images(tmp_path, capsys, normal_image):
    path = _ours(tmp_path / "custom_cnn.pt")
    Image.new("L", (1, 1)).save(tmp_path / "dot.png")
    code, out, err = run(capsys, "predict", "--checkpoint", path, normal_image, tmp_path / "dot.png", "--json")
    assert code == 1, err
    good, bad = strict_json(out)["results"]
    assert sum(good["probabilities"].values()) == pytest.approx(1.0) and "too small" in bad["error"]


def test_one_bad_model_in_a_folder_leaves_the_rest_usable(tmp_path):
    _ours(tmp_path / "checkpoints/binary/custom_cnn.pt")
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    src = LocalSource(tmp_path)
    assert [r.key for r in src.list()] == ["binary/custom_cnn", "binary/resnet18"]
    assert src.load("binary/custom_cnn").meta.arch == "custom_cnn"
    with pytest.raises(CheckpointError, match="resnet18.pt"):
        src.load("binary/resnet18")


def test_local_folder_is_one_cache_entry_however_spelt(tmp_path, monkeypatch):
    path = _ours(tmp_path / "zoo/checkpoints/binary/custom_cnn.pt")
    monkeypatch.chdir(tmp_path)
    spellings = [tmp_path / "zoo", "zoo", "./zoo/", "zoo/../zoo", "zoo/checkpoints"]
    assert len({LocalSource(s).label for s in spellings}) == 1
    src = LocalSource("zoo")
    before = src.stamp("binary/custom_cnn")
    assert before.startswith("custom_cnn.pt:")
    time.sleep(0.01)
    _ours(path, threshold=0.3)  # the file replaced: the cache key changes
    assert src.stamp("binary/custom_cnn") != before and src.stamp("binary/nothing") == ""


# ---------------------------------------------------------------- reports: no silent wrong number

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
    code, out, _ = run(capsys, "report", mixed, "--json")
    r = strict_json(out)
    code2, out2, _ = run(capsys, "report", tmp_path / "known.csv", "--json")
    r2 = strict_json(out2)
    assert code == code2 == 0 and r["n_unknown"] == 7 and r2["n_unknown"] == 0 and "7 row(s)" in r["note"]
    for k in ("tp", "fp", "tn", "fn", "n", "auroc", "ece", "sensitivity"):
        assert r[k] == r2[k], k
    code, out, _ = run(capsys, "report", mixed)
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
    code, _, err = run(capsys, "report", f)
    one_line_error(code, err)
    assert message in err


def test_non_utf8_csv_is_named_as_such(tmp_path, capsys):
    f = tmp_path / "latin.csv"
    f.write_bytes("image_id,y_true,prob_NORMAL,prob_PNEUMONIA\ncaf\xe9,0,0.4,0.6\n".encode("latin-1"))
    code, _, err = run(capsys, "report", f)
    one_line_error(code, err)
    assert "not UTF-8 text" in err and "JSON" not in err


@pytest.mark.parametrize("args", [["--bins", "0"], ["--bins", "1001"], ["--bootstrap", "-1"], ["--bootstrap", "1e8"],
                                  ["--bootstrap", "100001"], ["--threshold", "nan"], ["--threshold", "1.5"]])
def test_report_arguments_are_range_checked(tmp_path, capsys, args):
    code, out, err = run(capsys, "report", _table(tmp_path, np.array([0, 1] * 20)), *args)
    assert code == 2 and "Traceback" not in err and out == ""
    assert err.strip().splitlines()[-1].startswith("python -m pneumo_core report: error: argument")


def test_bootstrap_blocks_draw_the_same_resamples_in_bounded_memory(monkeypatch):
    import tracemalloc

    rng = np.random.default_rng(0)
    y = np.array([0] * 300 + [1] * 700)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)
    whole = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=64, seed=3)
    monkeypatch.setattr(bootstrap, "BLOCK_ELEMENTS", 5_000)  # 5 resamples a block
    blocks = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=64, seed=3)
    for m in whole:
        for k in ("value", "low", "high"):
            assert blocks[m][k] == pytest.approx(whole[m][k], abs=1e-12), (m, k)
    monkeypatch.undo()
    n = 200_000  # the whole (200 x 200 000) matrix would be 320 MB of weights alone, plus the indices
    y = (rng.random(n) < 0.6).astype(int)
    p = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1)
    tracemalloc.start()
    ci = bootstrap.bootstrap_binary(y, p, 0.5, n_boot=200, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert ci["auroc"]["low"] < ci["auroc"]["value"] < ci["auroc"]["high"]
    assert peak < 200 * 2**20, peak / 2**20


def test_bootstrap_work_is_capped(tmp_path, capsys, monkeypatch):
    with pytest.raises(LimitError, match="at most 1,000 resamples"):
        bootstrap.check_work(2_000_000, 100_000)
    monkeypatch.setattr(bootstrap, "MAX_WORK", 1_000)
    code, _, err = run(capsys, "report", _table(tmp_path, np.array([0, 1] * 20)), "--bootstrap", "200")
    one_line_error(code, err)
    assert "more work than we take" in err


# ---------------------------------------------------------------- files, training, app

def test_safe_cells_file_names_and_markdown():
    assert safe_cell('=HYPERLINK("http://x","click")') == '\'=HYPERLINK("http://x","click")'
    assert [safe_cell(v) for v in ("+1", "-1", "@SUM(A1)", "ok.png", 0.5)] == ["'+1", "'-1", "'@SUM(A1)", "ok.png", 0.5]
    name = safe_filename('=HYPERLINK("http://evil/x","y")')
    assert name and not name.startswith(("=", "+", "-", "@", ".")) and "/" not in name and '"' not in name
    assert safe_filename("../../etc/passwd") == "passwd" and safe_filename("...") == "image"
    assert escape_markdown("![x](http://evil/t.png)") == r"\!\[x\]\(http\://evil/t\.png\)"


def test_atomic_write_respects_the_umask_and_cleans_what_a_killed_writer_left(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.txt", lambda t: Path(t).write_text("a"))
        os.umask(0o077)
        atomic_write(tmp_path / "b.txt", lambda t: Path(t).write_text("b"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "b.txt").stat().st_mode & 0o777 == 0o600
    stale, fresh = tmp_path / ".a.txt.x1.tmp", tmp_path / ".a.txt.x2.tmp"
    stale.write_text("left by kill -9")
    fresh.write_text("a writer still at work")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    atomic_write(tmp_path / "a.txt", lambda t: Path(t).write_text("again"))
    assert not stale.exists() and fresh.exists()
    assert clean_stale_temps(tmp_path / "a.txt", max_age_s=-1) == [fresh]


def test_resume_keeps_early_stopping_patience(tmp_path, data_dir, monkeypatch):
    """Improvement only in epoch 1, patience 2: stop after epoch 3, interrupted after epoch 2 or not."""
    from pneumo_core.training import loop

    monkeypatch.setattr(loop, "_better", lambda selection, new, best: best is None)
    cfg = loop.TrainConfig(task="binary", arch="custom_cnn", init="scratch", data_dir=str(data_dir),
                           out=str(tmp_path / "r"), cache_dir=str(tmp_path / "cache"), image_size=64, epochs=6,
                           limit=40, batch_size=20, patience=2)
    interrupt_after_epoch(loop.train, cfg, 2)
    resumed = loop.train(cfg, resume=True, log=lambda s: None)
    straight = loop.train(loop.TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "s")}), log=lambda s: None)
    assert straight["epochs_run"] == 3 and resumed["epochs_run"] == 3


def test_streamlit_config_bounds_uploads_and_hides_errors():
    cfg = tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["maxUploadSize"] <= 50
    assert cfg["client"]["showErrorDetails"] == "none"


def _app(timeout: int = 300, **state):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    return at


def test_predict_has_its_own_url_and_the_root_goes_there():
    at = _app()
    assert not at.exception and [t.value for t in at.title] == ["Predict"]
    pages = getattr(at, "_registered_pages", None)
    if pages is None:
        pytest.skip("this Streamlit's AppTest does not expose the registered pages")
    urls = {info.get("url_pathname"): str(info.get("script_path", "")) for info in pages.values()}
    assert urls.get("predict", "").endswith("pages/predict.py")  # /predict resolves, no "Page not found"


def test_predict_page_skips_a_bad_model_and_caps_uploads(tmp_path):
    from streamlit.runtime.uploaded_file_manager import UploadedFile, UploadedFileRec

    _ours(tmp_path / "checkpoints/binary/custom_cnn.pt")
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    at = _app(source_kind="Local checkpoints folder", local_dir=str(tmp_path))
    assert not at.exception, [e.message for e in at.exception]
    good = UploadedFile(UploadedFileRec(file_id="0", name='=HYPERLINK("x").png', type="image/png",
                                        data=_png(Image.new("L", (64, 64), 90))), None)
    bad = [UploadedFile(UploadedFileRec(file_id=str(i), name=f"=cmd{i}.png", type="image/png", data=b"not a picture"),
                        None) for i in range(1, 13)]
    at.session_state["uploads"] = [good] + bad  # 13 files: the first 12 are read
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    assert any("13 files uploaded" in w.value and "the first 12" in w.value for w in at.warning)
    assert sum("not an image" in e.value for e in at.error) == 11


def _folder_with_a_bad_model(tmp_path: Path) -> Path:
    """Two good custom_cnn checkpoints (binary, three-class) and a garbage binary/resnet18.pt."""
    _ours(tmp_path / "checkpoints/binary/custom_cnn.pt")
    _ours(tmp_path / "checkpoints/three_class/custom_cnn.pt", n_outputs=3, task="three_class",
          classes=["NORMAL", "BACTERIA", "VIRUS"])
    (tmp_path / "checkpoints/binary/resnet18.pt").write_bytes(b"garbage" * 100)
    return tmp_path


def test_compare_skips_a_bad_model_and_shows_the_rest(tmp_path):
    folder = _folder_with_a_bad_model(tmp_path)
    at = _app(source_kind="Local checkpoints folder", local_dir=str(folder),
              cmp_models=["binary/custom_cnn", "three_class/custom_cnn", "binary/resnet18"])
    at.switch_page("pages/compare.py").run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    assert sum(" sees " in c.value for c in at.caption) == 2  # both good models' maps are drawn


def test_thresholds_and_errors_skip_a_bad_model(tmp_path, data_dir):
    folder = _folder_with_a_bad_model(tmp_path)
    at = _app(source_kind="Local checkpoints folder", local_dir=str(folder), data_dir=str(data_dir))
    at.switch_page("pages/thresholds.py").run()
    sel = at.selectbox(key="thr_model")
    bad = next(o for o in sel.options if o.startswith("binary · resnet18 · computed"))
    sel.set_value(bad).run()
    assert not at.exception, [e.message for e in at.exception]
    assert any("binary/resnet18 skipped" in e.value for e in at.error)
    sel = at.selectbox(key="thr_model")
    assert bad not in sel.options and sel.value == sel.options[0]  # the page goes on with the best set
    assert 0 <= at.slider(key="threshold").value <= 1

    # Errors on the bundled resnet18's prediction files: the local folder's (bad) resnet18 did not make them, so
    # no CAM is offered from it (a CAM comes only from the predictions' own models)
    at.switch_page("pages/errors.py").run()
    sel = at.selectbox(key="err_model")
    sel.set_value(next(o for o in sel.options if o.startswith("binary · resnet18 · seed"))).run()
    assert not at.exception, [e.message for e in at.exception]
    assert not [t for t in at.toggle if t.key == "err_cam"]  # no CAM offered
    assert len(at.get("image")) >= 1  # the X-rays are still shown


def test_cached_outputs_follow_a_checkpoint_replaced_in_place(tmp_path, normal_image):
    """Probabilities and CAMs are keyed by the checkpoint file's stamp, not only by its name."""
    from pages._shared.models import cam, model_probs

    path = _ours(tmp_path / "checkpoints/binary/custom_cnn.pt")
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


FRAGMENTED = """
import sys
from pages._shared.memory import give_back_freed_memory
def rss():
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith("VmRSS"))) // 1024
keep, big = [], []
for i in range(3000):  # 100 KB blocks (on the heap, under the mmap threshold) pinned by small ones after them
    big.append(bytes(100_000))
    keep.append(bytes(600))
before = rss()
del big
freed = rss()
give_back_freed_memory()
print(before, freed, rss())
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists() or sys.platform != "linux", reason="glibc / procfs only")
def test_freed_heap_memory_goes_back_to_the_system():
    """What a decoded 40-MP upload leaves behind: freed blocks the heap cannot shrink past stay in the process
    until ``malloc_trim`` hands their pages back."""
    out = subprocess.run([sys.executable, "-c", FRAGMENTED], capture_output=True, text=True, cwd=ROOT, check=True)
    before, freed, after = map(int, out.stdout.split())
    assert before > 200 and before - freed < 50  # free() alone kept it all
    assert freed - after > 150, (before, freed, after)


FREEZE = """
import gc, sys
from pages._shared.memory import warm_up
print(warm_up(("pandas",)) is None)  # no running server (a plain import, AppTest): nothing to warm up
thread = warm_up(("pandas",), delay=0, server_only=False)  # a library: ~10^5 objects to scan after every run
thread.join(120)
print(not thread.is_alive(), "pandas" in sys.modules, gc.get_freeze_count(),
      warm_up(server_only=False) is thread)
"""


def test_libraries_are_imported_and_frozen_once_in_the_background():
    """What keeps Streamlit's full collection after each run (runner.postScriptGC) from scanning the libraries:
    imported and frozen once per process, in a thread of its own."""
    out = subprocess.run([sys.executable, "-c", FREEZE], capture_output=True, text=True, cwd=ROOT, check=True)
    outside, done, imported, frozen, same_thread = out.stdout.split()
    assert outside == done == imported == same_thread == "True" and int(frozen) > 50_000


def test_page_runs_and_warm_up_imports_take_turns():
    """An import of the warm-up thread waits for the page runs under way, and a page run for the import."""
    import threading

    from pages._shared.memory import _Gate

    gate, events = _Gate(), []

    def hold(ctx, name, seconds):
        with ctx():
            events.append(f"{name} in")
            time.sleep(seconds)
            events.append(f"{name} out")

    run = threading.Thread(target=hold, args=(gate.run, "run", 0.3))
    run.start()
    time.sleep(0.05)
    imp = threading.Thread(target=hold, args=(gate.importing, "import", 0.3))
    imp.start()
    time.sleep(0.05)
    late = threading.Thread(target=hold, args=(gate.run, "late run", 0))
    late.start()
    for t in (run, imp, late):
        t.join(5)
    assert events == ["run in", "run out", "import in", "import out", "late run in", "late run out"]


def test_sessions_with_uploads_can_be_closed_with_their_browser():
    """pages/_shared/memory.close_with_browser relies on this public Runtime method: a session marked
    non-resumable is shut down (its uploads freed) when its browser disconnects."""
    from streamlit.runtime import Runtime

    assert callable(getattr(Runtime, "mark_session_nonresumable", None))


@pytest.fixture()
def server():
    """``streamlit run app.py`` on a free localhost port (with the repository's .streamlit/config.toml)."""
    with app_server(timeout=120) as (url, _):
        yield url


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Debian's chromium and chromium-driver are not installed")
def test_predict_deep_link_in_chromium(server):
    """``/predict`` opens the Predict page (it used to say "Page not found"); ``/`` goes on to it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chrome(1400, 1400)
    upload_hint = "Upload one or more frontal chest X-rays"
    try:
        for url in (f"{server}/predict", f"{server}/"):
            driver.get(url)
            WebDriverWait(driver, 120).until(
                lambda d: upload_hint in (t := d.find_element(By.TAG_NAME, "body").text) and "Models from" in t)
            assert "Page not found" not in driver.find_element(By.TAG_NAME, "body").text
            assert driver.current_url.rstrip("/").endswith("/predict"), driver.current_url
    finally:
        driver.quit()
