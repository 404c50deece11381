"""The worker side of extraction: decode, sample and preprocess clips in DataLoader worker processes,
pack their steps into batches (across clip and window boundaries) and judge each clip's length.

Each worker takes every n-th clip and packs the steps of its clips into batches of ``batch_size``
steps, so a 3D model sees full batches even on 2-second clips. With ``uint8`` the workers stop at
``resize_crop`` and the consumer normalises (see :mod:`moviefib.features.pipeline`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ..integrity import DurationTolerance, LengthVerdict, SourceIdentity, judge_length, source_identity
from ..video import DecodedSpan, Sampling, VideoError, header_duration, sample
from .outcome import Failure
from .settings import splits_preprocess
from .sources import ClipSource
from .store import ClipRecord


@dataclass(frozen=True)
class _StreamConfig:
    sampling: Sampling
    preprocess: Callable
    uint8: bool  # run only preprocess.resize_crop: the consumer normalises
    kind: str
    batch_size: int
    backend: str
    short_side: int | None
    decode_threads: int
    tolerance: DurationTolerance = DurationTolerance()
    allow_partial: bool = False


def judge_clip(clip: ClipSource, span: DecodedSpan, tolerance: DurationTolerance) -> LengthVerdict:
    """Judge a decoded clip's length (:func:`moviefib.integrity.judge_length`): against its row's times,
    its segment, or (for a file of a folder) its header when the container shows it was cut short."""
    expected, source = clip.expected_duration, "clip id"
    if clip.segment is not None:
        expected, source = (clip.segment.duration if expected is None else expected), "segment"
    header = header_duration(span.info) if span.info is not None else None
    verdict = judge_length(clip.path, span.duration, expected=expected, source=source, header=header,
                           whole_file=clip.segment is None, tolerance=tolerance)
    gaps = span.gap_text()
    if gaps is None:
        return verdict
    # Frames lost in the middle are at least a warning, however little of the clip they are.
    status = "warn" if verdict.status == "ok" else verdict.status
    reason = f"{clip.path}: {gaps}" if verdict.reason is None else f"{verdict.reason}; {gaps}"
    return dataclasses.replace(verdict, status=status, reason=reason)


@dataclass(frozen=True)
class ClipDone:
    """A clip fully decoded by a worker: its step count, its record and a warning about its length."""

    steps: int
    record: ClipRecord
    warning: Failure | None


def _failure(clip: ClipSource, verdict: LengthVerdict) -> Failure:
    return Failure(clip.clip_id, clip.path, verdict.reason or "", verdict.decoded, verdict.expected,
                   verdict.expected_from)


def _identity(path: str, cache: dict[str, SourceIdentity | None]) -> SourceIdentity | None:
    """The source identity of ``path``, once per worker and file (a movie serves many clips)."""
    if path not in cache:
        try:
            cache[path] = source_identity(path)
        except OSError:
            cache[path] = None  # missing or unreadable: the decoder says why
    return cache[path]


def _make_stream_class():
    import torch

    class ClipStream(torch.utils.data.IterableDataset):
        """Yields batch dicts: x [n, ...] float (uint8 with cfg.uint8), key/step/time per row,
        done {key: ClipDone}, failed {key: Failure}."""

        def __init__(self, clips: Sequence[tuple[int, ClipSource]], cfg: _StreamConfig):
            self.clips = list(clips)
            self.cfg = cfg

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = self.clips if info is None else self.clips[info.id::info.num_workers]
            cfg = self.cfg
            preprocess = cfg.preprocess.resize_crop if cfg.uint8 else cfg.preprocess
            xs, keys, steps, times = [], [], [], []
            done: dict[int, ClipDone] = {}
            failed: dict[int, Failure] = {}
            identities: dict[str, SourceIdentity | None] = {}

            def flush():
                batch = {"x": torch.stack(xs) if xs else None,
                         "key": torch.tensor(keys, dtype=torch.int64),
                         "step": torch.tensor(steps, dtype=torch.int64),
                         "time": torch.tensor(times, dtype=torch.float64),
                         "done": dict(done), "failed": dict(failed)}
                xs.clear(), keys.clear(), steps.clear(), times.clear(), done.clear(), failed.clear()
                return batch

            for key, clip in mine:
                n = 0
                span = DecodedSpan()
                # Before decoding: the identity is that of the bytes the features come from.
                source = _identity(clip.path, identities)
                try:
                    for step, frames in sample(clip.path, cfg.sampling, segment=clip.segment,
                                               backend=cfg.backend, short_side=cfg.short_side,
                                               threads=cfg.decode_threads, span=span):
                        x = preprocess(torch.from_numpy(frames))
                        xs.append(x[0] if cfg.kind == "2d" else x)
                        keys.append(key), steps.append(step.index), times.append(step.time)
                        n += 1
                        if len(xs) >= cfg.batch_size:
                            yield flush()
                except VideoError as exc:
                    failed[key] = Failure(clip.clip_id, clip.path, str(exc))
                except Exception as exc:  # a preprocessing bug or a decoder crash: one clip, not the run
                    failed[key] = Failure(clip.clip_id, clip.path, f"{clip.path}: {type(exc).__name__}: {exc}")
                else:
                    if n == 0:
                        failed[key] = Failure(clip.clip_id, clip.path,
                                              f"{clip.path}: no step to extract (clip shorter than one window?)")
                    else:
                        verdict = judge_clip(clip, span, cfg.tolerance)
                        short = verdict.status == "short"
                        if short and not cfg.allow_partial:
                            failed[key] = _failure(clip, verdict)
                        else:
                            record = ClipRecord(source, short, verdict.decoded, verdict.expected)
                            done[key] = ClipDone(n, record, None if verdict.status == "ok" else _failure(clip, verdict))
            if xs or done or failed:
                yield flush()

    return ClipStream


def iter_batches(clips: Sequence[ClipSource], extractor, sampling: Sampling, *, batch_size: int = 32,
                 num_workers: int = 2, backend: str = "pyav", short_side: int | None = None,
                 decode_threads: int = 1, pin_memory: bool = False, uint8: bool = False,
                 tolerance: DurationTolerance = DurationTolerance(),
                 allow_partial: bool = False) -> Iterator[dict]:
    """Decode + preprocess ``clips`` in DataLoader workers; yield batches of up to ``batch_size`` steps.

    A batch is a dict: ``x`` (float tensor ``[n, 3, h, w]`` or ``[n, 3, T, h, w]``, or None), ``key``
    (index of the clip in ``clips`` for each row), ``step``, ``time`` (seconds), ``done`` (clip index ->
    its steps, record and length warning, once the clip is fully decoded and its length judged under
    ``tolerance``) and ``failed`` (clip index -> :class:`Failure`; a clip clearly short is one unless
    ``allow_partial``).
    ``uint8=True``: the workers run only ``extractor.preprocess.resize_crop`` and ``x`` is uint8, for the
    caller to pass through ``extractor.preprocess.normalise``; ValueError if the preprocess has no halves.
    """
    import torch

    if uint8 and not splits_preprocess(extractor.preprocess):
        raise ValueError(f"extractor {getattr(extractor, 'name', '?')!r}: its preprocess has no uint8 half "
                         f"(resize_crop/normalise), so the workers cannot ship uint8")
    cfg = _StreamConfig(sampling, extractor.preprocess, uint8, extractor.kind, batch_size, backend,
                        short_side, decode_threads, tolerance, allow_partial)
    dataset = _make_stream_class()(list(enumerate(clips)), cfg)
    workers = max(0, min(num_workers, len(clips)))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        prefetch_factor=2 if workers else None, persistent_workers=False)
    return _lazily(loader)  # not itself a generator: bad arguments fail at the call


def _lazily(loader) -> Iterator[dict]:
    yield from loader  # the workers start at the first batch asked for, not before
