"""The questions of a split and where their clips are, as ``moviefib features extract --clips`` finds them.

Clip files: ``<video_root>/<movie>/<clip_id>.avi`` (the LSMDC layout). Whole movies (``movies``):
``<video_root>/<movie>.<ext>`` for the first extension of
:data:`~moviefib.features.pipeline.VIDEO_SUFFIXES` present, cut at the clip's extracted start/end.
Paths made from ids go through :func:`moviefib.fileio.contained_path`: an id that would name a file
outside the video root is refused (ValueError naming the clip), never opened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

COLUMNS = ("question_id", "clip_id", "question", "start_extracted", "end_extracted")


@dataclass(frozen=True)
class Question:
    """One question of a split: its id, clip, blanked sentence and the clip's extracted times (s)."""

    question_id: str
    clip_id: str
    question: str
    start: float
    end: float


def read_questions(dataset: str | os.PathLike, split: str) -> list[Question]:
    """The questions of ``split`` in table order; DatasetError for a missing folder, split or column."""
    from ..dataset import DatasetError, read_table
    from ..schema import column_problems

    table = read_table(dataset, split)
    absent = [c for c in COLUMNS if c not in table.column_names]
    problems = [f"no column {c!r}" for c in absent] or column_problems(table, COLUMNS)
    if problems:
        raise DatasetError(f"{dataset}: split {split!r}: {problems[0]}")
    cols = [table.column(c).to_pylist() for c in COLUMNS]
    questions = [Question(*row) for row in zip(*cols)]
    if not questions:
        raise DatasetError(f"{dataset}: split {split!r} holds no question")
    return questions


def clip_sources(questions: list[Question], video_root: str | os.PathLike, *, movies: bool) -> dict:
    """``clip_id -> ClipSource`` for the clips of ``questions``; ValueError for a video root that is not
    a folder or an id that would leave it."""
    from ..features.pipeline import VIDEO_SUFFIXES, ClipSource
    from ..formats import movie_of
    from ..video import Segment

    root = Path(video_root)
    if not root.is_dir():
        raise ValueError(f"video root {root}: {'not a folder' if root.exists() else 'no such folder'}")
    sources: dict = {}
    movie_files: dict[str, str] = {}
    for q in questions:
        if q.clip_id in sources:
            continue
        movie = movie_of(q.clip_id)
        if not movies:
            path = _under_root(root, f"{movie}/{q.clip_id}.avi", q.clip_id)
            sources[q.clip_id] = ClipSource(q.clip_id, str(path), expected_duration=q.end - q.start)
            continue
        if movie not in movie_files:
            found = [p for p in (_under_root(root, f"{movie}{s}", q.clip_id) for s in VIDEO_SUFFIXES)
                     if os.path.lexists(p)]
            movie_files[movie] = str(found[0] if found else root / f"{movie}.avi")
        sources[q.clip_id] = ClipSource(q.clip_id, movie_files[movie], Segment(q.start, q.end),
                                        expected_duration=q.end - q.start)
    return sources


def _under_root(root: Path, relative: str, clip_id: str) -> Path:
    from ..fileio import PathEscapeError, contained_path
    from ..formats import id_problem

    problem = id_problem(clip_id)
    if problem is None:
        try:
            return contained_path(root, relative)
        except PathEscapeError as exc:
            problem = str(exc)
    raise ValueError(f"clip {clip_id!r}: {problem}; refusing to read a video outside {root}")
