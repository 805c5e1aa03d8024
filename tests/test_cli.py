"""Command-line arguments that once ended in a traceback after (or before) the work: one line, exit 2."""
from __future__ import annotations

import pytest

from pneumo_core.cli.main import main as cli
from pneumo_core.files import ASSETS


def test_an_unknown_cam_method_is_named_before_any_model_loads(capsys):
    code = cli(["explain-audit", "--checkpoint", "nowhere.pt", "--data-dir", "nowhere", "--method", "foo"])
    err = capsys.readouterr().err
    assert code == 2 and "unknown CAM method 'foo'" in err and "Traceback" not in err


@pytest.mark.parametrize("flag, value, words", [
    ("--lr", "nan", "not a finite number above 0"),
    ("--lr", "-1", "not a finite number above 0"),
    ("--distill-alpha", "2", "not a probability"),
    ("--epochs", "-3", "outside 0..10000"),
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
