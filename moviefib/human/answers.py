"""The human-answer file: JSONL, one object per answer, appended safely by several annotators at once.

Each line holds ``question_id``, ``answer``, ``mode`` (``text`` | ``video``), ``annotator``, ``seconds``
and ``skipped`` (the evaluator's human-answer format, :mod:`moviefib.evaluate.human`). This page writes
``"answer": null`` for a skip; on reading, as in the evaluator, a skip may also have ``""``, ``seconds``
may be null and other fields are ignored.

Every append happens under an exclusive ``fcntl.flock`` on the file (so that two processes serving the
same file interleave whole lines, never bytes), after reading what other writers appended since, and is
flushed and fsync'ed before the caller is told it succeeded, so a crash loses no acknowledged answer.

A last line without its newline (a crash between the record and its newline, or a file edited by hand)
is kept when it parses as a record: its newline is added. Only a tail that is not JSON (a write torn by
a crash, never acknowledged) is cut off before the next append, so that the file stays valid JSONL; the
cut bytes are saved beside the file as ``<file>.torn-<timestamp>``, and a warning names that file.

Lines are read strictly: NaN, Infinity, overflowing numbers, repeated keys and JSON nested too deeply
are refused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import threading
import time
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fileio import file_in_the_way
from ..formats import BadNumber, load_json

log = logging.getLogger(__name__)

MODES = ("text", "video")
FIELDS = ("question_id", "answer", "mode", "annotator", "seconds", "skipped")
MAX_ANSWER_CHARS = 32
_ANNOTATOR_RE = re.compile(r"[A-Za-z0-9_.@-]{1,40}")
# Letters and digits, optionally joined by apostrophes or hyphens ("don't", "t-shirt").
_WORD_RE = re.compile(r"[^\W_]+(?:['\u2019-][^\W_]+)*")


@dataclass(frozen=True)
class HumanAnswer:
    """One line of the human-answer file.

    Attributes:
        question_id: the question answered.
        answer: the word typed (stripped, NFC-normalised), or None when skipped.
        mode: ``text`` (the sentence alone) or ``video`` (the sentence with its clip).
        annotator: who answered.
        seconds: time from the question being shown (in video mode, from its clip starting to play,
            if it did before the answer) to the answer being sent (None: not recorded, in files
            written by other tools).
        skipped: the annotator skipped the question (it counts as seen).
    """

    question_id: str
    answer: str | None
    mode: str
    annotator: str
    seconds: float | None
    skipped: bool


class AnswerFileError(ValueError):
    """A human-answer file that is not valid (names the file and line)."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path, self.line, self.reason = str(path), line, reason
        super().__init__(f"{path}:{line}: {reason}" if line is not None else f"{path}: {reason}")


class InvalidInput(ValueError):
    """An answer or annotator id typed on the page that is refused; the message is shown to the user."""


def clean_annotator(text: object) -> str:
    """The annotator id, or :class:`InvalidInput` saying why it is refused."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("Enter your annotator id first.")
    text = text.strip()
    if not _ANNOTATOR_RE.fullmatch(text):
        raise InvalidInput("An annotator id is 1 to 40 letters, digits or . _ @ - (no spaces).")
    return text


def clean_answer(text: object) -> str:
    """The answer as recorded (one word), or :class:`InvalidInput` saying why it is refused."""
    if not isinstance(text, str):
        raise InvalidInput("The answer must be text.")
    text = unicodedata.normalize("NFC", text).strip()
    if not text:
        raise InvalidInput("Type the missing word, or press Skip.")
    if len(text) > MAX_ANSWER_CHARS:
        raise InvalidInput(f"Too long: an answer has at most {MAX_ANSWER_CHARS} characters.")
    if any(c.isspace() for c in text):
        raise InvalidInput("One word only: the blank hides a single word.")
    if not _WORD_RE.fullmatch(text):
        raise InvalidInput("Letters and digits only (an apostrophe or hyphen may join two parts).")
    return text


def _finite(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a number (bools, text, NaN, inf, 10**400)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)  # a huge int overflows here rather than in math.isfinite
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def clean_seconds(value: object) -> float:
    """The time taken as recorded; no upper bound, since a question may stay on screen overnight."""
    number = _finite(value)
    if number is None or number < 0:
        raise InvalidInput("seconds must be a number >= 0.")
    return round(number, 3)


def _refuse_bad_numbers(value: object) -> None:
    # A loop, not recursion: a value nested almost as deep as the parser allows must not overflow here.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, BadNumber):
            raise ValueError(f"{item} is not a finite number")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def strict_json(raw: bytes | str) -> object:
    """Parse UTF-8 JSON as every untrusted reader does (:func:`moviefib.formats.load_json`), refusing
    NaN, Infinity, overflowing numbers, repeated keys and deep nesting with a ``ValueError``.

    Python's ``json`` accepts ``NaN`` and turns ``1e999`` into infinity; an answer file (or a request)
    holding them is not valid JSON, so it is refused rather than coerced.
    """
    value = load_json(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    _refuse_bad_numbers(value)
    return value


def _parse_record(obj: object) -> HumanAnswer:
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    missing = [f for f in FIELDS if f not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}")
    qid, answer, mode, annotator, seconds, skipped = (obj[f] for f in FIELDS)
    if not isinstance(qid, str) or not qid:
        raise ValueError("question_id must be a non-empty string")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    if not isinstance(annotator, str) or not annotator:
        raise ValueError("annotator must be a non-empty string")
    if not isinstance(skipped, bool):
        raise ValueError("skipped must be true or false")
    if skipped:
        if answer not in (None, ""):
            raise ValueError("a skipped question has answer null")
    elif not isinstance(answer, str) or not answer.strip():
        raise ValueError("answer must be a non-empty string unless skipped")
    number = None if seconds is None else _finite(seconds)
    if seconds is not None and (number is None or number < 0):
        raise ValueError("seconds must be a finite number >= 0 or null")
    return HumanAnswer(qid, answer or None, mode, annotator, number, skipped)


@dataclass(frozen=True)
class _Chunk:
    """What a run of bytes of the file holds.

    Attributes:
        records: the records of its complete lines, then that of an unterminated last line that parses.
        used: bytes of complete lines (ending in a newline).
        tail: the bytes after the last newline ('' when the chunk ends with one).
        tail_is_record: ``tail`` parsed as a record (it only lacks its newline); otherwise it is torn.
    """

    records: list[HumanAnswer]
    used: int
    tail: bytes
    tail_is_record: bool


def read_answers(path: str | os.PathLike) -> list[HumanAnswer]:
    """All records of a human-answer file; a torn (unparsable) last line is ignored with a warning."""
    path = Path(path)
    if not path.is_file():
        raise AnswerFileError(path, None, "no such file" if not path.exists() else "not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise AnswerFileError(path, None, exc.strerror or str(exc)) from None
    chunk = _parse_chunk(path, data, 0)
    if chunk.tail and not chunk.tail_is_record:
        log.warning("%s: ignoring a torn last line (%d bytes) left by an interrupted write", path,
                    len(chunk.tail))
    return chunk.records


def _parse_line(path: Path, n: int, raw: bytes) -> HumanAnswer:
    try:
        return _parse_record(strict_json(raw.decode("utf-8")))
    except UnicodeDecodeError as exc:
        raise AnswerFileError(path, n, f"invalid UTF-8 at byte {exc.start}") from None
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        raise AnswerFileError(path, n, str(exc)) from None


def _is_json(raw: bytes) -> bool:
    """Whether an unterminated last line is a whole JSON value (then it is judged as a record)."""
    try:
        strict_json(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return True


def _parse_chunk(path: Path, data: bytes, first_line: int) -> _Chunk:
    """Parse ``data``, whose first line is line ``first_line + 1`` of the file.

    A bad complete line raises :class:`AnswerFileError`. So does an unterminated last line that is
    JSON but not a valid record (it was written whole: a bad record, not a torn write).
    """
    end = data.rfind(b"\n") + 1
    lines = data[:end].splitlines()
    records = [_parse_line(path, n, raw) for n, raw in enumerate(lines, start=first_line + 1) if raw.strip()]
    tail = data[end:]
    tail_is_record = bool(tail.strip()) and _is_json(tail)
    if tail_is_record:
        records.append(_parse_line(path, first_line + len(lines) + 1, tail))
    return _Chunk(records, end, tail, tail_is_record)


def _save_torn_tail(path: Path, tail: bytes) -> Path:
    """Keep the bytes cut off a torn last line in ``<path>.torn-<timestamp>`` (never overwriting one)."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for k in range(1000):
        saved = path.with_name(f"{path.name}.torn-{stamp}" + (f"-{k}" if k else ""))
        try:
            fd = os.open(saved, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            continue
        try:
            os.write(fd, tail)
            os.fsync(fd)
        finally:
            os.close(fd)
        return saved
    raise AnswerFileError(path, None, f"cannot save its torn last line: {path.name}.torn-{stamp}-* all exist")


class AnswerLog:
    """An append-only human-answer file shared by threads and processes.

    ``on_records`` is called with every record found in the file (at start-up, those already there;
    later, those appended by this or another process), always inside :meth:`transaction`, so the
    caller's index of who answered what stays in step with the file.
    """

    def __init__(self, path: str | os.PathLike, on_records: Callable[[list[HumanAnswer]], None]):
        self.path = Path(path)
        self._on_records = on_records
        self._lock = threading.Lock()
        self._offset = 0
        self._lines = 0
        self._fd = -1  # the open file, inside a transaction only
        if self.path.exists() and not self.path.is_file():
            raise AnswerFileError(self.path, None, "not a regular file")
        blocker = file_in_the_way(self.path)
        if blocker is not None:
            raise AnswerFileError(self.path, None, f"{blocker} is a file, not a folder")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only file system, no permission
            raise AnswerFileError(self.path, None, f"cannot create its folder: {exc.strerror or exc}") from None
        with self.transaction():
            pass

    @contextmanager
    def transaction(self) -> Iterator[AnswerLog]:
        """Hold the thread lock and the file lock, having read what other writers appended."""
        with self._lock:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._fd = fd
                self._catch_up(fd)
                yield self
            finally:
                self._fd = -1
                os.close(fd)  # closing releases the flock

    def _catch_up(self, fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < self._offset:
            raise AnswerFileError(self.path, None, "the file shrank while in use (edited or replaced?)")
        if size == self._offset:
            return
        data = os.pread(fd, size - self._offset, self._offset)
        chunk = _parse_chunk(self.path, data, self._lines)
        used = chunk.used
        if chunk.tail_is_record:
            # A whole record that only lacks its newline: complete the line, never drop the record.
            os.write(fd, b"\n")  # O_APPEND: at the end, right after the record
            os.fsync(fd)
            log.warning("%s: added the missing newline after its last record (line %d)", self.path,
                        self._lines + data.count(b"\n") + 1)
            used = len(data) + 1
        elif chunk.tail:
            # Every writer holds the lock until its line is complete, so a partial line here is the
            # remains of a crash before that answer was acknowledged: cut it to keep the file valid,
            # after saving it beside the file (whoever edited the file by hand gets it back).
            saved = _save_torn_tail(self.path, chunk.tail)
            os.ftruncate(fd, self._offset + used)
            log.warning("%s: cut off a torn last line (%d bytes) left by an interrupted write; saved in %s",
                        self.path, len(chunk.tail), saved)
        self._lines += data[:used].count(b"\n") + chunk.tail_is_record
        self._offset += used
        if chunk.records:
            self._on_records(chunk.records)

    def append(self, record: HumanAnswer) -> None:
        """Write one record durably; call only inside :meth:`transaction`."""
        if self._fd < 0:
            raise RuntimeError("AnswerLog.append outside a transaction")
        line = (json.dumps(asdict(record), ensure_ascii=False) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)
        self._offset += len(line)
        self._lines += 1
        self._on_records([record])
