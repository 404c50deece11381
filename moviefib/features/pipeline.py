"""The extraction pipeline: clips -> decoded, sampled, preprocessed steps -> model -> a feature store.

Decoding and preprocessing run in DataLoader worker processes, overlapped with the model in the main
process. Each worker takes every n-th clip and packs the steps of its clips into batches of
``batch_size`` steps (across clip and window boundaries), so a 3D model sees full batches even on
2-second clips.

On a GPU, given a preprocess in two halves (:class:`~moviefib.features.transforms.FramePreprocess`),
the workers stop at uint8 (resize + crop) and the main process normalises on the device after the
transfer: a quarter of the bytes of float32 through shared memory, pinning and PCIe (a batch of 32 I3D
windows of 64 frames is 0.3 GB in uint8, 1.2 GB in float32). The main process then also runs with 2 torch
threads, so that it leaves the cores to the decode workers. Copies run on their own CUDA stream, and one
batch stays in flight (its features are read back after the next batch is queued), so the device has
the next batch before it finishes the current one. On the CPU the workers normalise too (in
parallel with the model), and the threads are left alone.

Crash safety. Finished clips are written every few seconds as a *staged file* in ``<out>.staging/``
(a ``.npz`` written under a temporary name, synced and renamed: a staged file exists whole or not at
all), next to ``run.json`` (the settings) and ``manifest.json`` (the staged files and their clips,
rewritten atomically). At the end everything is packed into the HDF5 store ``<out>`` (written to a
temporary name, then renamed) and the staging folder is removed. Killed at any moment and rerun with
the same settings, a run keeps the clips of every staged file and of an existing store at ``<out>``,
and extracts only the rest (interrupted with Ctrl-C, it first stages the clips it has finished).
While a run lasts it holds ``<out>.lock`` (a ``flock``, which dies with the process), so a second run
on the same output stops at once instead of racing it. Clips that cannot be processed (missing, empty,
undecodable, no step, cut short) go into ``<out>.failures.jsonl`` with their reason; the run goes on.
A rerun that does not try an earlier run's failed clips again (``--limit``, fewer clips) keeps their
records in the manifest; a clip it tries replaces its record with the new outcome.

Source identity. Every staged and stored clip records its video file's identity
(:class:`~moviefib.integrity.SourceIdentity`: size, modification time, a hash of the first and last
64 KiB). A rerun compares it with the file now: same size and time, or a new time and the same hash (a
copied dataset), the clip is kept; otherwise the file was repaired or replaced and the clip is redone
(counted in ``redone``). A clip whose file is absent now keeps its features. Clips of a store written
before the records (format version 1) or of its staged files carry no identity: they are trusted, and
get the identity of the file as it is now when the run repacks the store.

Length check. Once a clip is decoded, its decoded duration (first frame to the end of the last) is
compared with its expected one by :func:`moviefib.integrity.judge_duration`: the extracted end - start
of its LSMDC row (clip files and movie segments alike, so a segment past the movie's end is short), or
for a file of ``--folder`` its header's, but only when the container declares more bytes than the
file holds (:func:`~moviefib.integrity.container_shortfall`): a whole file whose header promises more
frames than it holds is taken to have a lying header (a counted warning), not to be cut. A clip clearly
short is a failure, with both durations; with ``allow_partial`` it is kept, marked partial in the store.
A clip between the two thresholds of the tolerance is kept with a counted warning.

Sharding: ``shard=(i, n)`` (0-based i) processes every n-th clip of the sorted clip list and writes
``<stem>.shard-<i>-of-<n><suffix>``; :func:`moviefib.features.store.merge_stores` joins the shards.
Under ``torchrun`` the shard comes from ``RANK``/``WORLD_SIZE`` (see :func:`shard_from_env`).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import PathEscapeError, atomic_output, atomic_write, contained_path, exclusive_lock
from ..integrity import (
    DurationTolerance,
    LengthVerdict,
    SourceIdentity,
    current_identity,
    judge_length,
    source_identity,
)
from ..video import (
    DecodedSpan,
    Sampling,
    Segment,
    VideoError,
    header_duration,
    require_backend,
    sample,
    sampling_to_dict,
    special_file_kind,
)
from .registry import library_versions
from .store import ClipRecord, StoreError, open_store, write_store

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mpg", ".mpeg", ".mov", ".webm", ".m4v")
# Provenance keys that do not change the features: a rerun may differ in them and still resume.
_VOLATILE_KEYS = ("created", "shard", "num_clips_requested")
# Torch CPU threads of the main process on CUDA: it only moves batches, normalises on the GPU and
# gathers features, and every further thread competes with the decode workers for the cores.
_CUDA_MAIN_THREADS = 2
# Clips named in a summary line ("first: a, b, c"): a partial tree of 100k absent clips is one line.
_FIRST_NAMES = 3


@dataclass(frozen=True)
class ClipSource:
    """Where one clip's frames come from.

    Attributes:
        clip_id: the key in the feature store (an LSMDC clip id, or a file's relative path stem).
        path: the video file: a clip file, or a whole movie when ``segment`` is set.
        segment: the part of the movie that is the clip (seconds on the movie's time line), or None.
        expected_duration: seconds the clip should last (an LSMDC row's extracted end - start), or
            None: a clip file's header is the only other guide then (see the module documentation).
    """

    clip_id: str
    path: str
    segment: Segment | None = None
    expected_duration: float | None = None


@dataclass(frozen=True)
class Failure:
    """A clip that could not be processed (or a warning about one): its id, video path and the reason.

    ``decoded``/``expected``: its decoded and expected durations in seconds, when its length was the
    problem (``expected_from``: ``clip id``, ``segment`` or ``header``).
    """

    clip_id: str
    path: str
    reason: str
    decoded: float | None = None
    expected: float | None = None
    expected_from: str | None = None

    def to_json(self) -> dict:
        """The manifest record: id, path and reason, with the durations when they were the problem."""
        d = {"clip_id": self.clip_id, "path": self.path, "reason": self.reason}
        if self.decoded is not None:
            d.update(decoded=round(self.decoded, 3), expected=self.expected, expected_from=self.expected_from)
        return d


@dataclass(frozen=True)
class ExtractSummary:
    """The outcome of :func:`extract`.

    Attributes:
        output: the store written (None when no clip at all has features).
        total: clips to process in this shard.
        extracted: clips extracted by this run.
        reused: clips found finished by an earlier run (staged files or an existing store).
        failures: clips that failed in this run, with reasons (also in ``failures_path``).
        failures_path: the failure manifest, or None when no failure record holds.
        steps: feature rows computed by this run.
        seconds: wall time of this run.
        redone: finished clips extracted again because their video file changed (counted in
            ``extracted``, not in ``reused``).
        partial: clips of this run kept although clearly short (``allow_partial``), marked in the store.
        warnings: clips of this run kept with a warning about their length (somewhat short, or a
            header that disagrees with a whole file).
        failures_kept: earlier failure records this run did not retry, kept in the manifest.
    """

    output: str | None
    total: int
    extracted: int
    reused: int
    failures: tuple[Failure, ...]
    failures_path: str | None
    steps: int
    seconds: float
    redone: int = 0
    partial: int = 0
    warnings: tuple[Failure, ...] = ()
    failures_kept: int = 0

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def clips_per_s(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------------
# Inputs


def clips_from_folder(folder: str | os.PathLike) -> list[ClipSource]:
    """Every entry named like a video under ``folder`` (recursively); clip id = relative path without
    its suffix. Entries that are not files (broken or looping symbolic links, folders such as ``x.avi``)
    are listed too, so that extraction reports them as failures instead of skipping them unseen."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder" if not folder.exists() else
                                f"{folder}: not a folder")
    clips = [ClipSource(p.relative_to(folder).with_suffix("").as_posix(), str(p))
             for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES]
    if not clips:
        raise FileNotFoundError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return clips


def _clip_rows(source: Path) -> list[tuple[str, float, float]]:
    """(clip_id, start_extracted, end_extracted) of every row of an LSMDC file or a dataset folder."""
    if source.is_dir():
        import pyarrow.parquet as pq

        from ..schema import DATA_DIR

        files = sorted((source / DATA_DIR).glob("*.parquet"))
        if not files:
            raise FileNotFoundError(f"{source}: not a dataset folder (no {DATA_DIR}/*.parquet)")
        rows = []
        for f in files:
            t = pq.read_table(f, columns=["clip_id", "start_extracted", "end_extracted"])
            rows += zip(*(t.column(c).to_pylist() for c in ("clip_id", "start_extracted", "end_extracted")))
        return rows
    from ..formats import FormatError, read_descriptions, read_fib

    if not source.exists():
        raise FileNotFoundError(f"{source}: no such file")
    kind = special_file_kind(source.stat().st_mode)
    if kind is not None:  # read twice (columns, then rows): a pipe would lose its first line
        raise FileNotFoundError(f"{source}: {kind}, not a regular file; write the clip list to a file")
    with open(source, "rb") as fh:
        first = fh.readline().decode("utf-8", "replace")
    ncols = len(first.rstrip("\r\n").split("\t"))
    if ncols not in (6, 8):
        raise FormatError(source, 1, f"expected an LSMDC description (6 columns) or FIB file (8), "
                                     f"found {ncols} columns")
    result = (read_descriptions if ncols == 6 else read_fib)(source)
    return [(r.clip_id, r.start_extracted, r.end_extracted) for r in result]


def clips_from_lsmdc(source: str | os.PathLike, video_root: str | os.PathLike, *,
                     movies: bool = False) -> list[ClipSource]:
    """The distinct clips of an LSMDC description/FIB file or a dataset folder, in first-seen order.

    ``movies=False``: clip files at ``<video_root>/<movie>/<clip_id>.avi``. ``movies=True``: whole-movie
    files ``<video_root>/<movie>.<ext>``, cut at each clip's extracted start/end. Each clip expects
    the extracted end - start. ValueError naming the file and the clip for an id that could name a
    path outside ``video_root`` (``..``, absolute, path separators, control characters).
    """
    from ..formats import movie_of

    root = Path(video_root)
    seen: dict[str, ClipSource] = {}
    movie_files: dict[str, str] = {}
    for clip_id, start, end in _clip_rows(Path(source)):
        if clip_id in seen:
            continue
        movie = movie_of(clip_id)
        expected = float(end) - float(start)
        if not movies:
            path = _under_root(source, root, f"{movie}/{clip_id}.avi", clip_id)
            seen[clip_id] = ClipSource(clip_id, str(path), expected_duration=expected)
            continue
        if movie not in movie_files:
            # Any entry under the name (a broken link, a pipe, a folder): the decoder says what is wrong
            # with it, rather than "no such file" about a .avi that was never there.
            found = [p for p in (_under_root(source, root, f"{movie}{s}", clip_id) for s in VIDEO_SUFFIXES)
                     if os.path.lexists(p)]
            movie_files[movie] = str(found[0] if found else root / f"{movie}.avi")
        seen[clip_id] = ClipSource(clip_id, movie_files[movie], Segment(float(start), float(end)),
                                   expected_duration=expected)
    return list(seen.values())


def _under_root(source, root: Path, relative: str, clip_id: str) -> Path:
    """``root/relative`` for the clip ``clip_id`` of ``source``; ValueError when the id could leave root."""
    from ..formats import id_problem

    problem = id_problem(clip_id)
    if problem is None:
        try:
            return contained_path(root, relative)
        except PathEscapeError as exc:
            problem = str(exc)
    raise ValueError(f"{source}: clip {clip_id!r}: {problem}; refusing to read a video outside {root}")


def shard_from_env() -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when run under torchrun (WORLD_SIZE > 1), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")), world


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (0-based i) -> (i, N); ValueError if malformed."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"bad shard {text!r}; expected i/N, e.g. 0/4") from None
    if not (n >= 1 and 0 <= i < n):
        raise ValueError(f"bad shard {text!r}: need 0 <= i < N")
    return i, n


def shard_path(out: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """The store file of one shard: ``feats.h5`` -> ``feats.shard-0-of-4.h5``."""
    out = Path(out)
    if shard is None:
        return out
    i, n = shard
    return out.with_name(f"{out.stem}.shard-{i}-of-{n}{out.suffix}")


# ---------------------------------------------------------------------------------------------------
# Worker side: decode, sample, preprocess, batch, judge each clip's length.


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
class _Done:
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
        done {key: _Done}, failed {key: Failure}."""

        def __init__(self, clips: Sequence[tuple[int, ClipSource]], cfg: _StreamConfig):
            self.clips = list(clips)
            self.cfg = cfg

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = self.clips if info is None else self.clips[info.id::info.num_workers]
            cfg = self.cfg
            preprocess = cfg.preprocess.resize_crop if cfg.uint8 else cfg.preprocess
            xs, keys, steps, times = [], [], [], []
            done: dict[int, _Done] = {}
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
                            done[key] = _Done(n, record, None if verdict.status == "ok" else _failure(clip, verdict))
            if xs or done or failed:
                yield flush()

    return ClipStream


def default_main_threads(device: str) -> int | None:
    """The torch CPU threads :func:`extract` gives this process on ``device`` by default (None: unchanged)."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return min(_CUDA_MAIN_THREADS, torch.get_num_threads())


def splits_preprocess(preprocess) -> bool:
    """Whether ``preprocess`` has a uint8 worker half and a device half (``resize_crop`` and ``normalise``,
    as :class:`moviefib.features.transforms.FramePreprocess` has)."""
    return callable(getattr(preprocess, "resize_crop", None)) and callable(getattr(preprocess, "normalise", None))


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


# ---------------------------------------------------------------------------------------------------
# Staging


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class _Staging:
    """The staging folder of one output: run settings, staged .npz files and their manifest.

    A staged file holds its clips' features, timestamps and records (``source_*``, ``partial``,
    ``decoded``, ``expected``: see :class:`~moviefib.features.store.ClipRecord`); files staged before
    the records have none.
    """

    def __init__(self, out: Path, fingerprint: dict, *, overwrite: bool):
        self.dir = out.with_name(out.name + ".staging")
        self.files: dict[str, list[str]] = {}
        self.records: dict[str, ClipRecord | None] = {}  # clip id -> its record, newest staged file first
        self.seq = 0
        if overwrite and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        run = self.dir / "run.json"
        if run.is_file():
            try:
                old = json.loads(run.read_text(encoding="utf-8"))
                diff = settings_diff(old, fingerprint) if isinstance(old, dict) else "run.json is not a record"
            except ValueError:
                diff = "run.json is unreadable"  # written atomically, so unreadable means foreign
            if diff:
                raise ValueError(
                    f"{self.dir} holds features made with other settings ({diff}); rerun with the same "
                    f"settings, or pass overwrite (--overwrite) to start again")
        else:
            atomic_write(run, json.dumps(fingerprint, sort_keys=True, indent=1), fsync=True)
        for tmp in self.dir.glob(".*.tmp*"):
            tmp.unlink()  # a staged file interrupted before its rename
        for f in sorted(self.dir.glob("stage-*.npz")):
            try:
                with np.load(f, allow_pickle=False) as z:
                    ids = [str(c) for c in z["clip_ids"]]
                    records = _staged_records(z, len(ids))
            except Exception as exc:  # renamed only once complete, so this is outside damage
                log.warning("ignoring unreadable staged file %s (%s)", f, exc)
                continue
            self.files[f.name] = ids
            self.records.update(zip(ids, records))  # sorted by sequence: a later file wins
            self.seq = max(self.seq, int(f.name.split("-")[1]) + 1)
        self.earlier = frozenset(self.files)  # staged by earlier runs

    def done(self) -> dict[str, ClipRecord | None]:
        """The staged clips and their records (None: staged before records existed)."""
        return dict(self.records)

    def write(self, clips: list[tuple[str, np.ndarray, np.ndarray, ClipRecord]]) -> None:
        name = f"stage-{self.seq:07d}-{os.getpid()}.npz"
        self.seq += 1
        offsets = np.cumsum([0] + [len(c[1]) for c in clips]).astype(np.int64)
        records = [c[3] for c in clips]
        with atomic_output(self.dir / name) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, clip_ids=np.array([c[0] for c in clips]), offsets=offsets,
                     features=np.concatenate([c[1] for c in clips]).astype(np.float16),
                     timestamps=np.concatenate([c[2] for c in clips]).astype(np.float64),
                     **_record_arrays(records))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.dir)
        self.files[name] = [c[0] for c in clips]
        self.records.update((c[0], c[3]) for c in clips)
        manifest = {"staged": [{"file": k, "clips": v} for k, v in sorted(self.files.items())]}
        atomic_write(self.dir / "manifest.json", json.dumps(manifest), fsync=True)

    def items(self, *, superseded: frozenset[str] = frozenset()) -> Iterator[tuple]:
        """``(clip_id, features, timestamps, record)`` of every staged clip, oldest file first;
        ``superseded``: clips redone by this run, left out of the files staged by earlier runs."""
        for name in sorted(self.files):
            with np.load(self.dir / name, allow_pickle=False) as z:
                ids, off, feats, ts = z["clip_ids"], z["offsets"], z["features"], z["timestamps"]
                records = _staged_records(z, len(ids))
            for i, c in enumerate(ids):
                c = str(c)
                if name in self.earlier and c in superseded:
                    continue
                yield c, feats[off[i]:off[i + 1]], ts[off[i]:off[i + 1]], records[i]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


_STAGED_RECORD_KEYS = ("source_size", "source_mtime_ns", "source_digest", "partial", "decoded", "expected")


def _record_arrays(records: list[ClipRecord]) -> dict[str, np.ndarray]:
    def seconds(x):
        return np.nan if x is None else x

    return {
        "source_size": np.array([r.source.size if r.source else -1 for r in records], np.int64),
        "source_mtime_ns": np.array([r.source.mtime_ns if r.source else 0 for r in records], np.int64),
        "source_digest": np.array([r.source.digest if r.source else "" for r in records], dtype=str),
        "partial": np.array([r.partial for r in records], np.bool_),
        "decoded": np.array([seconds(r.decoded) for r in records], np.float64),
        "expected": np.array([seconds(r.expected) for r in records], np.float64),
    }


def _staged_records(z, n: int) -> list[ClipRecord | None]:
    """The records of a staged file (all None in a file staged before records existed)."""
    if "source_size" not in z:
        return [None] * n
    cols = [z[k] for k in _STAGED_RECORD_KEYS]

    def seconds(x) -> float | None:
        return None if np.isnan(x) else float(x)

    return [ClipRecord(SourceIdentity(int(size), int(mtime), str(digest)) if size >= 0 else None,
                       bool(partial), seconds(decoded), seconds(expected))
            for size, mtime, digest, partial, decoded, expected in zip(*cols)]


# ---------------------------------------------------------------------------------------------------


def make_provenance(extractor, sampling: Sampling, *, preset: str | None, device: str, amp: bool,
                    backend: str, short_side: int | None) -> dict:
    """The provenance of a store made with these settings (the extractor's own plus the run's)."""
    dev_type = device.split(":")[0]
    prov = dict(extractor.provenance)
    # One record of the versions: the core libraries, the extractor's own (transformers...) and the
    # decoder's. They are settings like the others: a rerun under other versions does not mix in.
    decoder_dist = "av" if backend == "pyav" else backend
    versions = {**library_versions(), **prov.get("versions", {})}
    try:
        versions[decoder_dist] = importlib.metadata.version(decoder_dist)
    except importlib.metadata.PackageNotFoundError:
        pass
    prov.update({
        "extractor": extractor.name, "preset": preset, "kind": extractor.kind, "dim": extractor.dim,
        "window": extractor.window, "model_fps": extractor.fps, "sampling": sampling_to_dict(sampling),
        "timestamps": "seconds from the clip start: mean presentation time of each step's frames",
        "decoder": backend, "decode_short_side": short_side, "device": dev_type,
        "precision": "float16 autocast" if (amp and dev_type == "cuda") else "float32",
        "stored_dtype": "float16", "versions": versions,
    })
    return json.loads(json.dumps(prov, default=str))


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


def _fingerprint(prov: dict) -> dict:
    return {k: v for k, v in prov.items() if k not in _VOLATILE_KEYS}


def settings_diff(old: dict, new: dict) -> str:
    """The settings that differ between two fingerprints, ``key: old -> new`` (nested dicts one level
    down, e.g. ``versions.torch``), to say why a run will not resume."""
    def show(v) -> str:
        text = json.dumps(v, sort_keys=True)
        return text if len(text) <= 60 else text[:57] + "..."

    parts = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            parts += [f"{k}.{j}: {show(a.get(j))} -> {show(b.get(j))}"
                      for j in sorted(set(a) | set(b)) if a.get(j) != b.get(j)]
        else:
            parts.append(f"{k}: {show(a)} -> {show(b)}")
    return "; ".join(parts)


def _dedupe(clips: Iterable[ClipSource]) -> list[ClipSource]:
    seen: dict[str, ClipSource] = {}
    for c in clips:
        if c.clip_id in seen and seen[c.clip_id] != c:
            raise ValueError(f"clip id {c.clip_id!r} names two different sources: "
                             f"{seen[c.clip_id].path} and {c.path}")
        seen.setdefault(c.clip_id, c)
    return sorted(seen.values(), key=lambda c: c.clip_id)


def extract(clips: Iterable[ClipSource], out: str | os.PathLike, extractor, sampling: Sampling, *,
            preset: str | None = None, device: str = "cpu", batch_size: int = 32, num_workers: int = 2,
            backend: str = "pyav", short_side: int | None = None, decode_threads: int = 1,
            shard: tuple[int, int] | None = None, amp: bool = True, stage_seconds: float = 10.0,
            overwrite: bool = False, normalise_on_device: bool | None = None,
            main_threads: int | None = None, on_start: Callable[[int, int], None] | None = None,
            on_clip: Callable[[str, bool], None] | None = None,
            tolerance: DurationTolerance = DurationTolerance(), allow_partial: bool = False) -> ExtractSummary:
    """Extract features of ``clips`` into the store ``out`` (or its shard file), resumably.

    ``extractor`` is a :class:`moviefib.features.registry.Extractor` (already on ``device``).
    ``normalise_on_device``: the workers ship uint8 and this process normalises on ``device`` (needs a
    preprocess with halves, see :func:`splits_preprocess`); None: on CUDA when the preprocess has halves.
    The features are the same either way (up to float rounding), and so is the provenance.
    ``main_threads``: torch CPU threads of this process while batches run (restored afterwards); None:
    2 on CUDA, where the model does not need them and more would compete with the decode workers, and
    unchanged on the CPU, where the model runs on them.
    ``on_start(total, reused)`` is called once the finished clips of earlier runs are known and
    ``on_clip(clip_id, ok)`` as each clip finishes or fails (for progress bars).
    ``tolerance``: how much shorter than expected a decoded clip may be (see the module documentation);
    ``allow_partial``: keep clips clearly short, marked partial in the store, instead of failing them.
    Raises ValueError when ``out`` or its staging folder holds features made with other settings
    (unless ``overwrite``), :class:`~moviefib.fileio.LockHeldError` when another live process is
    extracting into the same file, and :class:`~moviefib.video.DecoderUnavailableError` (before any
    clip is tried) when the decoder ``backend`` cannot run here.
    """
    import torch

    t_start = time.perf_counter()
    require_backend(backend)
    dev = torch.device(device)
    if normalise_on_device is None:
        normalise_on_device = dev.type == "cuda" and splits_preprocess(extractor.preprocess)
    if normalise_on_device and not splits_preprocess(extractor.preprocess):
        raise ValueError(f"extractor {extractor.name!r}: its preprocess has no uint8 half "
                         f"(resize_crop/normalise) to split between the workers and the device")
    normalise = extractor.preprocess.normalise if normalise_on_device else None
    if main_threads is None:
        main_threads = default_main_threads(device)
    if main_threads is not None and main_threads < 1:
        raise ValueError(f"main_threads must be at least 1, not {main_threads}")
    all_clips = _dedupe(clips)
    if shard is not None:
        i, n = shard
        all_clips = all_clips[i::n]
    out = shard_path(out, shard)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two runs on one output would delete each other's temporary files and redo each other's clips.
    with exclusive_lock(out.with_name(out.name + ".lock"),
                        what=f"{out} is being written by another extraction; to run several at once, "
                             f"give each its own output or shard (--shard i/N)"):
        prov = make_provenance(extractor, sampling, preset=preset, device=device, amp=amp, backend=backend,
                               short_side=short_side)
        if shard is not None:
            prov["shard"] = f"{shard[0]}/{shard[1]}"
        staging, done_before = _resume(out, _fingerprint(prov), overwrite=overwrite)
        changed, identities = _changed_sources(all_clips, done_before)
        todo = [c for c in all_clips if c.clip_id not in done_before or c.clip_id in changed]
        reused = len(all_clips) - len(todo)
        if changed:
            log.info("%s: %d finished clips have a changed video file (repaired or replaced): extracting "
                     "them again (first: %s)", out, len(changed), _first(sorted(changed)))
        log.info("%s: %d clips, %d already done, %d to extract", out, len(all_clips), reused, len(todo))
        if on_start:
            on_start(len(all_clips), reused)

        tried = {c.clip_id for c in todo}
        # Clips without a file or with an id unfit for a store fail here, once, not in the workers.
        prefailed, todo = _precheck(todo)
        assembler = _ClipAssembler(todo, staging, stage_seconds=stage_seconds, on_clip=on_clip)
        for f in prefailed:
            assembler.failures.append(f)
            if on_clip:
                on_clip(f.clip_id, False)
        threads_before = torch.get_num_threads()
        try:
            if todo:
                batches = iter_batches(todo, extractor, sampling, batch_size=batch_size,
                                       num_workers=num_workers, backend=backend, short_side=short_side,
                                       decode_threads=decode_threads, pin_memory=dev.type == "cuda",
                                       uint8=normalise is not None, tolerance=tolerance,
                                       allow_partial=allow_partial)
                if main_threads is not None:
                    torch.set_num_threads(main_threads)
                _run_model(batches, extractor, dev, normalise=normalise, amp=amp, assembler=assembler)
            assembler.stage()
        except KeyboardInterrupt:
            assembler.stage()  # keep the clips finished since the last staged file for the rerun
            raise
        finally:
            torch.set_num_threads(threads_before)

        failures = assembler.failures
        failures_path = out.with_name(out.name + ".failures.jsonl")
        kept = _kept_failures(failures_path, tried=tried, finished=set(done_before) | set(staging.done()))
        records = failures + kept
        if records:
            text = "".join(json.dumps(f.to_json()) + "\n" for f in records)
            atomic_write(failures_path, text, fsync=True)
        elif failures_path.exists():
            failures_path.unlink()  # from an earlier run whose failed clips now succeeded
        _log_outcome(out, len(all_clips), failures, assembler.warnings, assembler.partial,
                     failures_path if records else None, len(kept))

        output = _pack(out, staging, prov, len(all_clips), overwrite, superseded=frozenset(changed),
                       refreshed=identities)
        return ExtractSummary(str(output) if output else None, len(all_clips), assembler.extracted, reused,
                              tuple(failures), str(failures_path) if records else None, assembler.steps,
                              time.perf_counter() - t_start, redone=len(changed),
                              partial=assembler.partial, warnings=tuple(assembler.warnings),
                              failures_kept=len(kept))


def _first(names: Sequence[str]) -> str:
    """The first few names of a list, for one summary line."""
    more = len(names) - _FIRST_NAMES
    return ", ".join(names[:_FIRST_NAMES]) + (f" and {more} more" if more > 0 else "")


def _precheck(todo: list[ClipSource]) -> tuple[list[Failure], list[ClipSource]]:
    """Split off the clips that cannot work: an id unfit for a store (it becomes a file name when the
    store is exported) or no file at all (a partial video tree: one summary line, not a worker each)."""
    from ..formats import id_problem

    failed, rest = [], []
    for c in todo:
        problem = id_problem(c.clip_id, allow_slash=True)
        if problem is not None:
            failed.append(Failure(c.clip_id, c.path, f"{c.path}: {problem}"))
        elif not os.path.lexists(c.path):  # lexists: a broken link is reported by the decoder, in words
            failed.append(Failure(c.clip_id, c.path, f"{c.path}: no such file"))
        else:
            rest.append(c)
    for f in failed:
        log.debug("failed: %s: %s", f.clip_id, f.reason)
    return failed, rest


def _changed_sources(clips: list[ClipSource], done: dict[str, ClipRecord | None]
                     ) -> tuple[set[str], dict[str, SourceIdentity]]:
    """The finished clips whose video file is no longer the one their features came from, and the
    current identity of those others whose record differs (a new time, or no record at all).

    Same size and time: unchanged without reading. Otherwise the head and tail are hashed (a copied
    dataset keeps its bytes). A file absent now cannot be compared: its clip keeps its features.
    """
    changed: set[str] = set()
    current: dict[str, SourceIdentity] = {}
    seen: dict[tuple[str, SourceIdentity | None], SourceIdentity | None] = {}  # a movie serves many clips
    for c in clips:
        if c.clip_id not in done:
            continue
        record = done[c.clip_id]
        recorded = record.source if record is not None else None
        key = (c.path, recorded)
        if key not in seen:
            if recorded is None:
                try:
                    seen[key] = source_identity(c.path)
                except OSError:
                    seen[key] = None
            else:
                seen[key] = current_identity(c.path, recorded)
        now = seen[key]
        if now is None:
            continue
        if recorded is not None and (now.size != recorded.size or now.digest != recorded.digest):
            changed.add(c.clip_id)
        elif now != recorded:
            current[c.clip_id] = now  # a new time, or no record yet: recorded once, not re-hashed each run
    return changed, current


def _kept_failures(path: Path, *, tried: set[str], finished: set[str]) -> list[Failure]:
    """The failure records of earlier runs that still hold: their clip was not tried by this run
    (``--limit``, fewer clips) and is not finished since."""
    if not path.is_file():
        return []
    kept = []
    for n, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        try:
            d = json.loads(line)
            f = Failure(str(d["clip_id"]), str(d["path"]), str(d["reason"]), d.get("decoded"),
                        d.get("expected"), d.get("expected_from"))
        except (ValueError, KeyError, TypeError):
            log.warning("%s:%d: not a failure record; dropped", path, n)  # written atomically: outside damage
            continue
        if f.clip_id not in tried and f.clip_id not in finished:
            kept.append(f)
    return kept


def _log_outcome(out: Path, total: int, failures: list[Failure], warnings: list[Failure], partial: int,
                 manifest: Path | None, kept: int) -> None:
    """One line each for the failures, the length warnings and the partial clips of a run."""
    if failures:
        kinds: dict[str, list[str]] = {}
        for f in failures:
            kinds.setdefault(failure_kind(f), []).append(f.clip_id)
        groups = "; ".join(f"{len(ids)} {kind} (first: {_first(ids)})"
                           for kind, ids in sorted(kinds.items(), key=lambda kv: -len(kv[1])))
        log.warning("%s: %d of %d clips failed: %s; details in %s", out, len(failures), total, groups, manifest)
    if kept:
        log.info("%s: %d failure records of earlier runs, not retried by this one, are kept in %s",
                 out, kept, manifest)
    if warnings:
        log.warning("%s: %d clips kept with a warning about their length (first: %s)", out, len(warnings),
                    "; ".join(f"{w.clip_id}: {w.reason}" for w in warnings[:_FIRST_NAMES]))
    if partial:
        log.warning("%s: %d clips kept although clearly short, marked partial in the store", out, partial)


def failure_kind(f: Failure) -> str:
    """A short name for what went wrong (``no such file``, ``clip cut short``...), to group failures."""
    reason = f.reason.removeprefix(f"{f.path}: ")
    if f.decoded is not None:
        return "cut short" if "cut short" in reason else "short"
    return reason.split(" (")[0].split(":")[0].split(";")[0].strip()[:60]


def _resume(out: Path, fingerprint: dict, *, overwrite: bool) -> tuple[_Staging, dict[str, ClipRecord | None]]:
    """The staging folder of ``out`` and the clips earlier runs finished (staged, or packed in ``out``),
    with their records (None: made before records existed).

    Raises ValueError when they were made with other settings (unless ``overwrite``).
    """
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        stale.unlink()  # a pack interrupted before its rename
    packed: dict[str, ClipRecord | None] = {}
    if out.exists() and not overwrite:
        try:
            existing = open_store(out)
        except StoreError as exc:
            raise ValueError(f"{out} exists and is not a usable store ({exc}); pass overwrite "
                             f"(--overwrite) to replace it, or choose another output") from None
        with existing:
            diff = settings_diff(_fingerprint(existing.provenance), fingerprint)
            if diff:
                raise ValueError(f"{out} holds features made with other settings ({diff}); pass "
                                 f"overwrite (--overwrite) or choose another output")
            packed = {c: existing.record(c) for c in existing.clip_ids()}
    staging = _Staging(out, fingerprint, overwrite=overwrite)
    return staging, {**packed, **staging.done()}  # a clip staged and packed: the staged one is newer


def _run_model(batches: Iterator[dict], extractor, dev, *, normalise, amp: bool,
               assembler: _ClipAssembler) -> None:
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


class _ClipAssembler:
    """Puts clips together from feature rows that arrive batch by batch, and stages the finished ones.

    A clip is finished once the workers have said how many steps it has and all of them have arrived;
    finished clips are staged every ``stage_seconds``. Failed clips are kept with their reasons.
    """

    def __init__(self, todo: list[ClipSource], staging: _Staging, *, stage_seconds: float,
                 on_clip: Callable[[str, bool], None] | None):
        self.todo, self.staging, self.stage_seconds, self.on_clip = todo, staging, stage_seconds, on_clip
        self.parts: dict[int, list] = {}  # clip index -> (step, row, time) so far
        self.expected: dict[int, int] = {}  # clip index -> its number of steps, once known
        self.done: dict[int, _Done] = {}  # clip index -> what its worker said once it was decoded
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


def _pack(out: Path, staging: _Staging, prov: dict, total: int, overwrite: bool, *,
          superseded: frozenset[str] = frozenset(),
          refreshed: dict[str, SourceIdentity] | None = None) -> Path | None:
    """Write the store from an existing store at ``out`` (if any) plus the staged files; drop staging.

    ``superseded``: clips redone by this run (their older rows are left out). ``refreshed``: current
    source identities of kept clips whose record differs (a copied file's new time, or the first record
    of a clip made before records existed); the store is rewritten for them once, so that later reruns
    need not hash those files again.
    """
    refreshed = refreshed or {}
    old = None if overwrite or not out.exists() else open_store(out)
    if old is not None and not staging.files and not superseded and not refreshed:
        old.close()
        staging.remove()
        return out
    staged = {c for name, ids in staging.files.items() for c in ids
              if name not in staging.earlier or c not in superseded}
    if not staged and (old is None or not set(old.clip_ids()) - superseded):
        # Nothing to write; with an old store: every clip of it was redone and failed this time.
        if old is not None:
            old.close()
            out.unlink()
        staging.remove()
        return None
    prov = dict(prov, num_clips_requested=total, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def items():
        seen = set()
        staged = staging.items(superseded=superseded)
        packed = () if old is None else (x for x in old.items(records=True) if x[0] not in superseded)
        for c, f, t, record in itertools.chain(packed, staged):
            if c not in seen:  # a clip both staged and packed: killed between pack and cleanup
                seen.add(c)
                yield c, f, t, _refresh(record, refreshed.get(c))

    try:
        # The new file is complete before it replaces the old one, so the old store is read safely.
        write_store(out, items(), prov)
    finally:
        if old is not None:
            old.close()
    staging.remove()
    return out


def _refresh(record: ClipRecord | None, now: SourceIdentity | None) -> ClipRecord | None:
    """``record`` with the source identity found now (same bytes, perhaps a new time)."""
    if now is None:
        return record
    if record is None:
        return ClipRecord(source=now)
    from dataclasses import replace

    return replace(record, source=now)


# ---------------------------------------------------------------------------------------------------
# video_features (.npy per clip) import / export


def npy_key(provenance: dict) -> str:
    """The file key video_features uses for these features (``rgb`` for I3D, else the model name)."""
    name = provenance.get("extractor") or "features"
    return "rgb" if name == "i3d" else name


def export_npy(store_path: str | os.PathLike, out_dir: str | os.PathLike, *, key: str | None = None) -> int:
    """Write each clip as video_features does: ``<out_dir>/<clip>_<key>.npy`` (float32 [T, D]) and
    ``<clip>_timestamps_ms.npy`` (float64 [T], milliseconds). Returns the number of clips. ValueError,
    before any file is written, when a clip id would name a file outside ``out_dir``.
    """
    out_dir = Path(out_dir)
    n = 0
    with open_store(store_path) as store:
        key = key or npy_key(store.provenance)
        _check_export_ids(store, out_dir)
        for clip_id, feats, ts in store.items():
            base = contained_path(out_dir, clip_id)
            base.parent.mkdir(parents=True, exist_ok=True)
            for suffix, arr in ((key, feats.astype(np.float32)), ("timestamps_ms", ts * 1000.0)):
                # A failed write (disk full) leaves neither a torn .npy nor its temp file behind.
                with atomic_output(base.with_name(f"{base.name}_{suffix}.npy")) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, arr)
            n += 1
    return n


def _check_export_ids(store, out_dir: Path) -> None:
    """Refuse (ValueError, before any file is written) a store whose clip ids would name files outside
    ``out_dir``: ``..`` parts, absolute paths, control characters (a store is input like any other)."""
    from ..formats import id_problem

    for clip_id in store.clip_ids():
        problem = id_problem(clip_id, allow_slash=True)
        if problem is not None:
            raise ValueError(f"{store.path}: clip {clip_id!r}: {problem}; nothing exported to {out_dir}")


def _npy_timestamps(ts_file: Path, n_rows: int) -> np.ndarray:
    """Seconds from a ``<clip>_timestamps_ms.npy`` file: one per feature row, finite, >= 0, in order.

    A NaN, negative or backwards time would go into the store unnoticed and misplace the features.
    """
    try:
        raw = np.load(ts_file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(f"{ts_file}: not a readable .npy file ({exc})") from None
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"{ts_file}: timestamps of dtype {raw.dtype}, expected numbers")
    ts = raw.astype(np.float64).reshape(-1) / 1000.0
    if len(ts) != n_rows:
        raise ValueError(f"{ts_file}: {len(ts)} timestamps for {n_rows} feature rows")
    bad = np.flatnonzero(~np.isfinite(ts) | (ts < 0))
    if bad.size:
        raise ValueError(f"{ts_file}: timestamp {bad[0]} is {float(raw.reshape(-1)[bad[0]]):g} ms, expected a "
                         "finite number >= 0")
    back = np.flatnonzero(np.diff(ts) < 0)
    if back.size:
        raise ValueError(f"{ts_file}: timestamps go backwards at {back[0] + 1} "
                         f"({ts[back[0]] * 1000:g} ms, then {ts[back[0] + 1] * 1000:g} ms)")
    return ts


def import_npy(in_dir: str | os.PathLike, out: str | os.PathLike, *, key: str,
               provenance: dict | None = None, step_seconds: float | None = None) -> int:
    """Build a store from video_features files ``<in_dir>/**/<clip>_<key>.npy``.

    Timestamps come from ``<clip>_timestamps_ms.npy`` when present, else ``(i + 0.5) * step_seconds``;
    without either the clip is an error naming the file. Returns the number of clips.
    """
    in_dir = Path(in_dir)
    suffix = f"_{key}.npy"
    files = sorted(p for p in in_dir.rglob(f"*{suffix}") if p.is_file())
    if not files:
        raise FileNotFoundError(f"{in_dir}: no *{suffix} files")

    def items():
        for p in files:
            stem = p.name[: -len(suffix)]
            clip_id = (p.parent.relative_to(in_dir) / stem).as_posix()
            try:
                feats = np.load(p, allow_pickle=False)
            except Exception as exc:
                raise ValueError(f"{p}: not a readable .npy file ({exc})") from None
            if feats.ndim == 1:
                feats = feats[None]
            if feats.ndim != 2:
                raise ValueError(f"{p}: expected features [T, D], found shape {feats.shape}")
            ts_file = p.with_name(f"{stem}_timestamps_ms.npy")
            if ts_file.is_file():
                ts = _npy_timestamps(ts_file, len(feats))
            elif step_seconds:
                ts = (np.arange(len(feats)) + 0.5) * step_seconds
            else:
                raise ValueError(f"{p}: no {ts_file.name} beside it; give step_seconds (--step-seconds)")
            yield clip_id, feats, ts

    prov = dict(provenance or {})
    prov.setdefault("extractor", key)
    prov["imported_from"] = f"video_features .npy files ({in_dir})"
    return write_store(out, items(), prov)
