"""Running as one of several processes started by ``torchrun``: the process group, who we are, barriers,
shards of a sequence, gathering results.

Outside torchrun (no ``WORLD_SIZE`` in the environment, or 1) nothing is initialised and every helper
answers for a single process: rank 0 of 1, barriers return at once, the shard is the whole sequence.
Every collective waits at most the process group's timeout (``$PNEUMO_DIST_TIMEOUT`` seconds, default
1800), so a rank that died never leaves the others waiting forever.
"""
from __future__ import annotations

import os
from datetime import timedelta
from typing import Any, Sequence, TypeVar

import torch
import torch.distributed as dist

from pneumo_core.errors import PneumoError

T = TypeVar("T")
DEFAULT_TIMEOUT_S = 1800.0


def env_world_size() -> int:
    """The number of processes torchrun started (1 outside torchrun)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def local_rank() -> int:
    """This process's index on its node (torchrun's ``LOCAL_RANK``; picks the GPU)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_distributed() -> bool:
    """True once a process group of more than one process is up."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes files and prints."""
    return rank() == 0


def timeout() -> timedelta:
    try:
        seconds = float(os.environ.get("PNEUMO_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))
    except ValueError:
        raise PneumoError(f"PNEUMO_DIST_TIMEOUT must be a number of seconds, not {os.environ['PNEUMO_DIST_TIMEOUT']!r}")
    return timedelta(seconds=seconds)


def init(device: str = "cpu") -> torch.device | None:
    """Join torchrun's process group when started by torchrun with more than one process (gloo on CPU,
    NCCL on CUDA, where ``LOCAL_RANK`` picks this process's GPU). Returns the process's CUDA device, if
    any; ``None`` (and does nothing) for a single process. Idempotent."""
    if env_world_size() <= 1:
        return None
    if not dist.is_available():
        raise PneumoError("this torch build has no torch.distributed; run without torchrun")
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    gpu = None
    if cuda:
        if not torch.cuda.is_available():
            raise PneumoError("--device cuda asked for, but no CUDA device is available")
        gpu = torch.device("cuda", local_rank())
        torch.cuda.set_device(gpu)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout(),
                                **({"device_id": gpu} if gpu is not None else {}))
    return gpu


def shutdown() -> None:
    """Leave the process group (a no-op outside one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (returns at once for a single process)."""
    if is_distributed():
        dist.barrier()


def shard_bounds(n: int, rank_: int | None = None, world: int | None = None, align: int = 1) -> tuple[int, int]:
    """``[start, stop)`` of this rank's contiguous share of ``n`` items: concatenated in rank order, the
    shares are the whole range in order. With ``align``, shares are cut at multiples of ``align``
    (whole batches, so each item sees the batches a single process would have made)."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    blocks = -(-n // align)
    lo, hi = blocks * r // w, blocks * (r + 1) // w
    return min(lo * align, n), min(hi * align, n)


def shard(seq: Sequence[T], rank_: int | None = None, world: int | None = None, align: int = 1) -> Sequence[T]:
    """This rank's contiguous share of ``seq`` (see :func:`shard_bounds`); works on lists, arrays, frames
    (through ``.iloc``)."""
    lo, hi = shard_bounds(len(seq), rank_, world, align)
    return seq.iloc[lo:hi] if hasattr(seq, "iloc") else seq[lo:hi]


def strided_padded(indices: Sequence[T], rank_: int | None = None, world: int | None = None) -> list[T]:
    """``DistributedSampler``'s share of an already shuffled index list: padded with its own head to a
    multiple of the world size, then every ``world``-th item from ``rank``; every rank gets as many."""
    r = rank() if rank_ is None else rank_
    w = world_size() if world is None else world
    items = list(indices)
    total = -(-len(items) // w) * w
    while len(items) < total:
        items += items[: total - len(items)]
    return items[r:total:w]


def all_gather(obj: T) -> list[T]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` for a single process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def gather(obj: T, dst: int = 0) -> list[T] | None:
    """Every rank's ``obj`` in rank order on rank ``dst``; ``None`` on the others."""
    if not is_distributed():
        return [obj]
    out: list[Any] | None = [None] * world_size() if rank() == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def broadcast(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` on every rank (picklable)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """Element-wise sums over ranks of a few numbers."""
    if not is_distributed():
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_module(module: torch.nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers onto every rank, in place."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            flat = t.data.contiguous()  # channels_last weights travel as a plain copy
            dist.broadcast(flat, src=src)
            if flat.data_ptr() != t.data.data_ptr():
                t.data.copy_(flat)
