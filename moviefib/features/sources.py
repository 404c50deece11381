"""Where extraction's clips come from: a folder of videos, or the rows of an LSMDC file or a dataset
folder over a tree of clip files or whole movies; the clip list of one shard and its store file.

Sharding: ``shard=(i, n)`` (0-based i) processes every n-th clip of the sorted clip list and writes
``<stem>.shard-<i>-of-<n><suffix>``; :func:`moviefib.features.store.merge_stores` joins the shards.
Under ``torchrun`` the shard comes from the launch (:func:`shard_from_env`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..fileio import PathEscapeError, contained_path
from ..video import Segment, special_file_kind
from .outcome import LOGGER, Failure

log = logging.getLogger(LOGGER)

VIDEO_SUFFIXES = (".avi", ".mp4", ".mkv", ".mpg", ".mpeg", ".mov", ".webm", ".m4v")
_ROW_COLUMNS = ("clip_id", "start_extracted", "end_extracted")


@dataclass(frozen=True)
class ClipSource:
    """Where one clip's frames come from.

    Attributes:
        clip_id: the key in the feature store (an LSMDC clip id, or a file's relative path stem).
        path: the video file: a clip file, or a whole movie when ``segment`` is set.
        segment: the part of the movie that is the clip (seconds on the movie's time line), or None.
        expected_duration: seconds the clip should last (an LSMDC row's extracted end - start), or
            None: a clip file's header is the only other guide then (see :mod:`moviefib.features.pipeline`).
    """

    clip_id: str
    path: str
    segment: Segment | None = None
    expected_duration: float | None = None


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


def _dataset_rows(folder: Path) -> list[tuple[str, float, float]]:
    """(clip_id, start_extracted, end_extracted) of every question of a dataset folder, split by split."""
    from ..dataset import DatasetError, available_splits, read_table
    from ..schema import DATA_DIR

    try:
        splits = available_splits(folder)
    except DatasetError:  # no data/ inside: said as below, the words the command has always used
        splits = []
    if not splits:
        raise FileNotFoundError(f"{folder}: not a dataset folder (no {DATA_DIR}/*.parquet)")
    rows = []
    for split in splits:
        table = read_table(folder, split, columns=_ROW_COLUMNS)
        rows += zip(*(table.column(c).to_pylist() for c in _ROW_COLUMNS))
    return rows


def _clip_rows(source: Path) -> list[tuple[str, float, float]]:
    """(clip_id, start_extracted, end_extracted) of every row of an LSMDC file or a dataset folder."""
    if source.is_dir():
        return _dataset_rows(source)
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
    return sources_of_rows(_clip_rows(Path(source)), video_root, movies=movies, where=source)


def sources_of_rows(rows: Iterable[tuple[str, float, float]], video_root: str | os.PathLike, *,
                    movies: bool = False, where=None) -> list[ClipSource]:
    """The distinct clips of ``(clip_id, start_extracted, end_extracted)`` rows, in first-seen order, laid
    out as :func:`clips_from_lsmdc` says; ``where`` (the rows' file) starts the error of an id that could
    leave ``video_root``."""
    from ..formats import movie_of

    root = Path(video_root)
    seen: dict[str, ClipSource] = {}
    movie_files: dict[str, str] = {}
    for clip_id, start, end in rows:
        if clip_id in seen:
            continue
        movie = movie_of(clip_id)
        expected = float(end) - float(start)
        if not movies:
            path = _under_root(where, root, f"{movie}/{clip_id}.avi", clip_id)
            seen[clip_id] = ClipSource(clip_id, str(path), expected_duration=expected)
            continue
        if movie not in movie_files:
            # Any entry under the name (a broken link, a pipe, a folder): the decoder says what is wrong
            # with it, rather than "no such file" about a .avi that was never there.
            found = [p for p in (_under_root(where, root, f"{movie}{s}", clip_id) for s in VIDEO_SUFFIXES)
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
    prefix = f"{source}: " if source is not None else ""
    raise ValueError(f"{prefix}clip {clip_id!r}: {problem}; refusing to read a video outside {root}")


def shard_from_env(environ=None) -> tuple[int, int] | None:
    """``(RANK, WORLD_SIZE)`` when run under torchrun (WORLD_SIZE > 1), else None; read by
    :func:`moviefib.distributed.distributed_env` from ``environ`` (default ``os.environ``)."""
    from ..distributed import distributed_env

    env = distributed_env(environ)
    return (env.rank, env.world) if env.distributed else None


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


def shard_clips(clips: Iterable[ClipSource], shard: tuple[int, int] | None) -> list[ClipSource]:
    """The clips of one shard: every n-th of the distinct clips sorted by id (all of them without a
    shard). ValueError when one id names two different sources."""
    seen: dict[str, ClipSource] = {}
    for c in clips:
        if c.clip_id in seen and seen[c.clip_id] != c:
            raise ValueError(f"clip id {c.clip_id!r} names two different sources: "
                             f"{seen[c.clip_id].path} and {c.path}")
        seen.setdefault(c.clip_id, c)
    ordered = sorted(seen.values(), key=lambda c: c.clip_id)
    if shard is None:
        return ordered
    i, n = shard
    return ordered[i::n]


def precheck(todo: list[ClipSource]) -> tuple[list[Failure], list[ClipSource]]:
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
