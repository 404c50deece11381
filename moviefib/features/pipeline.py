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
undecodable, no step) go into ``<out>.failures.jsonl`` with their reason; the run goes on.

Sharding: ``shard=(i, n)`` (0-based i) processes every n-th clip of the sorted clip list and writes
``<stem>.shard-<i>-of-<n><suffix>``; :func:`moviefib.features.store.merge_stores` joins the shards.
Under ``torchrun`` the shard comes from ``RANK``/``WORLD_SIZE`` (see :func:`shard_from_env`).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..video import Sampling, Segment, VideoError, sample, sampling_to_dict
from ..fileio import atomic_output, atomic_write, exclusive_lock
from .registry import library_versions
from .store import StoreError, open_store, write_store

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mpg", ".mpeg", ".mov", ".webm", ".m4v")
# Provenance keys that do not change the features: a rerun may differ in them and still resume.
_VOLATILE_KEYS = ("created", "shard", "num_clips_requested")
# Torch CPU threads of the main process on CUDA: it only moves batches, normalises on the GPU and
# gathers features, and every further thread competes with the decode workers for the cores.
_CUDA_MAIN_THREADS = 2


@dataclass(frozen=True)
class ClipSource:
    """Where one clip's frames come from.

    Attributes:
        clip_id: the key in the feature store (an LSMDC clip id, or a file's relative path stem).
        path: the video file: a clip file, or a whole movie when ``segment`` is set.
        segment: the part of the movie that is the clip (seconds on the movie's time line), or None.
    """

    clip_id: str
    path: str
    segment: Segment | None = None


@dataclass(frozen=True)
class Failure:
    """A clip that could not be processed: its id, its video path and the reason."""

    clip_id: str
    path: str
    reason: str


@dataclass(frozen=True)
class ExtractSummary:
    """The outcome of :func:`extract`.

    Attributes:
        output: the store written (None when no clip at all has features).
        total: clips to process in this shard.
        extracted: clips extracted by this run.
        reused: clips found finished by an earlier run (staged files or an existing store).
        failures: clips that failed, with reasons (also in ``failures_path``).
        failures_path: the failure manifest, or None when nothing failed.
        steps: feature rows computed by this run.
        seconds: wall time of this run.
    """

    output: str | None
    total: int
    extracted: int
    reused: int
    failures: tuple[Failure, ...]
    failures_path: str | None
    steps: int
    seconds: float

    @property
    def failed(self) -> int:
        return len(self.failures)

    @property
    def clips_per_s(self) -> float:
        return self.extracted / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------------
# Inputs


def clips_from_folder(folder: str | os.PathLike) -> list[ClipSource]:
    """Every video file under ``folder`` (recursively); clip id = relative path without its suffix."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such folder")
    clips = [ClipSource(p.relative_to(folder).with_suffix("").as_posix(), str(p))
             for p in sorted(folder.rglob("*")) if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file()]
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

    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such file")
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
    files ``<video_root>/<movie>.<ext>``, cut at each clip's extracted start/end.
    """
    from ..formats import movie_of

    root = Path(video_root)
    seen: dict[str, ClipSource] = {}
    movie_files: dict[str, str] = {}
    for clip_id, start, end in _clip_rows(Path(source)):
        if clip_id in seen:
            continue
        movie = movie_of(clip_id)
        if not movies:
            seen[clip_id] = ClipSource(clip_id, str(root / movie / f"{clip_id}.avi"))
            continue
        if movie not in movie_files:
            found = [root / f"{movie}{s}" for s in VIDEO_SUFFIXES if (root / f"{movie}{s}").is_file()]
            movie_files[movie] = str(found[0] if found else root / f"{movie}.avi")
        seen[clip_id] = ClipSource(clip_id, movie_files[movie], Segment(float(start), float(end)))
    return list(seen.values())


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
# Worker side: decode, sample, preprocess, batch.


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


def _make_stream_class():
    import torch

    class ClipStream(torch.utils.data.IterableDataset):
        """Yields batch dicts: x [n, ...] float (uint8 with cfg.uint8), key/step/time per row,
        done {key: steps}, failed {key: reason}."""

        def __init__(self, clips: Sequence[tuple[int, ClipSource]], cfg: _StreamConfig):
            self.clips = list(clips)
            self.cfg = cfg

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = self.clips if info is None else self.clips[info.id::info.num_workers]
            cfg = self.cfg
            preprocess = cfg.preprocess.resize_crop if cfg.uint8 else cfg.preprocess
            xs, keys, steps, times = [], [], [], []
            done: dict[int, int] = {}
            failed: dict[int, str] = {}

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
                try:
                    for step, frames in sample(clip.path, cfg.sampling, segment=clip.segment,
                                               backend=cfg.backend, short_side=cfg.short_side,
                                               threads=cfg.decode_threads):
                        x = preprocess(torch.from_numpy(frames))
                        xs.append(x[0] if cfg.kind == "2d" else x)
                        keys.append(key), steps.append(step.index), times.append(step.time)
                        n += 1
                        if len(xs) >= cfg.batch_size:
                            yield flush()
                except VideoError as exc:
                    failed[key] = str(exc)
                except Exception as exc:  # a preprocessing bug or a decoder crash: one clip, not the run
                    failed[key] = f"{clip.path}: {type(exc).__name__}: {exc}"
                else:
                    if n == 0:
                        failed[key] = f"{clip.path}: no step to extract (clip shorter than one window?)"
                    else:
                        done[key] = n
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
                 decode_threads: int = 1, pin_memory: bool = False, uint8: bool = False) -> Iterator[dict]:
    """Decode + preprocess ``clips`` in DataLoader workers; yield batches of up to ``batch_size`` steps.

    A batch is a dict: ``x`` (float tensor ``[n, 3, h, w]`` or ``[n, 3, T, h, w]``, or None), ``key``
    (index of the clip in ``clips`` for each row), ``step``, ``time`` (seconds), ``done`` (clip index ->
    number of steps, once the clip is fully decoded) and ``failed`` (clip index -> reason).
    ``uint8=True``: the workers run only ``extractor.preprocess.resize_crop`` and ``x`` is uint8, for the
    caller to pass through ``extractor.preprocess.normalise``; ValueError if the preprocess has no halves.
    """
    import torch

    if uint8 and not splits_preprocess(extractor.preprocess):
        raise ValueError(f"extractor {getattr(extractor, 'name', '?')!r}: its preprocess has no uint8 half "
                         f"(resize_crop/normalise), so the workers cannot ship uint8")
    cfg = _StreamConfig(sampling, extractor.preprocess, uint8, extractor.kind, batch_size, backend,
                        short_side, decode_threads)
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
    """The staging folder of one output: run settings, staged .npz files and their manifest."""

    def __init__(self, out: Path, fingerprint: dict, *, overwrite: bool):
        self.dir = out.with_name(out.name + ".staging")
        self.files: dict[str, list[str]] = {}
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
                    self.files[f.name] = [str(c) for c in z["clip_ids"]]
            except Exception as exc:  # renamed only once complete, so this is outside damage
                log.warning("ignoring unreadable staged file %s (%s)", f, exc)
                continue
            self.seq = max(self.seq, int(f.name.split("-")[1]) + 1)

    def done_ids(self) -> set[str]:
        return {c for ids in self.files.values() for c in ids}

    def write(self, clips: list[tuple[str, np.ndarray, np.ndarray]]) -> None:
        name = f"stage-{self.seq:07d}-{os.getpid()}.npz"
        self.seq += 1
        offsets = np.cumsum([0] + [len(f) for _, f, _ in clips]).astype(np.int64)
        with atomic_output(self.dir / name) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, clip_ids=np.array([c for c, _, _ in clips]), offsets=offsets,
                     features=np.concatenate([f for _, f, _ in clips]).astype(np.float16),
                     timestamps=np.concatenate([t for _, _, t in clips]).astype(np.float64))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(self.dir)
        self.files[name] = [c for c, _, _ in clips]
        manifest = {"staged": [{"file": k, "clips": v} for k, v in sorted(self.files.items())]}
        atomic_write(self.dir / "manifest.json", json.dumps(manifest), fsync=True)

    def items(self) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        for name in sorted(self.files):
            with np.load(self.dir / name, allow_pickle=False) as z:
                ids, off, feats, ts = z["clip_ids"], z["offsets"], z["features"], z["timestamps"]
            for i, c in enumerate(ids):
                yield str(c), feats[off[i]:off[i + 1]], ts[off[i]:off[i + 1]]

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


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
            on_clip: Callable[[str, bool], None] | None = None) -> ExtractSummary:
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
    Raises ValueError when ``out`` or its staging folder holds features made with other settings
    (unless ``overwrite``), and :class:`~moviefib.fileio.LockHeldError` when another live process is
    extracting into the same file.
    """
    import torch

    t_start = time.perf_counter()
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
        todo = [c for c in all_clips if c.clip_id not in done_before]
        reused = len(all_clips) - len(todo)
        log.info("%s: %d clips, %d already done, %d to extract", out, len(all_clips), reused, len(todo))
        if on_start:
            on_start(len(all_clips), reused)

        assembler = _ClipAssembler(todo, staging, stage_seconds=stage_seconds, on_clip=on_clip)
        threads_before = torch.get_num_threads()
        try:
            if todo:
                batches = iter_batches(todo, extractor, sampling, batch_size=batch_size,
                                       num_workers=num_workers, backend=backend, short_side=short_side,
                                       decode_threads=decode_threads, pin_memory=dev.type == "cuda",
                                       uint8=normalise is not None)
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
        if failures:
            text = "".join(json.dumps({"clip_id": f.clip_id, "path": f.path, "reason": f.reason}) + "\n"
                           for f in failures)
            atomic_write(failures_path, text, fsync=True)
        elif failures_path.exists():
            failures_path.unlink()  # from an earlier run whose failed clips now succeeded

        output = _pack(out, staging, prov, len(all_clips), overwrite)
        return ExtractSummary(str(output) if output else None, len(all_clips), assembler.extracted, reused,
                              tuple(failures), str(failures_path) if failures else None, assembler.steps,
                              time.perf_counter() - t_start)


def _resume(out: Path, fingerprint: dict, *, overwrite: bool) -> tuple[_Staging, set[str]]:
    """The staging folder of ``out`` and the clips earlier runs finished (staged, or packed in ``out``).

    Raises ValueError when they were made with other settings (unless ``overwrite``).
    """
    for stale in out.parent.glob(f".{out.name}.*.tmp"):
        stale.unlink()  # a pack interrupted before its rename
    packed: set[str] = set()
    if out.exists() and not overwrite:
        try:
            existing = open_store(out)
        except StoreError as exc:
            raise ValueError(f"{out} exists and is not a usable store ({exc}); pass overwrite") from None
        with existing:
            diff = settings_diff(_fingerprint(existing.provenance), fingerprint)
            if diff:
                raise ValueError(f"{out} holds features made with other settings ({diff}); pass "
                                 f"overwrite (--overwrite) or choose another output")
            packed = set(existing.clip_ids())
    staging = _Staging(out, fingerprint, overwrite=overwrite)
    return staging, staging.done_ids() | packed


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
        self.failed_keys: set[int] = set()
        self.failures: list[Failure] = []
        self.pending: list[tuple[str, np.ndarray, np.ndarray]] = []  # finished, not yet staged
        self.extracted = self.steps = 0
        self.last_stage = time.perf_counter()

    def add_rows(self, features, batch: dict) -> None:
        """File a batch's feature rows under their clips (rows of a clip failed meanwhile are dropped)."""
        rows = features.float().cpu().numpy()
        for k, s, t, row in zip(batch["key"].tolist(), batch["step"].tolist(), batch["time"].tolist(), rows):
            if k not in self.failed_keys:
                self.parts.setdefault(k, []).append((s, row, t))

    def add_news(self, batch: dict) -> None:
        """Take a batch's failed and fully decoded clips; finish the complete ones; stage when due."""
        for k, reason in batch["failed"].items():
            self._fail(int(k), reason)
        for k, n in batch["done"].items():
            self.expected[int(k)] = int(n)
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
        if len(rows) != n or [r[0] for r in rows] != list(range(n)):
            self._fail(key, f"{clip.path}: steps lost in the pipeline ({len(rows)} of {n})")
            return
        feats = np.stack([r[1] for r in rows])
        with np.errstate(over="ignore"):
            finite = np.all(np.isfinite(feats.astype(np.float16)))
        if not finite:
            self._fail(key, f"{clip.path}: non-finite features (NaN/inf, or too large for float16)")
            return
        self.pending.append((clip.clip_id, feats, np.array([r[2] for r in rows], dtype=np.float64)))
        self.extracted += 1
        self.steps += n
        if self.on_clip:
            self.on_clip(clip.clip_id, True)

    def _fail(self, key: int, reason: str) -> None:
        self.failed_keys.add(key)
        self.parts.pop(key, None)
        self.expected.pop(key, None)
        clip = self.todo[key]
        self.failures.append(Failure(clip.clip_id, clip.path, reason))
        log.warning("failed: %s: %s", clip.clip_id, reason)
        if self.on_clip:
            self.on_clip(clip.clip_id, False)


def _pack(out: Path, staging: _Staging, prov: dict, total: int, overwrite: bool) -> Path | None:
    """Write the store from an existing store at ``out`` (if any) plus the staged files; drop staging."""
    old = None if overwrite or not out.exists() else open_store(out)
    if old is not None and not staging.files:
        old.close()
        staging.remove()
        return out
    if old is None and not staging.files:
        staging.remove()
        return None
    prov = dict(prov, num_clips_requested=total, created=time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def items():
        seen = set()
        sources = [staging.items()] if old is None else [old.items(), staging.items()]
        for src in sources:
            for c, f, t in src:
                if c not in seen:  # a clip both staged and packed: killed between pack and cleanup
                    seen.add(c)
                    yield c, f, t

    try:
        # The new file is complete before it replaces the old one, so the old store is read safely.
        write_store(out, items(), prov)
    finally:
        if old is not None:
            old.close()
    staging.remove()
    return out


# ---------------------------------------------------------------------------------------------------
# video_features (.npy per clip) import / export


def npy_key(provenance: dict) -> str:
    """The file key video_features uses for these features (``rgb`` for I3D, else the model name)."""
    name = provenance.get("extractor") or "features"
    return "rgb" if name == "i3d" else name


def export_npy(store_path: str | os.PathLike, out_dir: str | os.PathLike, *, key: str | None = None) -> int:
    """Write each clip as video_features does: ``<out_dir>/<clip>_<key>.npy`` (float32 [T, D]) and
    ``<clip>_timestamps_ms.npy`` (float64 [T], milliseconds). Returns the number of clips.
    """
    out_dir = Path(out_dir)
    n = 0
    with open_store(store_path) as store:
        key = key or npy_key(store.provenance)
        for clip_id, feats, ts in store.items():
            base = out_dir / clip_id
            base.parent.mkdir(parents=True, exist_ok=True)
            for suffix, arr in ((key, feats.astype(np.float32)), ("timestamps_ms", ts * 1000.0)):
                path = base.with_name(f"{base.name}_{suffix}.npy")
                tmp = path.with_name(f".{path.name}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, arr)
                os.replace(tmp, path)
            n += 1
    return n


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
                ts = np.load(ts_file, allow_pickle=False).astype(np.float64).reshape(-1) / 1000.0
                if len(ts) != len(feats):
                    raise ValueError(f"{ts_file}: {len(ts)} timestamps for {len(feats)} feature rows")
            elif step_seconds:
                ts = (np.arange(len(feats)) + 0.5) * step_seconds
            else:
                raise ValueError(f"{p}: no {ts_file.name} beside it; give step_seconds (--step-seconds)")
            yield clip_id, feats, ts

    prov = dict(provenance or {})
    prov.setdefault("extractor", key)
    prov["imported_from"] = f"video_features .npy files ({in_dir})"
    return write_store(out, items(), prov)
