"""Write errors (issue #29, item 8): an output that cannot be written is named before the work, in one line
(exit 2); a cache that cannot be written costs a recomputation, never the result; a disk that fills up after
the work leaves the result in a file that is named."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pandas as pd
import pytest

from pneumo_core.files import ASSETS, writable_file, writable_folder
from pneumo_core.errors import OutputError
from tests.cli_utils import run_cli

CKPT = ASSETS / "models" / "checkpoints" / "binary" / "resnet18.safetensors"


def _one_line(code: int, err: str, *words: str) -> None:
    assert code == 2 and "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and all(w in lines[0] for w in words), err


def _folder(data_dir: Path, root: Path, n: int = 2) -> Path:
    for cls in ("NORMAL", "PNEUMONIA"):
        (root / cls).mkdir(parents=True)
        for f in sorted((data_dir / "test" / cls).glob("*.jpeg"))[:n]:
            shutil.copy(f, root / cls / f.name)
    return root


def test_outputs_are_checked_before_the_work(tmp_path, capsys, normal_image):
    (tmp_path / "afile").write_text("x")
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", CKPT, "--data-dir", tmp_path, "--out", tmp_path)
    _one_line(code, err, str(tmp_path), "is a folder")
    code, _, err = run_cli(capsys, "predict", "--checkpoint", CKPT, normal_image, "--cam", "gradcam",
                        "--out", tmp_path / "afile")
    _one_line(code, err, "afile", "is a file")
    code, _, err = run_cli(capsys, "export", "--checkpoint", CKPT, "--format", "onnx",
                           "--out", tmp_path / "afile" / "m")
    _one_line(code, err, "afile")
    with pytest.raises(OutputError):
        writable_folder(tmp_path / "afile")
    assert writable_file(tmp_path / "new" / "p.csv") == tmp_path / "new" / "p.csv"


def test_an_unwritable_cache_costs_a_recomputation_not_the_result(tmp_path, data_dir):
    from pneumo_core.data.datasets import scan_folder
    from pneumo_core.inference.predictors import Predictor, predict_frame
    from pneumo_core.models.checkpoints import load_checkpoint

    frame = scan_folder(_folder(data_dir, tmp_path / "data"))
    (tmp_path / "afile").write_text("x")  # the cache folder would be under a file: nothing can be written there
    with pytest.warns(RuntimeWarning, match="cache not written"):
        table = predict_frame(Predictor(load_checkpoint(CKPT)), frame, cache_dir=tmp_path / "afile" / "cache")
    assert len(table.frame) == 4 and table.frame["prob_PNEUMONIA"].between(0, 1).all()


def test_a_disk_that_fills_after_the_work_keeps_the_predictions(tmp_path, data_dir, capsys, monkeypatch):
    from pneumo_core.evaluation import predictions

    real = predictions.write_predictions

    def full(table, path):
        if Path(path) == tmp_path / "out.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(table, path)

    monkeypatch.setattr(predictions, "write_predictions", full)
    monkeypatch.setenv("PNEUMO_CACHE", str(tmp_path / "cache"))
    code, _, err = run_cli(capsys, "evaluate", "--checkpoint", CKPT, "--data-dir", _folder(data_dir, tmp_path / "d"),
                        "--out", tmp_path / "out.csv")
    _one_line(code, err, "out.csv could not be written", "No space left")
    rescued = Path(err.split("predictions are in ")[1].strip())
    assert len(pd.read_csv(rescued)) == 4
    rescued.unlink()


def test_inputs_of_one_name_each_get_their_own_output(tmp_path, capsys, normal_image, pneumonia_image):
    """Two uploads or two `predict --cam` inputs of one name were one image (the second replaced the first)."""
    from pneumo_core.files import unique_names

    assert unique_names([("x.png", 1), ("x.png", 2), ("x.png", 3), ("y", 4), ("y", 5)]) == [
        ("x.png", 1), ("x (2).png", 2), ("x (3).png", 3), ("y", 4), ("y (2)", 5)]
    for folder, src in (("a", normal_image), ("b", pneumonia_image)):
        (tmp_path / folder).mkdir()
        shutil.copy(src, tmp_path / folder / "xray.jpeg")
    code, out, err = run_cli(capsys, "predict", "--checkpoint", CKPT, tmp_path / "a" / "xray.jpeg",
                          tmp_path / "b" / "xray.jpeg", "--cam", "gradcam", "--out", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["xray (2)_gradcam.png", "xray_gradcam.png"]
