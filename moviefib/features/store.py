"""The feature store: one HDF5 file per extractor/preset, keyed by clip id.

Layout of a store file (format ``moviefib-features``, version 2)::

    /features    float16 [N, D]   every step of every clip, clip after clip
    /timestamps  float64 [N]      seconds from the clip start: the centre of each step's frame/window
    /clip_ids    utf-8 str [C]    clip ids, in the order their rows appear in /features
    /offsets     int64 [C + 1]    clip i owns rows offsets[i]:offsets[i+1]
    /records/    one entry per clip (see :class:`ClipRecord`), in clip order:
        source_size int64, source_mtime_ns int64, source_digest utf-8 str  (-1, 0, "": unknown)
        partial uint8 (1: kept although decoded clearly short, ``--allow-partial``)
        decoded, expected float64 (seconds decoded and expected; NaN: unknown)
    attrs: format, format_version, dim, num_clips, provenance (JSON), complete (written last)

Version 1 (before the records) still reads: its clips have no record (:meth:`FeatureStore.record`
gives None), and resuming trusts them (see :mod:`moviefib.features.pipeline`).

One flat array instead of one HDF5 group per clip: 118k groups make opening and packing slow, while a
slice of one chunked dataset is a single read. Files are written to a temporary name and renamed into
place, so a reader never sees a half-written store; a store without ``complete`` is refused.

A :class:`FeatureStore` opens its HDF5 file on first access in each process (and drops the handle when
pickled), so a store object can be handed to DataLoader workers.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import atomic_output
from ..integrity import SourceIdentity

log = logging.getLogger(__name__)

FORMAT = "moviefib-features"
FORMAT_VERSION = 2
# Rows per HDF5 chunk: a typical clip (tens of steps) reads in one or two chunks.
_CHUNK_ROWS = 64
_FLUSH_ROWS = 8192


class StoreError(ValueError):
    """A store file that is missing, incomplete or not a moviefib feature store."""


@dataclass(frozen=True)
class ClipFeatures:
    """The features of one clip.

    Attributes:
        features: float16 ``[T, D]``, one row per step (frame or window).
        timestamps: float64 ``[T]``, seconds from the clip start of the centre of each step.
    """

    features: np.ndarray
    timestamps: np.ndarray


@dataclass(frozen=True)
class ClipRecord:
    """How one clip's features came to be (store format 2).

    Attributes:
        source: the identity of the video file the clip was decoded from, or None when unknown.
        partial: True when the clip decoded clearly short of its expected length and was kept anyway.
        decoded: seconds decoded (first frame to end of last), or None.
        expected: seconds it should last (its clip id, segment or header), or None.
    """

    source: SourceIdentity | None = None
    partial: bool = False
    decoded: float | None = None
    expected: float | None = None


_RECORD_COLUMNS = ("source_size", "source_mtime_ns", "source_digest", "partial", "decoded", "expected")


def _record_row(r: ClipRecord | None) -> tuple:
    r = r or ClipRecord()
    src = r.source
    return (src.size if src else -1, src.mtime_ns if src else 0, src.digest if src else "", int(r.partial),
            np.nan if r.decoded is None else r.decoded, np.nan if r.expected is None else r.expected)


def _records_from_columns(cols: dict) -> list[ClipRecord]:
    def seconds(x) -> float | None:
        return None if np.isnan(x) else float(x)

    out = []
    for size, mtime, digest, partial, decoded, expected in zip(*(cols[c] for c in _RECORD_COLUMNS)):
        digest = digest.decode("utf-8") if isinstance(digest, bytes) else str(digest)
        src = SourceIdentity(int(size), int(mtime), digest) if size >= 0 else None
        out.append(ClipRecord(src, bool(partial), seconds(decoded), seconds(expected)))
    return out


def _check_item(clip_id: str, features: np.ndarray, timestamps: np.ndarray,
                dim: int | None) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(clip_id, str) or not clip_id:
        raise ValueError(f"clip id must be a non-empty string, got {clip_id!r}")
    features = np.asarray(features)
    timestamps = np.asarray(timestamps, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"clip {clip_id}: features must be [T, D] with T >= 1, got shape {features.shape}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"clip {clip_id}: feature size {features.shape[1]} differs from the store's {dim}")
    if timestamps.shape != (features.shape[0],):
        raise ValueError(f"clip {clip_id}: {timestamps.shape[0] if timestamps.ndim else 0} timestamps "
                         f"for {features.shape[0]} steps")
    with np.errstate(over="ignore"):  # overflow is reported below, as a clear error
        f16 = features.astype(np.float16)
    if not np.all(np.isfinite(f16)):
        raise ValueError(f"clip {clip_id}: features contain NaN/inf (or overflow float16)")
    return f16, timestamps


class _Writer:
    """Appends clips to an open HDF5 file with the store layout (used by write/merge)."""

    def __init__(self, h5, provenance: dict):
        self.h5 = h5
        self.provenance = dict(provenance)
        self.dim: int | None = None
        self.clip_ids: list[str] = []
        self.seen: set[str] = set()
        self.offsets = [0]
        self.records: list[tuple] = []
        self._buf_f: list[np.ndarray] = []
        self._buf_t: list[np.ndarray] = []
        self._buffered = 0

    def add(self, clip_id: str, features: np.ndarray, timestamps: np.ndarray,
            record: ClipRecord | None = None) -> None:
        if clip_id in self.seen:
            raise ValueError(f"clip {clip_id} written twice")
        f16, ts = _check_item(clip_id, features, timestamps, self.dim)
        if self.dim is None:
            self.dim = f16.shape[1]
            want = self.provenance.get("dim")
            if want is not None and int(want) != self.dim:
                raise ValueError(f"provenance says dim {want} but clip {clip_id} has {self.dim}")
            self.h5.create_dataset("features", shape=(0, self.dim), maxshape=(None, self.dim),
                                   dtype=np.float16, chunks=(_CHUNK_ROWS, self.dim))
            self.h5.create_dataset("timestamps", shape=(0,), maxshape=(None,), dtype=np.float64,
                                   chunks=(_CHUNK_ROWS * 16,))
        self._buf_f.append(f16)
        self._buf_t.append(ts)
        self._buffered += f16.shape[0]
        self.offsets.append(self.offsets[-1] + f16.shape[0])
        self.clip_ids.append(clip_id)
        self.records.append(_record_row(record))
        self.seen.add(clip_id)
        if self._buffered >= _FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        # Resizing an HDF5 dataset per clip is slow for 100k clips: append in blocks.
        if not self._buffered:
            return
        n1 = self.offsets[-1]
        n0 = n1 - self._buffered
        for name, buf in (("features", self._buf_f), ("timestamps", self._buf_t)):
            self.h5[name].resize(n1, axis=0)
            self.h5[name][n0:n1] = np.concatenate(buf)
            buf.clear()
        self._buffered = 0

    def finish(self) -> int:
        import h5py

        if self.dim is None:
            raise ValueError("no clips to write: a feature store needs at least one clip")
        self._flush()
        self.h5.create_dataset("clip_ids", data=np.array(self.clip_ids, dtype=object),
                               dtype=h5py.string_dtype("utf-8"))
        self.h5.create_dataset("offsets", data=np.asarray(self.offsets, dtype=np.int64))
        group = self.h5.create_group("records")
        dtypes = (np.int64, np.int64, h5py.string_dtype("utf-8"), np.uint8, np.float64, np.float64)
        for name, dtype, column in zip(_RECORD_COLUMNS, dtypes, zip(*self.records)):
            data = np.array(column, dtype=object) if name == "source_digest" else np.asarray(column, dtype)
            group.create_dataset(name, data=data, dtype=dtype)
        self.provenance["dim"] = self.dim
        attrs = self.h5.attrs
        attrs["format"] = FORMAT
        attrs["format_version"] = FORMAT_VERSION
        attrs["dim"] = self.dim
        attrs["num_clips"] = len(self.clip_ids)
        attrs["provenance"] = json.dumps(self.provenance, sort_keys=True, default=str)
        attrs["complete"] = True
        return len(self.clip_ids)


def _atomic_h5(path: Path, fill) -> int:
    """Create ``path`` through a temp file in the same folder: ``fill(h5file)`` then rename."""
    import h5py

    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as h5:
            n = fill(h5)
    return n


def write_store(path: str | os.PathLike, items: Iterable[tuple[str, np.ndarray, np.ndarray]],
                provenance: dict) -> int:
    """Write ``(clip_id, features [T, D], timestamps [T])`` items as a store at ``path``, atomically.

    An item may carry a fourth element, its :class:`ClipRecord` (or None). Features are stored as float16;
    ``provenance`` (JSON-serialisable) gets ``dim`` added. Raises ValueError on a duplicate clip id, an empty clip,
    inconsistent sizes or non-finite values (nothing is written then). Returns the number of clips written.
    """

    def fill(h5) -> int:
        w = _Writer(h5, provenance)
        for item in items:
            w.add(*item)
        return w.finish()

    n = _atomic_h5(Path(path), fill)
    log.info("wrote %d clips to %s", n, path)
    return n


class FeatureStore:
    """Read access to a store file; see :func:`open_store`.

    Attributes:
        path: the store file.
        dim: the feature size D.
        provenance: how the features were made (extractor, weights, sampling, versions...).

    :meth:`get` reads one clip from the file. Training that reads every clip each epoch holds the
    features it needs in memory instead (:mod:`moviefib.training.resident`), reading them once with
    :meth:`read_rows`.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._h5 = None
        self._pid: int | None = None
        self._ids: list[str] = []
        self._index: dict[str, int] = {}
        self._offsets: np.ndarray = np.zeros(1, dtype=np.int64)
        self._records: list[ClipRecord | None] | None = None  # read on the first record() call
        h5 = self._file()  # validate now, so a bad path fails at open_store, not in a worker
        self.dim = int(h5.attrs["dim"])
        self.provenance = json.loads(h5.attrs["provenance"])

    def _file(self):
        import h5py

        if self._h5 is not None and self._pid == os.getpid():
            return self._h5
        # A handle inherited through fork is not safe to use: reopen in this process.
        if self.path.is_dir():
            raise StoreError(f"{self.path}: is a directory, not a feature store")
        if not self.path.is_file():
            from ..video import special_file_kind

            kind = special_file_kind(self.path.stat().st_mode) if self.path.exists() else None
            raise StoreError(f"{self.path}: {kind}, not a feature store" if kind else
                             f"{self.path}: no such feature store")
        try:
            h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path}: not a readable HDF5 file ({exc})") from None
        attrs = h5.attrs
        if attrs.get("format") != FORMAT:
            h5.close()
            raise StoreError(f"{self.path}: not a moviefib feature store (format attribute missing)")
        if int(attrs.get("format_version", -1)) > FORMAT_VERSION:
            h5.close()
            raise StoreError(f"{self.path}: store format version {attrs['format_version']} is newer "
                             f"than this moviefib reads ({FORMAT_VERSION})")
        if not bool(attrs.get("complete", False)):
            h5.close()
            raise StoreError(f"{self.path}: incomplete feature store (writing did not finish)")
        try:
            self._ids = [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in h5["clip_ids"][()]]
            self._offsets = h5["offsets"][()]
            problem = _layout_problem(h5, self._ids, self._offsets)
        except (KeyError, OSError, TypeError, ValueError) as exc:  # a dataset missing or unreadable
            problem = f"unreadable layout ({type(exc).__name__}: {exc})"
        if problem is not None:
            h5.close()
            raise StoreError(f"{self.path}: damaged feature store: {problem}")
        self._index = {c: i for i, c in enumerate(self._ids)}
        self._h5, self._pid = h5, os.getpid()
        return h5

    def offsets(self) -> np.ndarray:
        """int64 ``[C + 1]``: clip ``i`` of :meth:`clip_ids` owns rows ``offsets[i]:offsets[i + 1]``."""
        self._file()
        return self._offsets.copy()

    def read_rows(self, start: int, stop: int) -> ClipFeatures:
        """Rows ``start:stop`` of the whole store (several clips at once, see :meth:`offsets`), checked
        finite like :meth:`get`: StoreError naming the first clip with a NaN or infinite value."""
        h5 = self._file()
        got = ClipFeatures(features=h5["features"][start:stop], timestamps=h5["timestamps"][start:stop])
        bad = _bad_rows(got)
        if bad is not None:
            row, why = bad
            clip = self._ids[int(np.searchsorted(self._offsets, start + row, side="right")) - 1]
            raise StoreError(f"{self.path}: {why.format(clip=clip)}")
        return got

    def clip_ids(self) -> list[str]:
        """The clip ids, in storage order."""
        self._file()
        return list(self._ids)

    def __contains__(self, clip_id: object) -> bool:
        self._file()
        return clip_id in self._index

    def __len__(self) -> int:
        self._file()
        return len(self._ids)

    def __iter__(self) -> Iterator[str]:
        return iter(self.clip_ids())

    def get(self, clip_id: str) -> ClipFeatures:
        """The features of one clip; KeyError naming the clip and the store when absent."""
        h5 = self._file()
        i = self._index.get(clip_id)
        if i is None:
            raise KeyError(f"clip {clip_id!r} not in feature store {self.path}")
        a, b = int(self._offsets[i]), int(self._offsets[i + 1])
        got = ClipFeatures(features=h5["features"][a:b], timestamps=h5["timestamps"][a:b])
        # The writer refuses non-finite values; a store damaged or written elsewhere is checked on read,
        # so that NaN never reaches a model (training ran on them, exit 0).
        bad = _bad_rows(got)
        if bad is not None:
            raise StoreError(f"{self.path}: {bad[1].format(clip=clip_id)}")
        return got

    def record(self, clip_id: str) -> ClipRecord | None:
        """How the clip was made (source file, partial); None in a version-1 store. KeyError if absent."""
        self._file()
        i = self._index.get(clip_id)
        if i is None:
            raise KeyError(f"clip {clip_id!r} not in feature store {self.path}")
        return self._all_records()[i]

    def partial_ids(self) -> list[str]:
        """The clips kept although they decoded clearly short (``--allow-partial``), in storage order."""
        self._file()
        return [c for c, r in zip(self._ids, self._all_records()) if r is not None and r.partial]

    def _all_records(self) -> list[ClipRecord | None]:
        if self._records is None:
            h5 = self._file()
            if "records" in h5:
                self._records = _records_from_columns({c: h5["records"][c][()] for c in _RECORD_COLUMNS})
            else:  # format version 1
                self._records = [None] * len(self._ids)
        return self._records

    def items(self, *, records: bool = False) -> Iterator[tuple]:
        """``(clip_id, features, timestamps)`` for every clip, in storage order (``records``: with the
        clip's :class:`ClipRecord` or None as a fourth element)."""
        for c in self.clip_ids():
            cf = self.get(c)
            yield (c, cf.features, cf.timestamps, self.record(c)) if records else (c, cf.features, cf.timestamps)

    def close(self) -> None:
        if self._h5 is not None and self._pid == os.getpid():
            self._h5.close()
        self._h5, self._pid = None, None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_h5"], state["_pid"] = None, None
        return state

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, clips={len(self._ids)}, dim={self.dim})"


_FLOAT16_MAX = float(np.finfo(np.float16).max)


def _bad_rows(got: ClipFeatures) -> tuple[int, str] | None:
    """The first row (of ``got``) that no model may read, and why (``{clip}`` to fill in): a NaN or
    infinite value, or, in a store of wider floats written elsewhere, a value beyond float16's range
    (65504), which both data paths, holding features as float16 as the writer does, would turn into
    infinity."""
    feats = got.features
    bad = ~np.isfinite(feats).all(axis=1) | ~np.isfinite(got.timestamps)
    if bad.any():
        return int(np.flatnonzero(bad)[0]), "damaged feature store: clip {clip} holds NaN or infinite values"
    if feats.dtype != np.float16 and feats.size:
        wide = (np.abs(feats) > _FLOAT16_MAX).any(axis=1)
        if wide.any():
            return int(np.flatnonzero(wide)[0]), ("clip {clip} holds values beyond float16's range (|x| > 65504), "
                                                  "which training, holding features as float16, reads as infinity")
    return None


def _layout_problem(h5, ids: list[str], offsets: np.ndarray) -> str | None:
    """What is wrong with the datasets' shapes (sizes only, no feature is read), or None.

    The writer makes them consistent; a store edited or written by another tool may not be, and then
    clips read empty (a traceback in training), past the end (silently fewer steps) or twice."""
    feats, ts, dim = h5["features"], h5["timestamps"], int(h5.attrs["dim"])
    if feats.ndim != 2 or feats.shape[1] != dim or dim < 1:
        return f"features of shape {feats.shape}, its dim attribute says {dim}"
    if feats.dtype.kind != "f" or ts.dtype.kind != "f":
        return f"features of type {feats.dtype} and timestamps of type {ts.dtype}, not floating point"
    if ts.shape != (feats.shape[0],):
        return f"{ts.shape[0] if ts.ndim == 1 else ts.shape} timestamps for {feats.shape[0]} feature rows"
    if offsets.shape != (len(ids) + 1,):
        return f"{offsets.size} offsets for {len(ids)} clips"
    if offsets[0] != 0 or offsets[-1] != feats.shape[0]:
        return f"offsets run from {offsets[0]} to {offsets[-1]}, not over the {feats.shape[0]} feature rows"
    empty = np.flatnonzero(np.diff(offsets) <= 0)
    if empty.size:
        return f"clip {ids[int(empty[0])]} has no steps (offsets not increasing)"
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(c for c in ids if c in seen or seen.add(c))
        return f"clip {dup} is listed twice"
    return None


def open_store(path: str | os.PathLike) -> FeatureStore:
    """Open a feature store for reading. Raises :class:`StoreError` naming the file and the reason."""
    return FeatureStore(path)


# Provenance keys that legitimately differ between the shards of one extraction run.
_SHARD_KEYS = ("shard", "num_clips_requested", "created")


def merge_stores(path: str | os.PathLike, inputs: Iterable[str | os.PathLike]) -> int:
    """Merge stores made with the same settings (e.g. shards) into one store at ``path``, atomically.

    The provenance of all inputs must agree except for per-shard keys (shard, counts, times); a clip
    present in several inputs must be identical in each and is written once. Returns the number of clips.
    """
    stores = [open_store(p) for p in inputs]
    if not stores:
        raise ValueError("nothing to merge")
    try:
        base = {k: v for k, v in stores[0].provenance.items() if k not in _SHARD_KEYS}
        for s in stores[1:]:
            other = {k: v for k, v in s.provenance.items() if k not in _SHARD_KEYS}
            if other != base:
                diff = sorted(k for k in set(base) | set(other) if base.get(k) != other.get(k))
                raise ValueError(f"cannot merge {s.path} with {stores[0].path}: provenance differs "
                                 f"in {', '.join(diff)}")
        prov = dict(base)
        prov["merged_from"] = [str(s.path) for s in stores]

        def fill(h5) -> int:
            w = _Writer(h5, prov)
            for s in stores:
                for clip_id, feats, ts, record in s.items(records=True):
                    if clip_id in w.seen:
                        # Only compare, never pick one silently: different values mean a mixed-up run.
                        first = next(t for t in stores if clip_id in t and t is not s)
                        prev = first.get(clip_id)
                        if not (np.array_equal(prev.features, feats)
                                and np.array_equal(prev.timestamps, ts)):
                            raise ValueError(f"clip {clip_id} differs between {first.path} and {s.path}")
                        continue
                    w.add(clip_id, feats, ts, record)
            return w.finish()

        n = _atomic_h5(Path(path), fill)
    finally:
        for s in stores:
            s.close()
    log.info("merged %d stores into %s (%d clips)", len(stores), path, n)
    return n
