"""The subcommand registry: each command module registers its commands with :func:`command`."""
from __future__ import annotations

import argparse
import math
from contextlib import contextmanager
from typing import Callable, Iterator

#: name -> (add_arguments, run); run returns the exit code
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def summary(run: Callable) -> str:
    """A command's one-line description: the first sentence of its function's docstring."""
    text = " ".join((run.__doc__ or "").split())
    return text.split(". ")[0].rstrip(".") if text else ""


def command(name: str, add_arguments: Callable[[argparse.ArgumentParser], None]):
    def register(run: Callable[[argparse.Namespace], int]):
        COMMANDS[name] = (add_arguments, run)
        return run
    return register


@contextmanager
def tqdm_progress(desc: str) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` progress callback (what pneumo_core's long work takes) drawn as a tqdm bar."""
    from tqdm import tqdm

    with tqdm(desc=desc, unit="img") as bar:
        def progress(done: int, total: int) -> None:
            bar.total, bar.n = total, done
            bar.refresh()

        yield progress


def int_range(lo: int, hi: int) -> Callable[[str], int]:
    """An argparse type: an integer in lo..hi (argparse then exits 2 with a one-line reason)."""
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{v} is outside {lo}..{hi}")
        return v
    parse.__name__ = "int"
    return parse


def probability(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} is not a probability in [0, 1]")
    return v


def positive_number(text: str) -> float:
    """An argparse type: a finite number above 0 (a learning rate, a temperature)."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number above 0")
    return v
