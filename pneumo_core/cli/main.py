"""``python -m pneumo_core <command>``: the parser over every command module's subcommands.

Errors that pneumo_core raises on purpose print one line and exit 2; they never show a traceback.
"""
from __future__ import annotations

import argparse
import sys

from pneumo_core.cli import adapt, data, explain, inference, report, serve, shift, zoo  # noqa: F401 - they register commands
from pneumo_core.cli.registry import COMMANDS, summary
from pneumo_core.errors import PneumoError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pneumo_core",
                                     description="Pneumo Explorer command line (not for clinical use).")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_arguments, run) in COMMANDS.items():
        line = summary(run)  # argparse %-formats a help line, not a description without %(prog)
        add_arguments(sub.add_parser(name, help=line.replace("%", "%%"), description=line + "."))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:  # a last line of defence: every input is meant to be bounded before this
        print("error: out of memory; the input is larger than this machine can handle", file=sys.stderr)
        return 2
    except RecursionError:
        print("error: the input is nested too deeply to read", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed early
        sys.stderr.close()
        return 0
    except OSError as exc:  # a file the command writes or reads failed at the system level (full disk, ...)
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
