"""One key for a model of a zoo, and every name it goes by.

A :class:`ModelKey` is a task, an architecture and a seed; ``arch`` may also be :data:`ENSEMBLE` or
:data:`HIERARCHICAL` (models that combine others) or an architecture's seed ensemble (``resnet18_seeds``,
:func:`seed_ensemble_key`), and ``seed`` is None for the architecture's best checkpoint or a combined model.
Its names::

    source key   binary/resnet18             binary/resnet18/seed2
    label        binary · resnet18           binary · resnet18 · seed 2
    file stem    resnet18                    resnet18_seed2
    checkpoint   checkpoints/binary/resnet18.pt
    predictions  predictions/binary/resnet18_seed2_{val,test}.csv
    run log      runs/binary/resnet18_seed2/

Our layout names every folder after its task (``checkpoints/bacteria_virus/densenet121.pt``). The published
Hub layout keeps BACTERIA-vs-VIRUS models in ``checkpoints/hierarchical/<arch>_bacteria_virus[_seed<n>].pt``;
those names still read, as do prediction files and run logs named that way.

Pure string work: no torch, no file system.
"""
from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import NamedTuple

from pneumo_core.data.tasks import TASKS
from pneumo_core.errors import ModelError

ENSEMBLE = "ensemble"
HIERARCHICAL = "hierarchical"
COMBINED = (ENSEMBLE, HIERARCHICAL)
#: an architecture's seed ensemble is the architecture's name with this suffix (``efficientnet_lite0_seeds``)
SEEDS_SUFFIX = "_seeds"
SEED_ENSEMBLE_WORDS = "seed ensemble"
SPLITS = ("val", "test")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".safetensors")

#: the published layout's folder and name part for BACTERIA-vs-VIRUS models
_HUB_BV_FOLDER, _HUB_BV_INFIX = "hierarchical", "_bacteria_virus"
_STEM = re.compile(r"^(?P<arch>.+?)(?:_bacteria_virus)?(?:_seed(?P<seed>\d+))?$")
_PREDICTION = re.compile(r"^(?P<stem>.+?)_(?P<split>val|test)$")
_SEED = re.compile(r"(?:seed)?\s*(\d+)")


class ModelKey(NamedTuple):
    """A model of a zoo: ``(task, arch, seed)``; unpacks like the tuple it is."""

    task: str
    arch: str
    seed: int | None = None

    @property
    def combined(self) -> bool:
        """An ensemble (of architectures or of one's seeds) or the hierarchical model: no checkpoint of its own,
        no single heatmap."""
        return self.arch in COMBINED or self.ensembled_arch is not None

    @property
    def ensembled_arch(self) -> str | None:
        """The architecture a seed ensemble's key averages the seeds of; None for any other key."""
        return self.arch[:-len(SEEDS_SUFFIX)] if self.arch.endswith(SEEDS_SUFFIX) and self.seed is None else None

    @property
    def best(self) -> ModelKey:
        """The key without its seed: the architecture's best checkpoint."""
        return ModelKey(self.task, self.arch)

    @property
    def stem(self) -> str:
        return self.arch + self._seed_part

    @property
    def _seed_part(self) -> str:
        return "" if self.seed is None else f"_seed{self.seed}"

    @property
    def _hub_stem(self) -> str:
        """The published layout's stem of a BACTERIA-vs-VIRUS model: ``densenet121_bacteria_virus_seed0``."""
        return f"{self.arch}{_HUB_BV_INFIX}{self._seed_part}"

    @property
    def source_key(self) -> str:
        """``task/arch`` or ``task/arch/seedN``: how a checkpoint source names it."""
        return f"{self.task}/{self.arch}" + ("" if self.seed is None else f"/seed{self.seed}")

    @property
    def label(self) -> str:
        """``task · arch``, ``task · arch · seed N`` or ``task · arch · seed ensemble``: how the pages name it."""
        if self.ensembled_arch is not None:
            return f"{self.task} · {self.ensembled_arch} · {SEED_ENSEMBLE_WORDS}"
        return f"{self.task} · {self.arch}" + ("" if self.seed is None else f" · seed {self.seed}")

    def checkpoint_relpath(self, suffix: str = ".pt") -> str:
        return f"checkpoints/{self.task}/{self.stem}{suffix}"

    def checkpoint_relpaths(self, suffix: str = ".pt") -> tuple[str, ...]:
        """Where a checkpoint of this key may lie: our layout first, then the published Hub layout's."""
        ours = self.checkpoint_relpath(suffix)
        if self.task != "bacteria_virus":
            return (ours,)
        return ours, f"checkpoints/{_HUB_BV_FOLDER}/{self._hub_stem}{suffix}"

    def prediction_file(self, split: str) -> str:
        return f"predictions/{self.task}/{self.stem}_{split}.csv"

    def run_dirs(self) -> tuple[str, ...]:
        """The run log folder: our name first, then the published name of a BACTERIA-vs-VIRUS run."""
        ours = f"runs/{self.task}/{self.stem}"
        if self.task != "bacteria_virus":
            return (ours,)
        return ours, f"runs/{self.task}/{self._hub_stem}"

    @classmethod
    def from_stem(cls, task: str, stem: str) -> ModelKey:
        """``resnet18_seed2`` of ``binary`` -> ``(binary, resnet18, 2)``; ``densenet121_bacteria_virus_seed0``
        reads as ``densenet121``; a stem without a seed has seed None."""
        m = _STEM.match(stem)
        if m is None:
            raise ModelError(f"{stem!r} is not a model file name (<arch>[_seed<n>])")
        return cls(task, m.group("arch"), None if m.group("seed") is None else int(m.group("seed")))

    @classmethod
    def parse(cls, text: str) -> ModelKey:
        """A source key (``binary/resnet18/seed2``) or a page's label (``binary · resnet18 · seed 2``).
        A :class:`ModelError` naming the text for anything else."""
        parts = [p.strip() for p in re.split(r"[/·]", str(text).strip()) if p.strip()]
        if len(parts) == 3 and parts[2] == SEED_ENSEMBLE_WORDS:  # a page's name of a seed ensemble
            parts = [parts[0], parts[1] + SEEDS_SUFFIX]
        seed = _SEED.fullmatch(parts[2]) if len(parts) == 3 else None
        if len(parts) not in (2, 3) or parts[0] not in TASKS or (len(parts) == 3 and seed is None):
            raise ModelError(f"{str(text)[:80]!r} is not a model key: expected task/arch or task/arch/seedN, "
                             f"with task one of {', '.join(TASKS)}")
        return cls(parts[0], parts[1], None if seed is None else int(seed.group(1)))


def seed_ensemble_key(task: str, arch: str) -> ModelKey:
    """The key of ``arch``'s seed ensemble (the mean of its seeds' probabilities): ``task/<arch>_seeds``."""
    return ModelKey(task, arch + SEEDS_SUFFIX)


def task_of_folder(folder: str) -> str | None:
    """The task whose models a folder of either layout holds (``hierarchical`` -> ``bacteria_virus``)."""
    folder = "bacteria_virus" if folder == _HUB_BV_FOLDER else folder
    return folder if folder in TASKS else None


def names_bacteria_virus(stem: str) -> bool:
    """Whether a file name is the published layout's name of a BACTERIA-vs-VIRUS model."""
    return _HUB_BV_INFIX in stem


def parse_checkpoint_relpath(relpath: str) -> ModelKey | None:
    """``.../checkpoints/<task>/<stem>.<ext>`` (ours or the published layout) -> its key; None for a file
    outside the layout. The architecture is not checked here (see ``sources.parse_relpath``)."""
    p = PurePosixPath(str(relpath).replace("\\", "/"))
    if len(p.parts) < 3 or p.parts[-3] != "checkpoints" or p.suffix not in CHECKPOINT_SUFFIXES:
        return None
    task = "bacteria_virus" if names_bacteria_virus(p.stem) else task_of_folder(p.parts[-2])
    return None if task is None else ModelKey.from_stem(task, p.stem)


def parse_prediction_file(path: str) -> tuple[ModelKey, str] | None:
    """``predictions/<task>/<stem>_{val,test}.csv`` -> (key, split); None for another file."""
    p = PurePosixPath(str(path).replace("\\", "/"))
    m = _PREDICTION.match(p.stem)
    if p.suffix != ".csv" or m is None or len(p.parts) < 2:
        return None
    return ModelKey.from_stem(p.parts[-2], m.group("stem")), m.group("split")
