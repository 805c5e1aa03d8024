"""The subcommand registry: each command module registers its commands with :func:`command`."""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from typing import Callable, Iterator

#: name -> (add_arguments, run); run returns the exit code
COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


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
