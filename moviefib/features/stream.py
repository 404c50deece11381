"""The main side of extraction: the model loop over the workers' batches, and the assembly of each
clip's feature rows into finished clips, staged as they come.

On a GPU, given a preprocess in two halves, the workers ship uint8 and this process normalises on the
device after the transfer; copies run on their own CUDA stream, and one batch stays in flight (its
features are read back after the next batch is queued), so the device has the next batch before it
finishes the current one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator

import numpy as np

from .outcome import LOGGER, Failure
from .sources import ClipSource
from .staging import Staging
from .store import ClipRecord
from .workers import ClipDone

log = logging.getLogger(LOGGER)


def run_model(batches: Iterator[dict], extractor, dev, *, normalise, amp: bool,
               assembler: ClipAssembler) -> None:
    """Run the model over the workers' batches and hand each batch's rows and news to ``assembler``."""
    import torch

    model = extractor.model
    if dev.type == "cuda" and extractor.kind == "2d":
        model = model.to(memory_format=torch.channels_last)
    use_amp = amp and dev.type == "cuda"
    # On CUDA, copies run on their own stream, so the next batch's copy overlaps this one's model.
    copy_stream = torch.cuda.Stream(dev) if dev.type == "cuda" else None
    # One batch stays in flight: its features are read back only once the next batch is queued, so on
    # a GPU the device never waits for this loop's bookkeeping.
    in_flight = None
    with torch.inference_mode():
        for batch in batches:
            x = batch["x"]
            queued = None
            if x is not None:
                x = _to_device(x, dev, copy_stream)
                if dev.type == "cuda" and x.dim() == 4:
                    # Before normalising: on uint8 the copy is a quarter of the bytes, and the
                    # elementwise normalisation keeps the layout.
                    x = x.contiguous(memory_format=torch.channels_last)
                if normalise is not None:
                    x = normalise(x)
                with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                    queued = (model(x), batch)
            if in_flight is not None:
                assembler.add_rows(*in_flight)
            in_flight = queued
            assembler.add_news(batch)
        if in_flight is not None:
            assembler.add_rows(*in_flight)
    assembler.finish_all()


class ClipAssembler:
    """Puts clips together from feature rows that arrive batch by batch, and stages the finished ones.

    A clip is finished once the workers have said how many steps it has and all of them have arrived;
    finished clips are staged every ``stage_seconds``. Failed clips are kept with their reasons.
    """

    def __init__(self, todo: list[ClipSource], staging: Staging, *, stage_seconds: float,
                 on_clip: Callable[[str, bool], None] | None):
        self.todo, self.staging, self.stage_seconds, self.on_clip = todo, staging, stage_seconds, on_clip
        self.parts: dict[int, list] = {}  # clip index -> (step, row, time) so far
        self.expected: dict[int, int] = {}  # clip index -> its number of steps, once known
        self.done: dict[int, ClipDone] = {}  # clip index -> what its worker said once it was decoded
        self.failed_keys: set[int] = set()
        self.failures: list[Failure] = []
        self.warnings: list[Failure] = []
        self.pending: list[tuple[str, np.ndarray, np.ndarray, ClipRecord]] = []  # finished, not yet staged
        self.extracted = self.steps = self.partial = 0
        self.last_stage = time.perf_counter()

    def add_rows(self, features, batch: dict) -> None:
        """File a batch's feature rows under their clips (rows of a clip failed meanwhile are dropped)."""
        rows = features.float().cpu().numpy()
        for k, s, t, row in zip(batch["key"].tolist(), batch["step"].tolist(), batch["time"].tolist(), rows):
            if k not in self.failed_keys:
                self.parts.setdefault(k, []).append((s, row, t))

    def add_news(self, batch: dict) -> None:
        """Take a batch's failed and fully decoded clips; finish the complete ones; stage when due."""
        for k, failure in batch["failed"].items():
            self._fail(int(k), failure)
        for k, done in batch["done"].items():
            self.expected[int(k)] = done.steps
            self.done[int(k)] = done
            self.parts.setdefault(int(k), [])
        for k in [k for k, n in self.expected.items() if len(self.parts.get(k, ())) >= n]:
            self._finish(k)
        if self.pending and time.perf_counter() - self.last_stage >= self.stage_seconds:
            self.stage()

    def finish_all(self) -> None:
        """After the last batch: every clip still waiting has lost steps, or is complete."""
        for k in list(self.expected):
            self._finish(k)

    def stage(self) -> None:
        if self.pending:
            self.staging.write(self.pending)
            self.pending = []
        self.last_stage = time.perf_counter()

    def _finish(self, key: int) -> None:
        rows = sorted(self.parts.pop(key), key=lambda r: r[0])
        n = self.expected.pop(key)
        clip = self.todo[key]
        done = self.done.pop(key)
        if len(rows) != n or [r[0] for r in rows] != list(range(n)):
            self._fail(key, Failure(clip.clip_id, clip.path,
                                    f"{clip.path}: steps lost in the pipeline ({len(rows)} of {n})"))
            return
        feats = np.stack([r[1] for r in rows])
        with np.errstate(over="ignore"):
            finite = np.all(np.isfinite(feats.astype(np.float16)))
        if not finite:
            self._fail(key, Failure(clip.clip_id, clip.path,
                                    f"{clip.path}: non-finite features (NaN/inf, or too large for float16)"))
            return
        self.pending.append((clip.clip_id, feats, np.array([r[2] for r in rows], dtype=np.float64), done.record))
        self.extracted += 1
        self.steps += n
        self.partial += done.record.partial
        if done.warning is not None and not done.record.partial:
            self.warnings.append(done.warning)
            log.debug("warning: %s: %s", clip.clip_id, done.warning.reason)
        if self.on_clip:
            self.on_clip(clip.clip_id, True)

    def _fail(self, key: int, failure: Failure) -> None:
        self.failed_keys.add(key)
        self.parts.pop(key, None)
        self.expected.pop(key, None)
        self.done.pop(key, None)
        clip = self.todo[key]
        self.failures.append(failure)
        # One line per clip would drown a partial video tree: the run's summary names the failures.
        log.debug("failed: %s: %s", clip.clip_id, failure.reason)
        if self.on_clip:
            self.on_clip(clip.clip_id, False)


def _to_device(x, dev, copy_stream):
    """``x`` on ``dev``, copied asynchronously; with ``copy_stream`` (CUDA), copied on that stream and
    made safe to use on the current one."""
    import torch

    if copy_stream is None:
        return x.to(dev, non_blocking=True)
    with torch.cuda.stream(copy_stream):
        y = x.to(dev, non_blocking=True)
    current = torch.cuda.current_stream(dev)
    current.wait_stream(copy_stream)
    y.record_stream(current)  # the allocator must not reuse y's memory before the model has read it
    return y


def run_batches(todo: list[ClipSource], extractor, sampling, settings, assembler: ClipAssembler) -> None:
    """Extract ``todo`` with resolved :class:`~moviefib.features.settings.ExtractSettings`, handing every
    clip to ``assembler``, and stage what it finished (on Ctrl-C too, before the interrupt goes on:
    the rerun keeps the clips finished since the last staged file). The torch CPU threads of this
    process are ``settings.main_threads`` meanwhile, and restored afterwards."""
    import torch

    from .workers import iter_batches

    dev = torch.device(settings.device)
    normalise = extractor.preprocess.normalise if settings.normalise_on_device else None
    threads_before = torch.get_num_threads()
    try:
        if todo:
            batches = iter_batches(todo, extractor, sampling, batch_size=settings.batch_size,
                                   num_workers=settings.num_workers, backend=settings.backend,
                                   short_side=settings.short_side, decode_threads=settings.decode_threads,
                                   pin_memory=dev.type == "cuda", uint8=normalise is not None,
                                   tolerance=settings.tolerance, allow_partial=settings.allow_partial)
            if settings.main_threads is not None:
                torch.set_num_threads(settings.main_threads)
            run_model(batches, extractor, dev, normalise=normalise, amp=settings.amp, assembler=assembler)
        assembler.stage()
    except KeyboardInterrupt:
        assembler.stage()
        raise
    finally:
        torch.set_num_threads(threads_before)
