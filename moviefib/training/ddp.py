"""Data-parallel training under ``torchrun``: the set-up in one place.

Where this process stands comes from :func:`moviefib.distributed.distributed_env` (the one reader of
torchrun's variables). :func:`process_group` picks the process's device and joins (and leaves) the
process group; :func:`parallel_model` wraps the model in ``DistributedDataParallel``;
:func:`per_rank_batch` splits the global batch; :func:`sum_over_processes` adds up per-process counts.
Outside torchrun (a world of one) each is a no-op.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..devices import resolve_device
from ..distributed import DistributedEnv
from .config import ConfigError


def per_rank_batch(batch_size: int, world: int) -> int:
    """Under torchrun ``train.batch_size`` is the global batch, split evenly over the processes, so a
    run's optimisation does not depend on how many processes share it."""
    if batch_size % world:
        raise ConfigError(f"train.batch_size = {batch_size} is split over {world} processes: "
                          f"give a multiple of {world}")
    return batch_size // world


@contextlib.contextmanager
def process_group(env: DistributedEnv, device_name: str) -> Iterator[torch.device]:
    """The device this process trains on, inside torchrun's process group when there is one: CUDA
    device ``LOCAL_RANK`` over NCCL, or the CPU over gloo. The group is left at the end, failed or not."""
    device = resolve_device(device_name)
    if not env.distributed:
        yield device
        return
    import torch.distributed as dist

    if device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def parallel_model(model: torch.nn.Module, env: DistributedEnv, device: torch.device) -> torch.nn.Module:
    """What the training step calls: ``model`` itself, or under torchrun its DDP wrapper (which averages
    gradients over the processes)."""
    if not env.distributed:
        return model
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda"
                                                     else None)


def sum_over_processes(values: list[float], env: DistributedEnv, device: torch.device) -> list[float]:
    """``values`` summed over every process (as float64), or as they are alone."""
    if not env.distributed:
        return values
    import torch.distributed as dist

    totals = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(totals)
    return totals.tolist()
