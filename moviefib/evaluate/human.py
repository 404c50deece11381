"""Human accuracy beside model accuracy: published MovieFIB figures and measured human answers.

The human-answer file is JSONL, one object per answer::

    {"question_id": "...", "answer": "...", "mode": "text" | "video", "annotator": "...",
     "seconds": 4.2, "skipped": false}

``answer`` may be empty or null only when ``skipped`` is true; ``seconds`` is a finite non-negative JSON
number (not ``true``, not ``"4.2"``, not NaN or Infinity) or null. Skipped answers
are counted, never scored. Per mode, human accuracy is the share of (non-skipped) answers that are
correct; the model's accuracy is measured on exactly the distinct questions those answers cover, each
question weighted by its number of human answers so that both figures average over the same items.
Agreement is the share of pairs of annotators (on the same question and mode) whose normalised answers
are equal.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..formats import (
    ENCODING_PROBE_BYTES,
    JSONInputError,
    json_number,
    json_type_name,
    load_json,
    missing_reason,
    not_utf8_problem,
)
from .errors import InputError, MissingInput
from .metrics import normalise

if TYPE_CHECKING:
    from .key import AnswerKey

MODES = ("text", "video")
_FIELDS = ("question_id", "answer", "mode", "annotator", "seconds", "skipped")
_EXAMPLES = 5


@dataclass(frozen=True)
class PublishedHuman:
    """A human accuracy as published (not measured here).

    Attributes:
        mode: ``text`` (question only) or ``video`` (question and clip).
        accuracy: the published figure, a fraction.
        source: where it was published.
    """

    mode: str
    accuracy: float
    source: str


PUBLISHED_HUMAN = (
    PublishedHuman("text", 0.302, "MovieFIB paper (Maharaj et al., CVPR 2017), as cited"),
    PublishedHuman("video", 0.687, "MovieFIB paper (Maharaj et al., CVPR 2017), as cited"),
)


@dataclass(frozen=True)
class HumanAnswer:
    """One line of a human-answer file (fields as in the module docstring; ``line`` is 1-based)."""

    question_id: str
    answer: str
    mode: str
    annotator: str
    seconds: float | None
    skipped: bool
    line: int


@dataclass(frozen=True)
class Agreement:
    """Inter-annotator agreement in one mode.

    Attributes:
        n_questions: questions answered (not skipped) by two annotators or more.
        n_pairs: pairs of annotators on those questions.
        agreeing_pairs: pairs whose normalised answers are equal.
    """

    n_questions: int
    n_pairs: int
    agreeing_pairs: int

    @property
    def rate(self) -> float:
        return self.agreeing_pairs / self.n_pairs if self.n_pairs else float("nan")


@dataclass(frozen=True)
class HumanModeResult:
    """Measured human accuracy in one mode and the models' accuracy on the same questions.

    Attributes:
        mode: ``text`` or ``video``.
        n_answers: non-skipped answers scored. n_skipped: skipped answers (not scored).
        n_questions: distinct questions with a scored answer. n_annotators: distinct annotators.
        correct, correct_normalised: correct human answers (exact, normalised).
        model_accuracy: submission name -> (exact, normalised) accuracy on the same answers' questions.
        agreement: inter-annotator agreement, or None when no question has two answers.
        median_seconds: median time per scored answer, or None when no time was recorded.
        by_pos_group: POS group -> (human answers, human exact accuracy).
    """

    mode: str
    n_answers: int
    n_skipped: int
    n_questions: int
    n_annotators: int
    correct: int
    correct_normalised: int
    model_accuracy: dict[str, tuple[float, float]]
    agreement: Agreement | None
    median_seconds: float | None
    by_pos_group: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        return self.correct / self.n_answers if self.n_answers else float("nan")

    @property
    def accuracy_normalised(self) -> float:
        return self.correct_normalised / self.n_answers if self.n_answers else float("nan")

    def to_dict(self) -> dict:
        return {
            "mode": self.mode, "n_answers": self.n_answers, "n_skipped": self.n_skipped,
            "n_questions": self.n_questions, "n_annotators": self.n_annotators,
            "correct": self.correct, "accuracy": self.accuracy,
            "correct_normalised": self.correct_normalised,
            "accuracy_normalised": self.accuracy_normalised,
            "model_accuracy_same_questions": {k: {"accuracy": v[0], "accuracy_normalised": v[1]}
                                              for k, v in self.model_accuracy.items()},
            "agreement": None if self.agreement is None else {
                "n_questions": self.agreement.n_questions, "n_pairs": self.agreement.n_pairs,
                "agreeing_pairs": self.agreement.agreeing_pairs, "rate": self.agreement.rate},
            "median_seconds": self.median_seconds,
            "by_pos_group": {k: {"n_answers": n, "accuracy": a} for k, (n, a) in self.by_pos_group.items()},
        }


def _check_encoding(path: Path) -> None:
    """One line for a file that is not UTF-8 at all, instead of a bad line per line."""
    with open(path, "rb") as fh:
        problem = not_utf8_problem(fh.read(ENCODING_PROBE_BYTES))
    if problem:
        raise InputError(f"{path}: {problem}")


def read_human_answers(path: str | os.PathLike, key: AnswerKey | None = None) -> list[HumanAnswer]:
    """Read and check a human-answer JSONL file; with ``key``, every question id must be in the split.

    Raises MissingInput when the file is absent and InputError listing the first bad lines otherwise.
    """
    path = Path(path)
    if path.is_dir():
        raise MissingInput(f"{path}: is a directory, not a human-answer file")
    if not path.is_file():
        raise MissingInput(f"{path}: {missing_reason(path, 'no such human-answer file')}")
    _check_encoding(path)
    problems: list[str] = []
    n_problems = 0
    out: list[HumanAnswer] = []
    seen: dict[tuple[str, str, str], int] = {}

    def bad(lineno, reason):
        nonlocal n_problems
        n_problems += 1
        if len(problems) < _EXAMPLES:
            problems.append(f"{path}:{lineno}: {reason}")

    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as every reader
                raw = raw[3:]
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                bad(lineno, f"invalid UTF-8 at byte {exc.start}")
                continue
            if not text:
                continue
            try:
                obj = load_json(text)
            except JSONInputError as exc:
                bad(lineno, exc.reason)
                continue
            reason = _check(obj, key)
            if reason:
                bad(lineno, reason)
                continue
            seconds = None if obj["seconds"] is None else json_number(obj["seconds"], "seconds")
            ans = HumanAnswer(obj["question_id"], (obj["answer"] or "").strip(), obj["mode"],
                              obj["annotator"], seconds, obj["skipped"], lineno)
            first = seen.setdefault((ans.question_id, ans.mode, ans.annotator), lineno)
            if first != lineno:
                bad(lineno, f"annotator {ans.annotator!r} answered {ans.question_id!r} in mode "
                            f"{ans.mode!r} already (line {first})")
                continue
            out.append(ans)
    if n_problems:
        raise InputError(f"{path}: {n_problems} bad line(s) in the human-answer file:\n  " +
                         "\n  ".join(problems) + ("\n  ..." if n_problems > len(problems) else ""))
    if not out:
        raise InputError(f"{path}: no human answers")
    return out


def _check(obj, key) -> str | None:
    if not isinstance(obj, dict):
        return "expected a JSON object"
    absent = [f for f in _FIELDS if f not in obj]
    if absent:
        return f"missing field(s) {', '.join(absent)}"
    if not isinstance(obj["question_id"], str):
        return f"question_id must be a string, not a JSON {json_type_name(obj['question_id'])}"
    if key is not None and obj["question_id"] not in key.index:
        return f"unknown question id {obj['question_id']!r}"
    if obj["mode"] not in MODES:
        return f"mode must be 'text' or 'video', not {obj['mode']!r}"
    if not isinstance(obj["annotator"], str) or not obj["annotator"].strip():
        return "annotator must be a non-empty string"
    if not isinstance(obj["skipped"], bool):
        return "skipped must be true or false"
    if obj["seconds"] is not None:
        try:
            seconds = json_number(obj["seconds"], "seconds")
        except ValueError as exc:
            return f"{exc} (seconds must be a non-negative number or null)"
        if seconds < 0:
            return f"seconds must be a non-negative number or null, not {seconds!r}"
    answer = obj["answer"]
    if answer is not None and not isinstance(answer, str):
        return f"answer must be a string, not a JSON {json_type_name(answer)}"
    if not obj["skipped"] and not (answer or "").strip():
        return "empty answer on a line not marked skipped"
    return None


def _agreement(answers: list[HumanAnswer]) -> Agreement | None:
    by_q: dict[str, list[str]] = {}
    for a in answers:
        by_q.setdefault(a.question_id, []).append(normalise(a.answer))
    n_q = n_pairs = agree = 0
    for values in by_q.values():
        if len(values) < 2:
            continue
        n_q += 1
        counts: dict[str, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        n_pairs += len(values) * (len(values) - 1) // 2
        agree += sum(c * (c - 1) // 2 for c in counts.values())
    return Agreement(n_q, n_pairs, agree) if n_q else None


def compare_humans(key: AnswerKey, answers: list[HumanAnswer], models: dict[str, tuple[np.ndarray,
                   np.ndarray]], pos_group_of_row: list[str] | None = None) -> list[HumanModeResult]:
    """Measured human accuracy per mode beside each model's accuracy on the same questions.

    ``models`` maps a submission name to its (exact, normalised) per-question correctness arrays.
    ``pos_group_of_row`` gives each key row's POS group, for the by-POS figures of the chart.
    """
    results = []
    for mode in MODES:
        in_mode = [a for a in answers if a.mode == mode]
        if not in_mode:
            continue
        scored = [a for a in in_mode if not a.skipped]
        rows = np.array([key.index[a.question_id] for a in scored], dtype=np.int64)
        truth = [key.answers[r] for r in rows]
        exact = np.array([a.answer == t for a, t in zip(scored, truth)], dtype=bool)
        norm = np.array([normalise(a.answer) == normalise(t) for a, t in zip(scored, truth)], dtype=bool)
        model_acc = {}
        for name, (m_exact, m_norm) in models.items():
            model_acc[name] = ((float(m_exact[rows].mean()), float(m_norm[rows].mean())) if rows.size
                               else (float("nan"), float("nan")))
        by_pos: dict[str, tuple[int, float]] = {}
        if pos_group_of_row is not None:
            groups: dict[str, list[bool]] = {}
            for r, ok in zip(rows, exact):
                groups.setdefault(pos_group_of_row[r], []).append(bool(ok))
            by_pos = {g: (len(v), sum(v) / len(v)) for g, v in groups.items()}
        secs = [a.seconds for a in scored if a.seconds is not None]
        results.append(HumanModeResult(
            mode=mode, n_answers=len(scored), n_skipped=len(in_mode) - len(scored),
            n_questions=len(set(a.question_id for a in scored)),
            n_annotators=len(set(a.annotator for a in in_mode)),
            correct=int(exact.sum()), correct_normalised=int(norm.sum()), model_accuracy=model_acc,
            agreement=_agreement(scored), median_seconds=float(np.median(secs)) if secs else None,
            by_pos_group=by_pos))
    return results
