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
    """``clip_id -> ClipSource`` for the clips of ``questions`` (the layout of
    :func:`moviefib.features.sources.clips_from_lsmdc`); ValueError for a video root that is not a folder
    or an id that would leave it."""
    from ..features.sources import sources_of_rows

    root = Path(video_root)
    if not root.is_dir():
        raise ValueError(f"video root {root}: {'not a folder' if root.exists() else 'no such folder'}")
    rows = ((q.clip_id, q.start, q.end) for q in questions)
    return {c.clip_id: c for c in sources_of_rows(rows, root, movies=movies)}
