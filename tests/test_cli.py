"""Command-line arguments that once ended in a traceback after (or before) the work: one line, exit 2."""
from __future__ import annotations

import pytest
from PIL import Image

from pneumo_core.cli.main import main as cli
from pneumo_core.data.images import load_grayscale
from pneumo_core.errors import NonFiniteOutputError
from pneumo_core.files import ASSETS
from pneumo_core.models.checkpoints import load_checkpoint
from tests.checkpoint_utils import tiny_checkpoint
from tests.cli_utils import one_line_error, run_cli, strict_json


def test_an_unknown_cam_method_is_named_before_any_model_loads(capsys):
    code = cli(["explain-audit", "--checkpoint", "nowhere.pt", "--data-dir", "nowhere", "--method", "foo"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown CAM method 'foo'" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value, words", [
    ("--lr", "nan", "not a finite number above 0"),
    ("--lr", "-1", "not a finite number above 0"),
    ("--distill-alpha", "2", "not a probability"),
    ("--epochs", "-3", "not a whole number in 0..10000"),
    ("--image-size", "abc", "'abc' is not a whole number"),
])
def test_train_refuses_impossible_numbers(capsys, flag, value, words):
    import train

    with pytest.raises(SystemExit) as exc:
        train.parse_args(["--data-dir", str(ASSETS), flag, value])
    assert exc.value.code == 2 and words in capsys.readouterr().err


def test_one_version_number():
    import tomllib

    import pneumo_core

    project = tomllib.loads((ASSETS.parent / "pyproject.toml").read_text())["project"]
    assert pneumo_core.__version__ == project["version"]


def test_help_lists_every_command_with_its_description(capsys):
    from pneumo_core.cli.registry import COMMANDS, summary

    with pytest.raises(SystemExit):
        cli(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for name, (_, run) in COMMANDS.items():
        assert summary(run), f"{name} has no docstring"
        assert f"{name} {' '.join(summary(run).split()[:4])}" in out, name


def test_nan_weights_are_an_error_for_each_image_not_a_verdict(tmp_path, capsys, normal_image, pneumonia_image):
    from pneumo_core.inference.predictors import Predictor

    path = tiny_checkpoint(tmp_path / "custom_cnn.pt", nan=True)
    p = Predictor(load_checkpoint(path))
    with pytest.raises(NonFiniteOutputError, match="custom_cnn.*NaN"):
        p.predict_grays([load_grayscale(normal_image)])
    code, out, err = run_cli(capsys, "predict", "--checkpoint", path, normal_image, pneumonia_image, "--json")
    assert code == 1 and "Traceback" not in err
    results = strict_json(out)["results"]
    assert all("NaN" in r["error"] and "probabilities" not in r for r in results)


def test_cam_method_is_checked_before_the_model_loads(tmp_path, capsys, normal_image):
    code, _, err = run_cli(capsys, "predict", "--checkpoint", tmp_path / "missing.pt", normal_image, "--cam", "foo")
    one_line_error(code, err)
    assert "unknown CAM method 'foo'" in err  # not "checkpoint file not found": nothing was loaded


def test_predict_json_is_valid_and_names_bad_images(tmp_path, capsys, normal_image):
    path = tiny_checkpoint(tmp_path / "custom_cnn.pt")
    Image.new("L", (1, 1)).save(tmp_path / "dot.png")
    code, out, err = run_cli(capsys, "predict", "--checkpoint", path, normal_image, tmp_path / "dot.png", "--json")
    assert code == 1, err
    good, bad = strict_json(out)["results"]
    assert sum(good["probabilities"].values()) == pytest.approx(1.0) and "too small" in bad["error"]
