"""Who may see which question next, derived from the human-answer file alone (so a restart resumes).

The rules, per annotator, over both modes and all records of the file:

* one blank per sentence: once a question of a sentence has been seen (answered or skipped, in any
  mode), no other question of that sentence is shown, since each blank gives the other words away;
* text after video is forbidden: a question seen with its clip is never asked again in ``text`` mode
  (the clip would have told the answer); the reverse, the same question in ``video`` mode after
  ``text`` mode, is the paper's protocol and is allowed;
* a question is answered at most once per mode;
* in video mode, a question whose clip cannot be served whole (:meth:`AnnotationSession.clip_unavailable`)
  is left out for everyone; it is never recorded, so it cannot count as seen.

Annotators get the questions in the one order of :func:`moviefib.human.questions.load_questions`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .answers import MODES, AnswerLog, HumanAnswer, InvalidInput, clean_annotator, clean_answer, clean_seconds
from .questions import HumanQuestion

log = logging.getLogger(__name__)


@dataclass
class _Seen:
    """What one annotator has seen: question id -> modes, and sentence id -> question ids."""

    modes: dict[str, set[str]] = field(default_factory=dict)
    sentences: dict[str, set[str]] = field(default_factory=dict)
    answered: int = 0  # records of the served mode on the served questions
    cursor: int = 0  # every question before it is no longer eligible (eligibility only shrinks)


@dataclass(frozen=True)
class Progress:
    """An annotator's progress in the served mode.

    Attributes:
        done: questions answered or skipped in this mode.
        remaining: questions still to come for this annotator in this mode (one per sentence that
            still has an eligible question).
    """

    done: int
    remaining: int


class Conflict(InvalidInput):
    """An answer the protocol refuses (already answered, another blank of a seen sentence...)."""


class AnnotationSession:
    """The served question set, the mode and the answer file, shared by all annotators.

    ``split_questions`` (default: ``questions``) are all the questions of the split when only a
    sample is served: an answer recorded under another sample still closes its sentence.
    """

    def __init__(self, questions: list[HumanQuestion], mode: str, answers_path: str | os.PathLike, *,
                 split_questions: list[HumanQuestion] | None = None):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.questions = questions
        self.mode = mode
        self._by_id = {q.question_id: q for q in questions}
        self._sentence_of = {q.question_id: q.sentence_id for q in (split_questions or questions)}
        self._sentence_of.update((q.question_id, q.sentence_id) for q in questions)
        self._served_sentences = {q.sentence_id for q in questions}
        self._unavailable_clips: set[str] = set()
        self._dead_sentences: set[str] = set()  # served sentences whose clip is unavailable
        self._seen: dict[str, _Seen] = {}
        self._unknown = 0
        self.log = AnswerLog(answers_path, self._observe)
        if self._unknown:
            log.info("%s: %d record(s) are about questions of another split; they are ignored",
                     answers_path, self._unknown)

    def question(self, question_id: str) -> HumanQuestion | None:
        """The served question with this id, or None."""
        return self._by_id.get(question_id)

    def clip_unavailable(self, clip_id: str) -> None:
        """Leave out every question of a clip that cannot be served (cut short, undecodable...)."""
        with self.log.transaction():
            self._unavailable_clips.add(clip_id)
            self._dead_sentences.update(q.sentence_id for q in self.questions if q.clip_id == clip_id)

    def _observe(self, records: list[HumanAnswer]) -> None:
        for r in records:
            sentence = self._sentence_of.get(r.question_id)
            if sentence is None:
                self._unknown += 1
                continue
            seen = self._seen.setdefault(r.annotator, _Seen())
            seen.modes.setdefault(r.question_id, set()).add(r.mode)
            seen.sentences.setdefault(sentence, set()).add(r.question_id)
            if r.mode == self.mode and r.question_id in self._by_id:
                seen.answered += 1

    def _refusal(self, seen: _Seen, q: HumanQuestion) -> str | None:
        """Why ``q`` may not be shown to this annotator in the served mode, or None."""
        if q.clip_id in self._unavailable_clips:
            return "This question's clip is not available."
        modes = seen.modes.get(q.question_id, ())
        if self.mode in modes:
            return "You have already answered this question."
        if self.mode == "text" and "video" in modes:
            return "You have seen this question with its video; it cannot be asked without it."
        if seen.sentences.get(q.sentence_id, set()) - {q.question_id}:
            return "You have seen another blank of this sentence."
        return None

    def _next(self, seen: _Seen) -> tuple[HumanQuestion | None, int]:
        while seen.cursor < len(self.questions) and self._refusal(seen, self.questions[seen.cursor]):
            seen.cursor += 1
        nxt = self.questions[seen.cursor] if seen.cursor < len(self.questions) else None
        return nxt, self._remaining(seen)

    def _remaining(self, seen: _Seen) -> int:
        """Questions still to come: one per sentence that has an eligible question.

        Only sentences the annotator has touched can be closed (O(answers), not O(questions)): one
        with two blanks seen is closed, one with a single blank seen stays open only for that blank,
        if it is served and still allowed in this mode. Sentences of unavailable clips are closed
        for everyone.
        """
        closed = 0
        for sentence, qids in seen.sentences.items():
            if sentence in self._served_sentences:
                q = self._by_id.get(next(iter(qids))) if len(qids) == 1 else None
                closed += q is None or self._refusal(seen, q) is not None
        closed += sum(1 for s in self._dead_sentences if s not in seen.sentences)
        return len(self._served_sentences) - closed

    def next_question(self, annotator: str) -> tuple[HumanQuestion | None, Progress]:
        """The question to show ``annotator`` now (None when they are done) and their progress."""
        annotator = clean_annotator(annotator)
        with self.log.transaction():
            seen = self._seen.setdefault(annotator, _Seen())
            q, remaining = self._next(seen)
            return q, Progress(seen.answered, remaining)

    def following(self, annotator: str, question: HumanQuestion) -> HumanQuestion | None:
        """The question ``annotator`` will get after ``question`` (answered or skipped), to prefetch."""
        annotator = clean_annotator(annotator)
        with self.log.transaction():
            seen = self._seen.setdefault(annotator, _Seen())
            # Answering only closes the question's own sentence; every other question keeps its status.
            return next((q for q in self.questions[seen.cursor:]
                         if q.sentence_id != question.sentence_id and self._refusal(seen, q) is None), None)

    def submit(self, annotator: object, question_id: object, answer: object, seconds: object,
               skipped: object) -> HumanAnswer:
        """Validate and record one answer (or skip); :class:`InvalidInput` says why one is refused."""
        annotator = clean_annotator(annotator)
        if not isinstance(question_id, str) or question_id not in self._by_id:
            raise InvalidInput("Unknown question (was the server restarted on another split?).")
        if not isinstance(skipped, bool):
            raise InvalidInput("skipped must be true or false.")
        record = HumanAnswer(
            question_id=question_id, answer=None if skipped else clean_answer(answer), mode=self.mode,
            annotator=annotator, seconds=clean_seconds(seconds), skipped=skipped)
        with self.log.transaction():
            seen = self._seen.setdefault(annotator, _Seen())
            why = self._refusal(seen, self._by_id[question_id])
            if why:
                raise Conflict(why)
            self.log.append(record)
        log.debug("recorded %s", record)
        return record
