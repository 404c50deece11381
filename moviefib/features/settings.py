"""How an extraction runs: one record, :class:`ExtractSettings`, whose open defaults the library fills in.

The settings say how the work is done (device, batches, workers, decoder, shard, precision, resume),
not what is extracted (the extractor, its sampling and preset). Fields left None are decided by
:meth:`ExtractSettings.resolved` for the device, the launch and the extractor, the same way for the
command line, the demo and a script:

* ``device="cuda"`` under ``torchrun``: ``cuda:LOCAL_RANK``; ``shard`` under ``torchrun``:
  ``(RANK, WORLD_SIZE)`` (:func:`moviefib.distributed.distributed_env`), so that every process writes
  its own shard instead of waiting on the others' output lock;
* ``batch_size``: 4 steps for a 2D model and 2 for a 3D one on the CPU, where small batches run faster,
  256 and 32 on a GPU;
* ``num_workers``: one decode worker per core but one on the CPU (the model needs a core), one per core
  on a GPU;
* ``main_threads``: 2 torch threads on CUDA, where this process only moves batches and more threads
  compete with the decode workers; unchanged on the CPU, where the model runs on them;
* ``normalise_on_device``: on CUDA when the extractor's preprocess has a uint8 half (its workers then
  ship a quarter of the bytes).

Torch is not imported here, except to ask for its thread count on CUDA.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from ..devices import MAX_DEVICE_INDEX, device_problem
from ..integrity import DurationTolerance
from ..video import BACKENDS

# Torch CPU threads of the main process on CUDA: it only moves batches, normalises on the GPU and
# gathers features, and every further thread competes with the decode workers for the cores.
_CUDA_MAIN_THREADS = 2
_DEVICE_RE = re.compile(r"cpu|cuda(:[0-9]+)?")
# Steps per forward pass (CPU, GPU) of a 2D model and of a 3D one.
_BATCH_2D, _BATCH_3D = (4, 256), (2, 32)


class SettingsError(ValueError):
    """A setting with a value it cannot take; ``field`` names it, ``value`` is what was given and
    ``problem`` says why, so that a command can name its own flag."""

    def __init__(self, field: str, value, problem: str):
        super().__init__(f"{field}={value!r}: {problem}")
        self.field, self.value, self.problem = field, value, problem


@dataclass(frozen=True)
class ExtractSettings:
    """How one extraction runs (see the module documentation for the defaults of the None fields).

    Attributes:
        device: ``cpu``, ``cuda`` or ``cuda:N``; the extractor must already be on it.
        batch_size: steps per forward pass (>= 1); None: per extractor kind and device.
        num_workers: decode worker processes (>= 0; 0 decodes in this process); None: per device.
        backend: the decoder, ``pyav`` or ``torchcodec``.
        short_side: scale frames in the decoder to this short side (>= 1); None: no scaling there.
        decode_threads: FFmpeg threads per worker (>= 0; 0: FFmpeg decides).
        shard: ``(i, n)``, 0 <= i < n: process every n-th clip, from the i-th; None: from torchrun.
        amp: float16 autocast on CUDA (ignored on the CPU).
        stage_seconds: how often finished clips are staged to disk (>= 0 seconds).
        overwrite: discard an existing store or staging folder made with other settings.
        normalise_on_device: workers ship uint8, this process normalises on the device; None: on CUDA
            when the preprocess has the two halves. The features are the same either way.
        main_threads: torch CPU threads of this process while batches run (>= 1, restored afterwards);
            None: decided per device (None after :meth:`resolved`: left as they are).
        tolerance: how much shorter than expected a decoded clip may be.
        allow_partial: keep clips clearly short, marked partial in the store, instead of failing them.

    Raises :class:`SettingsError` (a ValueError) on a value a field cannot take.
    """

    device: str = "cpu"
    batch_size: int | None = None
    num_workers: int | None = None
    backend: str = "pyav"
    short_side: int | None = None
    decode_threads: int = 1
    shard: tuple[int, int] | None = None
    amp: bool = True
    stage_seconds: float = 10.0
    overwrite: bool = False
    normalise_on_device: bool | None = None
    main_threads: int | None = None
    tolerance: DurationTolerance = DurationTolerance()
    allow_partial: bool = False

    def __post_init__(self):
        if not isinstance(self.device, str) or not _DEVICE_RE.fullmatch(self.device):
            raise SettingsError("device", self.device, "expected cpu, cuda or cuda:N")
        if device_problem(self.device):  # the index: torch refuses cuda:01 and wraps cuda:128 to -128
            raise SettingsError("device", self.device, f"expected cpu, cuda or cuda:N, N from 0 to "
                                f"{MAX_DEVICE_INDEX} without a leading zero")
        if self.backend not in BACKENDS:
            raise SettingsError("backend", self.backend, f"expected one of {', '.join(BACKENDS)}")
        for name, least, optional in (("batch_size", 1, True), ("num_workers", 0, True),
                                      ("short_side", 1, True), ("decode_threads", 0, False),
                                      ("main_threads", 1, True)):
            _check_count(name, getattr(self, name), least, optional=optional)
        for name in ("amp", "overwrite", "allow_partial"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(name, getattr(self, name), "expected True or False")
        if self.normalise_on_device is not None and not isinstance(self.normalise_on_device, bool):
            raise SettingsError("normalise_on_device", self.normalise_on_device, "expected True, False or None")
        _check_shard(self.shard)
        _check_seconds("stage_seconds", self.stage_seconds)
        if not isinstance(self.tolerance, DurationTolerance):
            raise SettingsError("tolerance", self.tolerance, "expected a moviefib.integrity.DurationTolerance")

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def resolved(self, extractor=None, *, environ: Mapping[str, str] | None = None) -> ExtractSettings:
        """These settings with the open ones decided (see the module documentation): the device, shard,
        workers and main threads always; with ``extractor`` (its ``kind`` and ``preprocess``) the batch
        size and ``normalise_on_device`` too. ``environ``: where torchrun's variables are read (default
        ``os.environ``). Resolving resolved settings again changes nothing.

        Raises :class:`~moviefib.distributed.LaunchError` when torchrun's variables make no sense, and
        ValueError when ``normalise_on_device`` is asked of a preprocess without a uint8 half.
        """
        from ..distributed import distributed_env

        env = distributed_env(environ)
        if self.shard is not None and env.distributed and self.shard != (env.rank, env.world):
            # Every process would take the same clips, and all but one stop at the output's lock.
            raise SettingsError("shard", self.shard, f"given under torchrun (RANK={env.rank}, WORLD_SIZE="
                                f"{env.world}), which shards the clips itself: leave it out")
        shard = self.shard if self.shard is not None or not env.distributed else (env.rank, env.world)
        device = f"cuda:{env.local_rank}" if self.device == "cuda" and env.distributed else self.device
        on_cuda = device.startswith("cuda")
        cores = os.cpu_count() or 1
        new = dataclasses.replace(
            self, device=device, shard=shard,
            num_workers=self.num_workers if self.num_workers is not None else (cores if on_cuda else max(1, cores - 1)),
            main_threads=self.main_threads if self.main_threads is not None else default_main_threads(device))
        return new if extractor is None else new._for_extractor(extractor)

    def _for_extractor(self, extractor) -> ExtractSettings:
        split = splits_preprocess(extractor.preprocess)
        if self.normalise_on_device and not split:
            raise ValueError(f"extractor {getattr(extractor, 'name', '?')!r}: its preprocess has no uint8 half "
                             f"(resize_crop/normalise) to split between the workers and the device")
        batches = _BATCH_2D if extractor.kind == "2d" else _BATCH_3D
        return dataclasses.replace(
            self, batch_size=self.batch_size or batches[self.on_cuda],
            normalise_on_device=self.on_cuda and split if self.normalise_on_device is None
            else self.normalise_on_device)


def _check_count(name: str, value, least: int, *, optional: bool) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise SettingsError(name, value, "expected a whole number" + (" or None" if optional else ""))
    if value < least:
        raise SettingsError(name, value, f"must be at least {least}")


def _check_seconds(name: str, value) -> None:
    # A whole number is compared as it is: math.isfinite(10**400) raises OverflowError.
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or (isinstance(value, float) and not math.isfinite(value)) or value < 0:
        raise SettingsError(name, value, "expected a number of seconds >= 0")


def _check_shard(shard) -> None:
    if shard is None:
        return
    ok = (isinstance(shard, tuple) and len(shard) == 2
          and all(isinstance(x, int) and not isinstance(x, bool) for x in shard))
    if not ok:
        raise SettingsError("shard", shard, "expected (i, n), two whole numbers, or None")
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise SettingsError("shard", shard, "need 0 <= i < n")


def default_main_threads(device: str) -> int | None:
    """The torch CPU threads extraction gives this process on ``device`` by default (None: unchanged)."""
    if device.split(":")[0] != "cuda":
        return None
    import torch

    return min(_CUDA_MAIN_THREADS, torch.get_num_threads())


def splits_preprocess(preprocess) -> bool:
    """Whether ``preprocess`` has a uint8 worker half and a device half (``resize_crop`` and ``normalise``,
    as :class:`moviefib.features.transforms.FramePreprocess` has)."""
    return callable(getattr(preprocess, "resize_crop", None)) and callable(getattr(preprocess, "normalise", None))
