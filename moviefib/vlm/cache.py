"""The reply cache: every reply received, one JSON line each, so that a rerun asks nothing twice.

``<submission>.replies.jsonl`` holds one record per received reply (:class:`CachedReply`): the
question id, the request fingerprint, the raw reply, the parsed answer and how it was parsed. A record
is appended with one ``write`` on a file opened for appending, as soon as its reply arrives, so a run
killed at any moment (``kill -9`` included) leaves every reply it received on disk, whole; the file is
fsynced every :data:`FSYNC_SECONDS` and when the run ends (a power cut may lose the last second).

Before a request is sent, a **sent mark** ``{"sent": question id, "fingerprint": ...}`` is appended
the same way. A rerun that finds a mark without its reply knows that request was in flight when the
earlier run stopped: it is asked again and counted (:attr:`ReplyCache.in_flight`), so the number of
repeated requests is reported, not guessed.

Reading: a last line cut short by a kill (no newline, not JSON) is dropped and the file truncated
there, with a warning; a last record missing only its newline is kept. Any other line that is not a
record is a :class:`CacheError` naming the file and the line: a cache edited by hand is not guessed at.

The **request fingerprint** is the SHA-256 of everything that decides a request: the model, the
rendered prompt, the generation settings, the frame settings and the identity of the video bytes
(:func:`moviefib.integrity.source_identity`) with the clip's segment. A record is reused only for the
same question and fingerprint, so a rerun with another model, prompt, frame count or a replaced video
asks again. The fingerprint is known before any frame is decoded: a rerun decodes only the clips of
the questions it must ask. Stdlib only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FSYNC_SECONDS = 1.0
_FIELDS = {"question_id": str, "fingerprint": str, "reply": (str, type(None)), "answer": (str, type(None)),
           "rule": str, "finish_reason": (str, type(None)), "model": (str, type(None)), "attempts": int}


class CacheError(ValueError):
    """A reply cache that cannot be read back: names the file and the line."""


@dataclass(frozen=True)
class CachedReply:
    """One received reply.

    Attributes:
        question_id: the question asked.
        fingerprint: the request's fingerprint (see :func:`request_fingerprint`).
        reply: the reply's text as received (None: the reply held no text).
        answer: the word it was reduced to, or None (unparsed).
        rule: the step of the parse rule that gave the answer, or why it is unparsed.
        finish_reason: the server's ``finish_reason`` (``stop``, ``length``...).
        model: the model the server says answered.
        attempts: requests it took (1: no retry).
    """

    question_id: str
    fingerprint: str
    reply: str | None
    answer: str | None
    rule: str
    finish_reason: str | None
    model: str | None
    attempts: int


def request_fingerprint(parts: dict) -> str:
    """SHA-256 of ``parts`` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ReplyCache:
    """An append-only reply cache on disk; thread-safe appends. Use as a context manager."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.records: dict[tuple[str, str], CachedReply] = {}
        self._sent: set[tuple[str, str]] = set()
        _read(self.path, self.records, self._sent)
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._synced = time.monotonic()

    def get(self, question_id: str, fingerprint: str) -> CachedReply | None:
        return self.records.get((question_id, fingerprint))

    def in_flight(self, question_id: str, fingerprint: str) -> bool:
        """Whether an earlier run sent this request and was stopped before its reply came."""
        key = (question_id, fingerprint)
        return key in self._sent and key not in self.records

    def mark_sent(self, question_id: str, fingerprint: str) -> None:
        """Write the sent mark of a request about to go out."""
        self._write({"sent": question_id, "fingerprint": fingerprint})

    def append(self, record: CachedReply) -> None:
        """Write ``record`` (one ``write`` call: whole or not at all after a kill) and keep it."""
        if self._write(asdict(record)):
            self.records[(record.question_id, record.fingerprint)] = record

    def _write(self, obj: dict) -> bool:
        # ASCII JSON: a reply holding a lone surrogate (valid JSON, not UTF-8) is kept as it came.
        line = (json.dumps(obj) + "\n").encode("ascii")
        with self._lock:
            if self._fd < 0:  # a reply arriving after Ctrl-C closed the cache: asked again next run
                return False
            os.write(self._fd, line)
            if time.monotonic() - self._synced >= FSYNC_SECONDS:
                os.fsync(self._fd)
                self._synced = time.monotonic()
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> ReplyCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _read(path: Path, records: dict[tuple[str, str], CachedReply], sent: set[tuple[str, str]]) -> None:
    """Fill ``records`` and ``sent`` from an existing cache (none when absent); a torn last line is cut off."""
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):  # a pipe would block the read, a folder cannot be appended to
            raise CacheError(f"{path}: the reply cache is not a regular file; move it away")
        data = path.read_bytes()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CacheError(f"{path}: cannot read the reply cache: {exc.strerror or exc}") from None
    lines = data.split(b"\n")
    tail = lines.pop()  # after the last newline: b"" when the file ends whole
    for number, raw in enumerate(lines, start=1):
        _keep(_record(raw, path, number), records, sent)
    if tail:
        _mend_tail(path, tail, len(data) - len(tail), len(lines) + 1, records, sent)


def _keep(record: CachedReply | tuple[str, str], records: dict, sent: set) -> None:
    if isinstance(record, CachedReply):
        records[(record.question_id, record.fingerprint)] = record
    else:
        sent.add(record)


def _mend_tail(path: Path, tail: bytes, offset: int, number: int, records: dict, sent: set) -> None:
    """A last line without its newline: a whole record gets the newline, a torn one is cut off."""
    try:
        record = _record(tail, path, number)
    except CacheError:
        log.warning("%s: line %d was cut short by an interrupted run (%d bytes); dropped, its question "
                    "will be asked again", path, number, len(tail))
        with open(path, "r+b") as fh:
            fh.truncate(offset)
        return
    _keep(record, records, sent)
    with open(path, "ab") as fh:
        fh.write(b"\n")


def _record(raw: bytes, path: Path, number: int) -> CachedReply | tuple[str, str]:
    """The reply record of one line, or the (question id, fingerprint) of a sent mark."""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CacheError(f"{path}: line {number}: not a reply record ({exc}); a reply cache is written "
                         f"by predict-vlm only: move it away to start afresh") from None
    if isinstance(obj, dict) and set(obj) == {"sent", "fingerprint"} and all(
            isinstance(v, str) for v in obj.values()):
        return obj["sent"], obj["fingerprint"]
    if not isinstance(obj, dict) or set(obj) != set(_FIELDS):
        raise CacheError(f"{path}: line {number}: not a reply record (expected the keys "
                         f"{', '.join(_FIELDS)})")
    for key, kind in _FIELDS.items():
        if not isinstance(obj[key], kind) or (kind is int and isinstance(obj[key], bool)):
            raise CacheError(f"{path}: line {number}: {key} is {obj[key]!r}, of the wrong type")
    return CachedReply(**obj)
