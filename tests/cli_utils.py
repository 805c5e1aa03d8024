"""The command line in this process, and what its errors and JSON must look like."""
from __future__ import annotations

import contextlib
import io
import json
import subprocess

from pneumo_core.cli.main import main as cli


def _exit_code(args) -> int:
    """The command line run in this process; its exit code (argparse's SystemExit gives its code)."""
    try:
        return cli([str(a) for a in args])
    except SystemExit as exc:  # argparse
        return exc.code


def run_cli(capsys, *args) -> tuple[int, str, str]:
    """The command line in this process: (exit code, stdout, stderr)."""
    code = _exit_code(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def cli_result(*args) -> subprocess.CompletedProcess:
    """``python -m pneumo_core ARGS`` in this process, as ``subprocess.run(..., capture_output=True, text=True)``
    returns it (exit code, stdout, stderr); seconds cheaper than a fresh interpreter importing torch."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = _exit_code(args)
    return subprocess.CompletedProcess(["python", "-m", "pneumo_core", *map(str, args)], code, out.getvalue(),
                                       err.getvalue())


def one_line_error(code: int, err: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert [ln for ln in err.strip().splitlines() if "error" in ln.lower()], err


def strict_json(text: str):
    def no_constant(name):
        raise ValueError(f"invalid JSON constant {name}")
    return json.loads(text, parse_constant=no_constant)
