"""A training run killed mid-way, as ``kill -9`` would: raised from the log callback after an epoch."""
from __future__ import annotations

import pytest


class Stop(Exception):
    pass


def interrupt_after_epoch(train, cfg, epoch: int) -> None:
    """Run ``train(cfg)`` until it logs the end of ``epoch`` and stop it there (its resume state is kept)."""
    marker = f"epoch {epoch}/{cfg.epochs}:"

    def die(msg: str) -> None:
        if marker in msg:
            raise Stop

    with pytest.raises(Stop):
        train(cfg, log=die)
