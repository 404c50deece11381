"""Crash safety: the staging folder of an output, resuming from it and from an existing store, and
packing both into the store (see :mod:`moviefib.features.pipeline` for the whole story).

Finished clips are written every few seconds as a *staged file* in ``<out>.staging/`` (a ``.npz``
written under a temporary name, synced and renamed: a staged file exists whole or not at all), next to
``run.json`` (the settings) and ``manifest.json`` (the staged files and their clips, rewritten
atomically). At the end everything is packed into the HDF5 store ``<out>`` (written to a temporary
name, then renamed) and the staging folder is removed.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..fileio import atomic_output, atomic_write
from ..integrity import SourceIdentity, current_identity, source_identity
from .outcome import LOGGER
from .provenance import OtherSettingsError, settings_diff, settings_fingerprint
from .sources import ClipSource
from .store import ClipRecord, StoreError, open_store, write_store

log = logging.getLogger(LOGGER)


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


class Staging:
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
                raise OtherSettingsError(
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


def resume(out: Path, fingerprint: dict, *, overwrite: bool) -> tuple[Staging, dict[str, ClipRecord | None]]:
    """The staging folder of ``out`` and the clips earlier runs finished (staged, or packed in ``out``),
    with their records (None: made before records existed).

    Raises :class:`OtherSettingsError` when they were made with other settings (unless ``overwrite``).
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
            diff = settings_diff(settings_fingerprint(existing.provenance), fingerprint)
            if diff:
                raise OtherSettingsError(f"{out} holds features made with other settings ({diff}); pass "
                                 f"overwrite (--overwrite) or choose another output")
            packed = {c: existing.record(c) for c in existing.clip_ids()}
    staging = Staging(out, fingerprint, overwrite=overwrite)
    return staging, {**packed, **staging.done()}  # a clip staged and packed: the staged one is newer


def pack(out: Path, staging: Staging, prov: dict, total: int, overwrite: bool, *,
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


def changed_sources(clips: list[ClipSource], done: dict[str, ClipRecord | None]
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
