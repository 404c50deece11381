"""video_features' layout beside the store: per-clip ``<clip>_<key>.npy`` files, exported from a store
and imported into one."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..fileio import atomic_output, contained_path
from .store import open_store, write_store


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
