#!/usr/bin/env python
"""Train the model zoo locally (logic in pneumo_core.training). Not for clinical use.

Examples:
    python train.py --task binary --arch efficientnet_lite0 --seed 0 1 2
    python train.py --zoo --out .            # the demo zoo, resumable: run it again to continue
    torchrun --nproc-per-node 2 train.py --task binary --arch resnet18   # DistributedDataParallel
"""
from __future__ import annotations

import argparse
import sys
import typing
from dataclasses import MISSING, Field, fields
from typing import Any, Callable

from pneumo_core import distributed
from pneumo_core.errors import PneumoError
from pneumo_core.training.loop import TrainConfig, select_best_seed, train
from pneumo_core.training.study import DEMO_ZOO, load_study, plan as study_plan
from pneumo_core.training.zoo import export_best


def _kind(hint: Any) -> type:
    """The type one value of a field is read as: ``int`` for ``int | None``, ``str`` for ``tuple[str, ...]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None) and a is not Ellipsis]
    return args[0] if args else hint


def _reader(f: Field, kind: type) -> Callable[[str], Any]:
    """An argparse type: ``kind(text)`` passing the field's check (argparse then exits 2 with one line)."""
    check = f.metadata["check"]

    def read(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            what = {int: "a whole number", float: "a number"}.get(kind, kind.__name__)
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if check is not None and not check[0](v):
            raise argparse.ArgumentTypeError(f"{text} is not {check[1]}")
        return v

    read.__name__ = kind.__name__
    return read


def add_config_arguments(p: argparse.ArgumentParser, config: type = TrainConfig) -> None:
    """A flag per field of the ``config`` dataclass that does not say ``cli=False``: ``--image-size`` for
    ``image_size``, with the field's default, help line, choices and check; a bool field is a switch
    (``--no-augment`` where it defaults to True)."""
    hints = typing.get_type_hints(config)
    for f in fields(config):
        meta = f.metadata
        if not meta.get("cli", True):
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        if hints[f.name] is bool:
            p.add_argument(f"--no-{flag[2:]}" if default else flag, dest=f.name,
                           action="store_false" if default else "store_true",
                           help=f"no {meta['help']}" if default else meta["help"])
            continue
        kw = dict(meta["argparse"])
        several = "nargs" in kw or typing.get_origin(hints[f.name]) is tuple
        if several:
            kw.setdefault("nargs", "+")
            default = list(default) if isinstance(default, tuple) else [default]
        shown = "" if default in (None, []) or "default" in meta["help"] else " (default: %(default)s)"
        p.add_argument(flag, type=_reader(f, _kind(hints[f.name])), default=default, choices=meta["choices"],
                       help=meta["help"] + shown, **kw)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue interrupted runs; skip finished ones")
    p.add_argument("--zoo", action="store_true", help="train the whole demo zoo (implies --resume)")
    p.add_argument("--bundle", default=None, metavar="DIR",
                   help="after training, export each best seed as fp16 safetensors into DIR (e.g. assets/models)")
    return p.parse_args(argv)


def _runs(flags: dict, entry: dict) -> list[TrainConfig]:
    """The configs of one plan entry, one per seed: its fields over the command line's."""
    entry = dict(entry)
    return [TrainConfig(**{**flags, **entry, "seed": seed}) for seed in entry.pop("seeds")]


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.zoo and a.teacher:
        print("error: --teacher distils one task and architecture, not the whole --zoo", file=sys.stderr)
        return 2
    flags = {f.name: getattr(a, f.name) for f in fields(TrainConfig) if hasattr(a, f.name) and f.name != "seed"}
    try:
        if a.zoo:
            zoo = study_plan(load_study(DEMO_ZOO))  # experiments/demo_zoo/study.toml
            # seed 0 of every model first, so a partial run already covers every architecture
            plan = ([dict(e, seeds=e["seeds"][:1]) for e in zoo]
                    + [dict(e, seeds=e["seeds"]) for e in zoo if len(e["seeds"]) > 1])
        else:
            plan = [dict(seeds=a.seed)]
        runs = [_runs(flags, entry) for entry in plan]  # every config checked before the first run
        distributed.init(a.device)  # under torchrun (more than one process): join its process group
        for configs in runs:
            for cfg in configs:
                train(cfg, resume=a.resume or a.zoo)
            if distributed.is_main():
                task, arch = configs[0].task, configs[0].arch
                best = select_best_seed(a.out, task, arch)
                if best is not None:
                    print(f"best seed -> {best}")
                    if a.bundle:
                        print(f"bundled -> {export_best(a.out, task, arch, a.bundle)}")
            distributed.barrier()
    except PneumoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        distributed.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
