"""What one training run is asked to do (:class:`TrainConfig`), where its files go (:class:`RunPaths`) and
where it runs (:class:`Runtime`).

Each field of :class:`TrainConfig` states its default, its help line and the values it takes; ``train.py``
builds its flags from them and a config checks itself when made, from the command line, a study spec or Python.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from pneumo_core import distributed
from pneumo_core.data.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from pneumo_core.data.tasks import TASKS, Task, get_task
from pneumo_core.device import cpu_supports_bf16, pick_device
from pneumo_core.errors import PneumoError
from pneumo_core.models.checkpoints import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from pneumo_core.models.networks import ARCHS, DEFAULT_ARCH, get_arch
from pneumo_core.models.sources import checkpoint_relpath

#: a value check and what it asks for, e.g. ``(lambda v: v > 0, "a number above 0")``
Check = tuple[Callable[[Any], bool], str]


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def whole(lo: int, hi: int) -> Check:
    return (lambda v: isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi,
            f"a whole number in {lo}..{hi}")


POSITIVE: Check = (lambda v: _number(v) and v > 0, "a finite number above 0")
PROBABILITY: Check = (lambda v: _number(v) and 0 <= v <= 1, "a probability in [0, 1]")


def option(default: Any, help: str, *, check: Check | None = None, choices: Sequence[str] | None = None,
           cli: bool = True, **argparse_kw: Any) -> Any:
    """A :class:`TrainConfig` field: its default, its help line, the values it takes (checked when a config is
    made); ``cli=False`` keeps it off ``train.py``'s flags; ``argparse_kw`` (``nargs``, ``metavar``) say how
    the flag is spelled."""
    meta = {"help": help, "check": check, "choices": None if choices is None else list(choices), "cli": cli,
            "argparse": argparse_kw}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """One (task, architecture, seed) run: the published recipe's knobs."""

    task: str = option("binary", "what the model tells apart", choices=TASKS)
    arch: str = option(DEFAULT_ARCH, "the architecture", choices=ARCHS)
    init: str | None = option(None, "imagenet | scratch | PATH (default: the architecture's: imagenet where "
                                    "its weights ship, else scratch)")
    seed: int = option(0, "seeds; train.py trains each in turn", check=whole(0, 2**32 - 1), nargs="+")
    data_dir: str = option("../shared/data/chest_xray", "the Kermany chest_xray folder")
    out: str = option("checkpoints", "writes OUT/checkpoints/<task>/<arch>_seed<n>.pt, OUT/runs/, OUT/predictions/")
    image_size: int = option(224, "input side in pixels", check=whole(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE))
    epochs: int = option(5, "fine-tuning epochs", check=whole(0, 10_000))
    head_epochs: int = option(0, "head-only epochs on the frozen backbone first", check=whole(0, 10_000))
    patience: int = option(3, "early stopping: epochs without a better validation score", check=whole(0, 10_000))
    lr: float = option(1e-4, "fine-tuning learning rate (Adam)", check=POSITIVE)
    head_lr: float = option(1e-3, "head-only learning rate", check=POSITIVE, cli=False)
    batch_size: int = option(32, "images per step (per process under torchrun)", check=whole(1, 4096))
    device: str = option("auto", "where to train", choices=("auto", "cpu", "cuda"))
    select: str = option("auto", "the validation score that picks the epoch (auto: val_loss for two classes, "
                                 "macro_f1 for more)", choices=("auto", "val_loss", "macro_f1", "auroc"))
    augment: bool = option(True, "small rotation/scale/shift and brightness/contrast changes of training images")
    hflip: bool = option(False, "random horizontal flips (off: left/right matters)")
    freeze_fraction: float = option(0.0, "share of backbone stages kept frozen during fine-tuning",
                                    check=PROBABILITY)
    val_fraction: float = option(0.12, "share of training patients held out for validation", check=PROBABILITY,
                                 cli=False)
    limit: int | None = option(None, "at most this many images per split (quick runs)", check=whole(1, 10_000_000))
    bf16: str = option("auto", "bf16 autocast (auto: on CUDA and on CPUs with AVX-512 BF16)",
                       choices=("auto", "on", "off"), cli=False)
    cache_dir: str | None = option(None, "where decoded image arrays are cached", cli=False)
    sync_bn: bool = option(False, "under torchrun on GPUs: SyncBatchNorm (batch statistics over all processes)")
    lr_scaling: str = option("none", "under torchrun: linear multiplies --lr by the number of processes (the "
                                     "effective batch is --batch-size x processes)", choices=("none", "linear"))
    teacher: tuple[str, ...] = option((), "distillation: prediction files of the training split (python -m "
                                          "pneumo_core evaluate --split train), e.g. one per EfficientNet-Lite0 "
                                          "seed; their mean probabilities are soft targets beside the labels (in "
                                          "fine-tuning; head-only epochs learn from the labels alone)",
                                      nargs="+", metavar="PRED_FILE")
    distill_alpha: float = option(0.5, "weight of the teacher's soft targets (0..1)", check=PROBABILITY)
    extra: dict = option({}, "free-form notes kept with the run's config", cli=False)

    def __post_init__(self) -> None:
        self.teacher = tuple(self.teacher)
        if self.init is None and self.arch in ARCHS:
            self.init = get_arch(self.arch).default_init
        for f in fields(self):
            value, choices, check = getattr(self, f.name), f.metadata["choices"], f.metadata["check"]
            if choices is not None and value not in choices:
                raise PneumoError(f"{f.name} must be one of {', '.join(choices)}, not {value!r}")
            if check is not None and value is not None and not check[0](value):
                raise PneumoError(f"{f.name} must be {check[1]}, not {value!r}")

    @property
    def stem(self) -> str:
        return Path(checkpoint_relpath(self.task, self.arch, self.seed)).stem

    @property
    def selection(self) -> str:
        if self.select != "auto":
            return self.select
        return "val_loss" if get_task(self.task).is_binary else "macro_f1"


@dataclass(frozen=True)
class RunPaths:
    """A run's files under ``cfg.out``: the Hub layout's checkpoint, ``runs/`` and ``predictions/``."""

    checkpoint: Path
    run_dir: Path
    last: Path  # the resume state, written after each fine-tuning epoch, gone once the run is done
    history: Path
    metrics: Path
    pred_val: Path
    pred_test: Path

    @classmethod
    def of(cls, cfg: TrainConfig) -> "RunPaths":
        out = Path(cfg.out)
        run_dir = out / "runs" / cfg.task / cfg.stem
        return cls(out / checkpoint_relpath(cfg.task, cfg.arch, cfg.seed), run_dir, run_dir / "last.pt",
                   run_dir / "history.json", run_dir / "metrics.json",
                   out / "predictions" / cfg.task / f"{cfg.stem}_val.csv",
                   out / "predictions" / cfg.task / f"{cfg.stem}_test.csv")


def _quiet(msg: str) -> None:
    pass


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes: device, precision, memory format, processes; the log (rank 0's only)."""

    task: Task
    device: torch.device
    bf16: bool
    channels_last: bool
    prep: Preprocessing
    log: Callable[[str], None]
    started: float
    world: int = 1
    rank: int = 0
    lr: float = 0.0  # the fine-tuning learning rate used (cfg.lr, times the world size with linear scaling)

    @classmethod
    def start(cls, cfg: TrainConfig, log: Callable[[str], None] = print) -> "Runtime":
        """Join torchrun's process group (if any) and pick device and precision."""
        started = time.time()
        distributed.init(cfg.device)
        world, rank = distributed.world_size(), distributed.rank()
        device = pick_device(cfg.device)
        if world > 1 and device.type == "cuda":
            device = torch.device("cuda", distributed.local_rank())
        if world > 1 and cfg.sync_bn and device.type != "cuda":
            raise PneumoError("--sync-bn needs CUDA: torch's SyncBatchNorm does not run on CPU")
        bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and (device.type == "cuda" or cpu_supports_bf16()))
        channels_last = device.type == "cuda" or get_arch(cfg.arch).channels_last
        lr = cfg.lr * world if cfg.lr_scaling == "linear" else cfg.lr
        rt = cls(get_task(cfg.task), device, bf16, channels_last,
                 Preprocessing(cfg.image_size, 3, IMAGENET_MEAN, IMAGENET_STD), log if rank == 0 else _quiet,
                 started, world, rank, lr)
        if world > 1:
            rt.log(f"{cfg.stem}: {world} processes ({device.type}), batch {cfg.batch_size} per process = "
                   f"{cfg.batch_size * world} per step, lr {lr:g} ({cfg.lr_scaling} scaling)")
        return rt

    @property
    def quiet(self) -> bool:
        """No progress bars: not the process that logs."""
        return self.rank != 0
