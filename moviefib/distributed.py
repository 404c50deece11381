"""Where this process stands in a ``torchrun`` launch: the one reader of its environment variables.

torchrun sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` for each process it starts; a plain ``python``
or ``moviefib`` run sets none of them and is a world of one. Training splits batches over the ranks,
extraction splits clips over them (one shard each), and only rank 0 reports.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


class LaunchError(ValueError):
    """torchrun's variables are set but do not make sense (not integers, a rank outside the world)."""


@dataclass(frozen=True)
class DistributedEnv:
    """This process's place in the launch.

    Attributes:
        rank: 0 .. world - 1 over all nodes.
        world: number of processes (1 outside torchrun).
        local_rank: rank on this node; the CUDA device index of this process.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes reports and checkpoints (rank 0)."""
        return self.rank == 0


def _integer(environ, name: str, default: int) -> int:
    text = environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise LaunchError(f"{name}={text!r}: expected an integer (set by torchrun)") from None


def distributed_env(environ=None) -> DistributedEnv:
    """The launch this process is part of, read from ``environ`` (default ``os.environ``).

    ``WORLD_SIZE`` unset or 1 is a single process, whatever ``RANK`` says. Raises :class:`LaunchError`
    when the variables are not integers, the world is empty or the rank lies outside it.
    """
    environ = os.environ if environ is None else environ
    world = _integer(environ, "WORLD_SIZE", 1)
    if world < 1:
        raise LaunchError(f"WORLD_SIZE={world}: expected at least 1 process (set by torchrun)")
    if world == 1:
        return DistributedEnv()
    rank, local = _integer(environ, "RANK", 0), _integer(environ, "LOCAL_RANK", 0)
    if not 0 <= rank < world or local < 0:
        raise LaunchError(f"RANK={rank}, LOCAL_RANK={local} with WORLD_SIZE={world}: "
                          f"expected 0 <= RANK < WORLD_SIZE and LOCAL_RANK >= 0")
    return DistributedEnv(rank=rank, world=world, local_rank=local)
