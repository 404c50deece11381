"""The questions shown to annotators: one split of a dataset folder, or a seeded sample of it."""

from __future__ import annotations

import logging
import math
import os
import random
from dataclasses import dataclass

from ..formats import BLANK, id_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HumanQuestion:
    """One blanked question as the page shows it (never its answer).

    Attributes:
        question_id: the dataset's question id (the key of an answer record).
        clip_id: the clip whose video goes with the question.
        sentence_id: groups the blanks of one sentence; an annotator sees at most one of them.
        before: the question text left of the blank (may end inside a word: a kept release quirk).
        after: the question text right of the blank.
        clip_seconds: how long the clip should last (``end_extracted - start_extracted`` of the
            dataset), or None when the dataset does not say; video mode refuses a clip decoded shorter.
    """

    question_id: str
    clip_id: str
    sentence_id: str
    before: str
    after: str
    clip_seconds: float | None = None


class QuestionError(ValueError):
    """A split that cannot be shown: missing columns, a question without its blank, a bad sample size."""


def _id_problem(qid: object, clip: object, sid: object) -> str | None:
    """Why a row's ids cannot be served: question ids go into URLs, clip ids become file paths."""
    for name, value in (("question_id", qid), ("clip_id", clip), ("sentence_id", sid)):
        if not isinstance(value, str):
            return f"{name} must be text, not {type(value).__name__}"
    # Generic corpora made with --folder keep '/' in clip ids; never in question ids (a URL part).
    return id_problem(qid) or id_problem(clip, allow_slash=True)


def _clip_seconds(start: object, end: object) -> float | None:
    """The clip's expected length from its extracted times, or None when they do not give one."""
    if not all(isinstance(t, (int, float)) and math.isfinite(t) for t in (start, end)) or end <= start:
        return None
    return float(end) - float(start)


def _from_rows(ids, clips, sentences, questions, starts, ends, source: str) -> list[HumanQuestion]:
    out = []
    seen: set[str] = set()
    no_blank = 0
    for row, (qid, clip, sid, text, start, end) in enumerate(
            zip(ids, clips, sentences, questions, starts, ends)):
        problem = _id_problem(qid, clip, sid)
        if problem:
            raise QuestionError(f"{source}: row {row}: {problem}")
        if qid in seen:
            raise QuestionError(f"{source}: row {row}: duplicate question_id {qid!r}")
        seen.add(qid)
        if isinstance(text, str) and BLANK not in text:
            no_blank += 1  # an official row whose FILL_IN lost its blank: nothing for a person to fill
            continue
        if not isinstance(text, str) or text.count(BLANK) != 1:
            raise QuestionError(f"{source}: row {row} (question {qid}): question must contain exactly "
                                f"one blank {BLANK!r}")
        before, after = text.split(BLANK)
        out.append(HumanQuestion(qid, clip, sid, before, after, _clip_seconds(start, end)))
    if no_blank:
        log.warning("%s: %d questions without a blank %r (a quirk of the official release) are not shown",
                    source, no_blank, BLANK)
    return out


def load_questions(dataset: str | os.PathLike, split: str, *, seed: int = 0) -> list[HumanQuestion]:
    """All questions of ``split``, in the order annotators get them.

    The order is a permutation drawn with ``seed``, so consecutive questions rarely share a clip and
    every annotator gets the same sequence.

    Raises ``moviefib.dataset.DatasetError`` for a missing folder or split, :class:`QuestionError` for
    a table that cannot be shown (missing columns, bad ids, a question without its blank).
    """
    from ..dataset import read_table

    table = read_table(dataset, split)
    source = f"{dataset}/data/{split}.parquet"
    needed = ("question_id", "clip_id", "sentence_id", "question")
    missing = [c for c in needed if c not in table.column_names]
    if missing:
        raise QuestionError(f"{source}: lacks column(s) {', '.join(missing)}")
    # The extracted times give each clip's expected length; a corpus without them is not checked.
    times = [table.column(c).to_pylist() if c in table.column_names else [None] * table.num_rows
             for c in ("start_extracted", "end_extracted")]
    questions = _from_rows(*(table.column(c).to_pylist() for c in needed), *times, source=source)
    if not questions:
        raise QuestionError(f"{source}: no questions")
    random.Random(seed).shuffle(questions)
    return questions


def sample_questions(questions: list[HumanQuestion], n: int) -> list[HumanQuestion]:
    """The first ``n`` questions of distinct sentences, in order.

    One per sentence, so that every annotator can answer the whole sample under the
    one-blank-per-sentence rule. Drawn from the seeded order of :func:`load_questions`, this is a
    seeded random sample.
    """
    if n < 1:
        raise QuestionError(f"sample size must be at least 1, not {n}")
    picked, sentences = [], set()
    for q in questions:
        if q.sentence_id not in sentences:
            sentences.add(q.sentence_id)
            picked.append(q)
            if len(picked) == n:
                break
    if len(picked) < n:
        raise QuestionError(f"cannot sample {n} questions of distinct sentences: the split has "
                            f"{len(sentences)} sentences")
    log.info("sampled %d of %d questions", n, len(questions))
    return picked
