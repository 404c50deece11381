"""The human-answer file: JSONL, one object per answer, appended safely by several annotators at once.

Each line holds ``question_id``, ``answer``, ``mode`` (``text`` | ``video``), ``annotator``, ``seconds``
and ``skipped`` (the evaluator's human-answer format, :mod:`moviefib.evaluate.human`). This page writes
``"answer": null`` for a skip; on reading, as in the evaluator, a skip may also have ``""``, ``seconds``
may be null and other fields are ignored.

Every append happens under an exclusive ``fcntl.flock`` on the file (so that two processes serving the
same file interleave whole lines, never bytes), after reading what other writers appended since, and is
flushed and fsync'ed before the caller is told it succeeded, so a crash loses no acknowledged answer.
A torn last line can only come from a crash during a write that was never acknowledged; it is cut off
(with a warning) before the next append, so that the file stays valid JSONL.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

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


def clean_seconds(value: object) -> float:
    """The time taken as recorded; no upper bound, since a question may stay on screen overnight."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or value < 0:
        raise InvalidInput("seconds must be a number >= 0.")
    return round(float(value), 3)


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
    if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                or not seconds >= 0):
        raise ValueError("seconds must be a number >= 0 or null")
    return HumanAnswer(qid, answer or None, mode, annotator, None if seconds is None else float(seconds),
                       skipped)


def read_answers(path: str | os.PathLike) -> list[HumanAnswer]:
    """All records of a human-answer file (a torn last line, left by a crash, is ignored)."""
    path = Path(path)
    if not path.is_file():
        raise AnswerFileError(path, None, "no such file")
    records, _ = _parse_lines(path, path.read_bytes(), 0)
    return records


def _parse_lines(path: Path, data: bytes, first_line: int) -> tuple[list[HumanAnswer], int]:
    """Records of the complete lines of ``data``, and how many bytes they span."""
    end = data.rfind(b"\n") + 1
    records = []
    for n, raw in enumerate(data[:end].splitlines(), start=first_line + 1):
        if not raw.strip():
            continue
        try:
            records.append(_parse_record(json.loads(raw.decode("utf-8"))))
        except UnicodeDecodeError as exc:
            raise AnswerFileError(path, n, f"invalid UTF-8 at byte {exc.start}") from None
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            raise AnswerFileError(path, n, str(exc)) from None
    return records, end


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
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
        records, used = _parse_lines(self.path, data, self._lines)
        if used < len(data):
            # Every writer holds the lock until its line is complete, so a partial line here is the
            # remains of a crash before that answer was acknowledged: drop it to keep the file valid.
            log.warning("%s: cutting off a torn last line (%d bytes) left by an interrupted write",
                        self.path, len(data) - used)
            os.ftruncate(fd, self._offset + used)
        self._lines += data[:used].count(b"\n")
        self._offset += used
        if records:
            self._on_records(records)

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
