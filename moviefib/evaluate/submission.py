"""Submissions: reading (TSV, JSON, a plain list in the order of a FIB file), strict validation, writing.

Formats (UTF-8; a leading byte-order mark and CRLF line ends are accepted):

* **TSV**: a header line ``question_id<TAB>answer``, then one ``question_id<TAB>answer`` line per question.
* **JSON**: one object ``{"<question_id>": "<answer>", ...}``.
* **list** (``--order-of FIB``): one answer per line, no header, in the row order of an official
  8-column FIB file; row *i* of the FIB file is matched to the split's question with the same clip id and
  the same question text (the *k*-th repeat of a row to the *k*-th such question).

Surrounding whitespace of an answer is ignored. Every problem is counted and the first lines that show
it are kept (:class:`ValidationReport`). Missing answers are an error unless ``allow_missing`` (then they
score as wrong, counted ``missing``); empty and multi-word answers (where the true answer is one word)
are an error unless ``allow_invalid`` (then they score as wrong, counted ``invalid``). All other
problems always make the submission invalid.

This module is stdlib only, so tools that only write submissions stay light.
"""

from __future__ import annotations

import json
import os
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..fileio import atomic_write
from ..formats import (
    ENCODING_PROBE_BYTES,
    JSONInputError,
    json_type_name,
    load_json,
    missing_reason,
    not_utf8_problem,
    text_problem,
)
from .errors import InputError, MissingInput, UsageError

if TYPE_CHECKING:
    from .key import AnswerKey

HEADER = ("question_id", "answer")
EXAMPLES_PER_KIND = 5

# kind -> what it means, in the order reports list them.
PROBLEM_KINDS: dict[str, str] = {
    "empty_file": "the file is empty",
    "encoding": "invalid UTF-8",
    "json": "malformed JSON",
    "header": "wrong header (expected 'question_id<TAB>answer')",
    "columns": "wrong number of tab-separated columns (expected 2)",
    "type": "question id or answer is not a string",
    "line_count": "number of answers differs from the number of rows of the FIB file",
    "order_unmatched": "FIB row matches no question of the split",
    "duplicate_same": "question id given more than once (same answer)",
    "duplicate_conflict": "question id given more than once (conflicting answers)",
    "unknown_id": "question id is not a question of the split",
    "empty_answer": "empty answer",
    "multi_word": "several words where the true answer is one word",
    "control_character": "answer holds a NUL or another control character",
    "missing": "question of the split without an answer",
}
TOLERABLE_WITH_ALLOW_MISSING = frozenset({"missing"})
TOLERABLE_WITH_ALLOW_INVALID = frozenset({"empty_answer", "multi_word", "control_character"})


@dataclass(frozen=True)
class SubmissionProblem:
    """One problem found in a submission.

    Attributes:
        kind: a key of :data:`PROBLEM_KINDS`.
        message: the specific reason, in words.
        line: 1-based line of the submission (None for JSON entries and missing answers).
        question_id: the question concerned, when known.
    """

    kind: str
    message: str
    line: int | None = None
    question_id: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line is not None else ""
        return f"{where}{self.message}"


class _Collector:
    """Counts problems by kind and keeps the first few of each kind."""

    def __init__(self):
        self.counts: dict[str, int] = {}
        self.examples: dict[str, list[SubmissionProblem]] = {}

    def add(self, kind: str, message: str, line: int | None = None, question_id: str | None = None):
        n = self.counts.get(kind, 0)
        self.counts[kind] = n + 1
        if n < EXAMPLES_PER_KIND:
            self.examples.setdefault(kind, []).append(SubmissionProblem(kind, message, line, question_id))


@dataclass(frozen=True, eq=False)
class Submission:
    """A submission as read, before it is checked against a split.

    Attributes:
        path: the file read.
        format: ``tsv``, ``json`` or ``list``.
        answers: ``question_id -> answer`` (whitespace-stripped; the first one when an id repeats).
        lines: ``question_id -> line`` of its first occurrence (empty for JSON).
        counts: parse problems by kind (see :data:`PROBLEM_KINDS`).
        examples: the first problems of each kind.
        readable: False when nothing could be read (empty file, undecodable or malformed JSON); its
            questions are then not also reported one by one as missing.
    """

    path: str
    format: str
    answers: dict[str, str] = field(repr=False)
    lines: dict[str, int] = field(repr=False)
    counts: dict[str, int]
    examples: dict[str, list[SubmissionProblem]] = field(repr=False)
    readable: bool = True


@dataclass(frozen=True, eq=False)
class ValidationReport:
    """The outcome of checking a submission against the questions of a split.

    Attributes:
        path: the submission file.
        format: ``tsv``, ``json`` or ``list``.
        n_questions: questions in the split.
        n_answered: distinct question ids of the split that received an answer.
        counts: problems by kind (see :data:`PROBLEM_KINDS`).
        examples: the first problems of each kind, with lines.
        fatal_kinds: the kinds present that make the submission invalid under the options used.
        invalid_ids: ids whose answer is empty, multi-word or holds a control character, tolerated by
            ``allow_invalid``.
    """

    path: str
    format: str
    n_questions: int
    n_answered: int
    counts: dict[str, int]
    examples: dict[str, list[SubmissionProblem]] = field(repr=False)
    fatal_kinds: tuple[str, ...]
    invalid_ids: frozenset[str] = field(repr=False)

    @property
    def ok(self) -> bool:
        return not self.fatal_kinds

    @property
    def n_fatal(self) -> int:
        return sum(self.counts[k] for k in self.fatal_kinds)

    def describe(self, *, fatal_only: bool = False) -> list[str]:
        """Human-readable lines: one per kind (count and meaning), then its first offending lines."""
        out = []
        for kind, meaning in PROBLEM_KINDS.items():
            n = self.counts.get(kind, 0)
            if not n or (fatal_only and kind not in self.fatal_kinds):
                continue
            tag = "error" if kind in self.fatal_kinds else "tolerated"
            out.append(f"{self.path}: {tag}: {kind}: {n} x {meaning}")
            for p in self.examples.get(kind, []):
                out.append(f"    {p}")
            if n > len(self.examples.get(kind, [])):
                out.append(f"    ... and {n - len(self.examples[kind])} more")
        return out

    def to_dict(self) -> dict:
        return {
            "path": self.path, "format": self.format, "n_questions": self.n_questions,
            "n_answered": self.n_answered, "valid": self.ok, "problems": dict(self.counts),
            "fatal": list(self.fatal_kinds),
            "examples": {k: [{"line": p.line, "question_id": p.question_id, "message": p.message}
                             for p in v] for k, v in self.examples.items()},
        }


def _decode_lines(data: bytes, problems: _Collector) -> list[tuple[int, str]]:
    """Split bytes into (line number, text); undecodable lines are reported and dropped."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None:
        raw_lines = text.split("\n")
        if raw_lines and raw_lines[-1] == "":
            raw_lines.pop()
        return [(i, s[:-1] if s.endswith("\r") else s) for i, s in enumerate(raw_lines, start=1)]
    out = []
    chunks = data.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    for i, raw in enumerate(chunks, start=1):
        try:
            s = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.add("encoding", f"invalid UTF-8 at byte {exc.start} of the line", i)
            continue
        out.append((i, s[:-1] if s.endswith("\r") else s))
    return out


def _add_answer(answers: dict, lines: dict, problems: _Collector, qid: str, answer: str,
                line: int | None) -> None:
    if qid in answers:
        first = lines.get(qid)
        where = f" (first at line {first})" if first is not None else ""
        if answers[qid] == answer:
            problems.add("duplicate_same", f"{qid!r} repeated{where}, same answer {answer!r}", line, qid)
        else:
            problems.add("duplicate_conflict",
                         f"{qid!r} repeated{where}: {answers[qid]!r} then {answer!r}", line, qid)
        return
    answers[qid] = answer
    if line is not None:
        lines[qid] = line


_LINE_WITHOUT_TAB = re.compile(r"^[^\t\n]*$", re.MULTILINE)


def _fast_tsv(data: bytes) -> tuple[dict, dict] | None:
    """The common case with whole-text operations (350k lines in a fraction of a second): valid UTF-8,
    the header, LF line ends, one tab on every line, no repeated id. None when anything else is seen,
    so that the line-by-line reader finds and reports it."""
    try:
        text = (data[3:] if data.startswith(b"\xef\xbb\xbf") else data).decode("utf-8")
    except UnicodeDecodeError:
        return None
    header, _, body = text.partition("\n")
    body = body[:-1] if body.endswith("\n") else body
    if header != "\t".join(HEADER) or not body or "\r" in body:
        return None
    n = body.count("\n") + 1
    # As many tabs as lines and no line without one: every line has exactly one tab.
    if body.count("\t") != n or _LINE_WITHOUT_TAB.search(body):
        return None
    flat = body.replace("\n", "\t").split("\t")
    qids = list(map(str.strip, flat[0::2]))
    answers = dict(zip(qids, map(str.strip, flat[1::2])))
    if len(answers) != n:
        return None
    return answers, dict(zip(qids, range(2, n + 2)))


def _parse_tsv(data: bytes, problems: _Collector) -> tuple[dict, dict]:
    fast = _fast_tsv(data)
    if fast is not None:
        return fast
    answers: dict[str, str] = {}
    lines: dict[str, int] = {}
    decoded = _decode_lines(data, problems)
    if not decoded:
        return answers, lines
    first_no, first = decoded[0]
    body = decoded
    if first_no == 1:
        body = decoded[1:]
        if tuple(c.strip() for c in first.split("\t")) != HEADER:
            problems.add("header", f"first line is {first[:80]!r}, expected 'question_id<TAB>answer'", 1)
    for lineno, text in body:
        cols = text.split("\t")
        if len(cols) != 2:
            if not text.strip():
                problems.add("columns", "blank line", lineno)
            else:
                problems.add("columns", f"{len(cols)} column(s) in {text[:80]!r}", lineno)
            continue
        qid = cols[0].strip()
        _add_answer(answers, lines, problems, qid, cols[1].strip(), lineno)
    return answers, lines


class _Pairs(list):
    """The key/value pairs of one JSON object, kept in order so that repeated keys are seen."""


def _parse_json(data: bytes, problems: _Collector) -> dict:
    answers: dict[str, str] = {}
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        problems.add("encoding", f"invalid UTF-8 at byte {exc.start} of the file", line)
        return answers
    try:
        obj = load_json(text, object_pairs_hook=_Pairs)
    except JSONInputError as exc:
        problems.add("json", exc.reason, exc.line)
        return answers
    if not isinstance(obj, _Pairs):
        problems.add("json", f"top level is a JSON {json_type_name(obj)}, expected an object "
                             "{question_id: answer}", 1)
        return answers
    keys, values = [k for k, _ in obj], [v for _, v in obj]
    if all(type(v) is str for v in values):
        fast = dict(zip(map(str.strip, keys), map(str.strip, values)))
        if len(fast) == len(obj):  # no repeated id: nothing to report
            return fast
    for qid, value in obj:
        if not isinstance(value, str):
            kind = "object" if isinstance(value, _Pairs) else json_type_name(value)
            problems.add("type", f"answer of {qid!r} is a JSON {kind}, expected a string", None, qid)
            continue
        _add_answer(answers, {}, problems, qid.strip(), value.strip(), None)
    return answers


def _detect_format(path: Path, data: bytes) -> str:
    if path.suffix.lower() == ".json":
        return "json"
    return "json" if data.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"{") else "tsv"


def _read_bytes(path: Path) -> bytes:
    if path.is_dir():
        raise MissingInput(f"{path}: is a directory, not a submission file")
    if not path.is_file():
        raise MissingInput(f"{path}: {missing_reason(path, 'no such submission file')}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise MissingInput(f"{path}: cannot read: {exc.strerror}") from None
    # One line for a file that is not UTF-8 at all, instead of a problem per line.
    problem = not_utf8_problem(data[:ENCODING_PROBE_BYTES])
    if problem:
        raise InputError(f"{path}: {problem}")
    return data


def read_submission(path: str | os.PathLike, *, format: str | None = None) -> Submission:
    """Read a TSV or JSON submission (format from the ``.json`` suffix or the first character).

    Problems of the file itself (encoding, header, columns, JSON syntax, duplicates) are collected,
    never raised; :func:`validate` turns them into a verdict. Raises MissingInput if the file is absent and
    InputError if it is not UTF-8 text at all (UTF-16/32 or NUL bytes all through it).
    """
    path = Path(path)
    data = _read_bytes(path)
    problems = _Collector()
    fmt = format or _detect_format(path, data)
    if fmt not in ("tsv", "json"):
        raise UsageError(f"unknown submission format {fmt!r} (tsv or json; a plain list needs --order-of)")
    answers: dict[str, str] = {}
    lines: dict[str, int] = {}
    if not data.strip(b"\xef\xbb\xbf \t\r\n"):
        problems.add("empty_file", "the file is empty" if not data else "the file holds only whitespace")
    elif fmt == "json":
        answers = _parse_json(data, problems)
    else:
        answers, lines = _parse_tsv(data, problems)
    unreadable = problems.counts.get("empty_file") or problems.counts.get("json") or (
        fmt == "json" and problems.counts.get("encoding"))
    return Submission(str(path), fmt, answers, lines, problems.counts, problems.examples, not unreadable)


def read_ordered_submission(path: str | os.PathLike, fib_path: str | os.PathLike,
                            key: AnswerKey) -> Submission:
    """Read a plain list of answers (one per line) in the row order of an official FIB file.

    Each FIB row is matched to the question of ``key`` with the same clip id and question text.
    Raises MissingInput when a file is absent and InputError when the FIB file is malformed.
    """
    from ..formats import FormatError, read_fib

    path, fib_path = Path(path), Path(fib_path)
    data = _read_bytes(path)
    if fib_path.is_dir():
        raise MissingInput(f"{fib_path}: is a directory, not a FIB file (--order-of)")
    if not fib_path.is_file():
        raise MissingInput(f"{fib_path}: {missing_reason(fib_path, 'no such FIB file')} (--order-of)")
    try:
        rows = read_fib(fib_path).rows
    except FormatError as exc:
        raise InputError(f"--order-of: {exc}") from None
    problems = _Collector()
    answers: dict[str, str] = {}
    lines: dict[str, int] = {}
    if not data.strip(b"\xef\xbb\xbf \t\r\n"):
        problems.add("empty_file", "the file is empty" if not data else "the file holds only whitespace")
        return Submission(str(path), "list", answers, lines, problems.counts, problems.examples, False)
    decoded = dict(_decode_lines(data, problems))
    body = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    n_lines = body.count(b"\n") + (0 if body.endswith(b"\n") else 1)
    if n_lines != len(rows):
        problems.add("line_count", f"{n_lines} answer line(s) for {len(rows)} rows of {fib_path}",
                     min(n_lines, len(rows)) + 1)
    slots: dict[tuple[str, str], deque] = {}
    clip_ids = key.table.column("clip_id").to_pylist()
    questions = key.table.column("question").to_pylist()
    for qid, clip, question in zip(key.question_ids, clip_ids, questions):
        slots.setdefault((clip, question), deque()).append(qid)
    for i, row in enumerate(rows[:n_lines], start=1):
        queue = slots.get((row.clip_id, row.fill_in))
        if not queue:
            problems.add("order_unmatched",
                         f"{fib_path.name} line {row.line} ({row.clip_id}, {row.fill_in!r}) matches no "
                         "question of the split", i)
            continue
        qid = queue.popleft()
        if i in decoded:
            _add_answer(answers, lines, problems, qid, decoded[i].strip(), i)
    return Submission(str(path), "list", answers, lines, problems.counts, problems.examples)


def validate(submission: Submission, key: AnswerKey, *, allow_missing: bool = False,
             allow_invalid: bool = False) -> ValidationReport:
    """Check a submission against the questions of a split (exact question-id checks)."""
    problems = _Collector()
    problems.counts = dict(submission.counts)
    problems.examples = {k: list(v) for k, v in submission.examples.items()}
    index, true_answers = key.index, key.answers
    answers = submission.answers
    lines = submission.lines
    invalid: set[str] = set()
    unknown = answers.keys() - index.keys()
    if unknown:
        for qid in (q for q in answers if q in unknown):
            problems.add("unknown_id", f"unknown question id {qid!r}", lines.get(qid), qid)
    # Empty and multi-word answers are found among the distinct answers (a few thousand), and only
    # then located among the questions.
    suspect = {a for a in set(answers.values()) if not a or len(a.split()) > 1 or text_problem(a)}
    if suspect:
        for qid, answer in answers.items():
            if answer not in suspect or qid in unknown:
                continue
            line = lines.get(qid)
            if not answer:
                problems.add("empty_answer", f"empty answer for {qid!r}", line, qid)
                invalid.add(qid)
            elif text_problem(answer):
                # No word of a sentence holds one: it would score as a plain wrong (or, after NUL
                # stripping downstream, a right) answer.
                problems.add("control_character", f"{answer!r} for {qid!r}: {text_problem(answer)}", line, qid)
                invalid.add(qid)
            elif len(true_answers[index[qid]].split()) <= 1:
                problems.add("multi_word", f"{answer!r} for {qid!r} has {len(answer.split())} words",
                             line, qid)
                invalid.add(qid)
    n_answered = len(answers) - len(unknown)
    if submission.readable and n_answered < len(key):
        for qid in key.question_ids:
            if qid not in answers:
                problems.add("missing", f"no answer for {qid!r}", None, qid)
    tolerated = set()
    if allow_missing:
        tolerated |= TOLERABLE_WITH_ALLOW_MISSING
    if allow_invalid:
        tolerated |= TOLERABLE_WITH_ALLOW_INVALID
    fatal = tuple(k for k in PROBLEM_KINDS if problems.counts.get(k) and k not in tolerated)
    return ValidationReport(submission.path, submission.format, len(key), n_answered, problems.counts,
                            problems.examples, fatal, frozenset(invalid))


def write_submission(path: str | os.PathLike, answers: Mapping[str, str], *,
                     format: str | None = None) -> Path:
    """Write ``{question_id: answer}`` as a TSV (default) or JSON (``.json`` suffix) submission, atomically.

    Raises ValueError on a non-string id or answer, or on a tab or line break that TSV cannot hold.
    """
    path = Path(path)
    fmt = format or ("json" if path.suffix.lower() == ".json" else "tsv")
    for qid, answer in answers.items():
        if not isinstance(qid, str) or not isinstance(answer, str):
            raise ValueError(f"question id and answer must be strings: {qid!r}: {answer!r}")
        if fmt == "tsv" and any(c in s for s in (qid, answer) for c in "\t\r\n"):
            raise ValueError(f"tab or line break in {qid!r}: {answer!r}; TSV cannot hold it")
    if fmt == "json":
        text = json.dumps(dict(answers), ensure_ascii=False, indent=0) + "\n"
    elif fmt == "tsv":
        text = "\t".join(HEADER) + "\n" + "".join(f"{q}\t{a}\n" for q, a in answers.items())
    else:
        raise ValueError(f"unknown submission format {fmt!r} (tsv or json)")
    return atomic_write(path, text)
