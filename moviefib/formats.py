"""LSMDC 2016 file formats: description files (6 columns) and FIB question files (8 columns).

Both are tab separated, without header and without quoting (sentences contain quotes), one row per
line. Time stamps are ``hh.mm.ss.mmm``; records carry them in seconds. Reading a file and writing the
records back reproduces it byte for byte (the original time-stamp strings are kept for that).

Errors name the file, the line and the reason. ``errors="strict"`` (default) raises on the first bad
row; ``errors="skip"`` drops bad rows and reports each one in :attr:`ReadResult.problems`. Known quirks of
the original release are kept and reported in :attr:`ReadResult.warnings`, never dropped (a blank inside
a word, a truncated FILL_IN, a FILL_IN without any blank).

Validation of a row: CLIP_ID is ``<4 digits>_<NAME>_<start>-<end>`` whose times equal the row's ALIGNED
times within a millisecond of rounding (:func:`lsmdc_clip_problem`), and no id holds a path separator,
``..`` or a control character (:func:`id_problem`), nor any whitespace; times are written in ASCII digits;
the EXTRACTED times cover the ALIGNED ones (to the millisecond); SENTENCE, FILL_IN and BLANK hold no NUL
or control character other than tab (:func:`text_problem`), and BLANK is one word (no whitespace).

Also here, for every reader of untrusted JSON and TSV: :func:`load_json` (NaN, Infinity, overflowing
numbers and over-long integers become :class:`BadNumber` markers; deep nesting and a key repeated in one
object are errors), :func:`json_number` and :func:`text_number` (a finite number, no coercion of ``true``
or ``"2.5"``), :func:`not_utf8_problem` (a UTF-16/32 file is refused in one line, before any row; a UTF-8
byte-order mark is accepted and dropped by every reader) and :func:`missing_reason` (a symbolic link
loop is named as such, not reported as a missing file).
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from .fileio import atomic_output

BLANK = "_____"
DESCRIPTION_COLUMNS = (
    "CLIP_ID", "START_ALIGNED", "END_ALIGNED", "START_EXTRACTED", "END_EXTRACTED", "SENTENCE",
)
FIB_COLUMNS = DESCRIPTION_COLUMNS + ("FILL_IN", "BLANK")

ErrorMode = Literal["strict", "skip"]

# An id's times and the row's ALIGNED times are both written to the millisecond; they may differ by
# one millisecond of rounding (measured: all 23,514 rows of the real val files agree exactly).
ID_TIME_TOLERANCE = 0.0011

# ASCII digits only: ``\d`` alone also matches Arabic-Indic and full-width digits, and ``int()``
# would read them as the same time, so a mangled file would pass as a valid one.
_TIME_RE = re.compile(r"^(\d{1,3})\.(\d{2})\.(\d{2})\.(\d{1,3})$", re.ASCII)
# <4-digit movie id>_<MOVIE_NAME>_<start>-<end>; the movie name may itself contain underscores.
_CLIP_RE = re.compile(
    r"^(?P<movie>(?P<movie_id>\d{4})_(?P<name>.+))_(?P<start>[\d.]+)-(?P<end>[\d.]+)$", re.ASCII
)
# Control characters in free text: all but tab (LSMDC fields cannot hold a tab anyway, generic
# corpora normalise it to a space).
_TEXT_CONTROL_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")


class FormatError(ValueError):
    """A row (or a whole file) that does not follow the LSMDC layout."""

    def __init__(self, path: str | os.PathLike, line: int | None, reason: str):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True)
class RowProblem:
    """One bad row (an error) or one kept quirk (a warning) found while reading a file.

    Attributes:
        path: the file read.
        line: 1-based line number.
        reason: what is wrong, in words.
        kind: a short machine-readable code (``columns``, ``timestamp``, ``blank_inside_word``...).
    """

    path: str
    line: int
    reason: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


def parse_timestamp(text: str) -> float:
    """``hh.mm.ss.mmm`` -> seconds. Raises ValueError on anything else."""
    m = _TIME_RE.match(text)
    if not m:
        raise ValueError(f"malformed time stamp {text!r} (expected hh.mm.ss.mmm)")
    h, mi, s, frac = m.groups()
    if int(mi) >= 60 or int(s) >= 60:
        raise ValueError(f"malformed time stamp {text!r} (minutes and seconds must be < 60)")
    return int(h) * 3600 + int(mi) * 60 + int(s) + int(frac) / 10 ** len(frac)


def format_timestamp(seconds: float) -> str:
    """Seconds -> ``hh.mm.ss.mmm`` (rounded to the millisecond)."""
    if seconds < 0:
        raise ValueError(f"negative time {seconds}")
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    mi, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}.{mi:02d}.{s:02d}.{ms:03d}"


@dataclass(frozen=True)
class ClipId:
    """A parsed LSMDC clip id such as ``3009_BATTLE_LOS_ANGELES_00.03.07.170-00.03.09.675``.

    Attributes:
        clip_id: the id as written.
        movie: the movie folder name (the clip id without its last ``_`` field).
        movie_id: the 4-digit movie number (``3xxx`` M-VAD, ``1xxx`` MPII-MD AD, ``0xxx`` MPII-MD scripts).
        movie_name: the movie name part (``BATTLE_LOS_ANGELES``).
        start: start time in the movie, in seconds (from the id).
        end: end time in the movie, in seconds (from the id).
    """

    clip_id: str
    movie: str
    movie_id: str
    movie_name: str
    start: float
    end: float

    @classmethod
    def parse(cls, clip_id: str) -> ClipId:
        """Parse an id; ValueError when it is not ``<4 digits>_<NAME>_<start>-<end>`` or could not be a
        file name (:func:`id_problem`: its movie folder and file are built from it)."""
        problem = id_problem(clip_id)
        if problem:
            raise ValueError(problem)
        if any(c.isspace() for c in clip_id):  # no LSMDC id has any; a space means a broken column
            raise ValueError(f"malformed clip id {clip_id!r} (it holds whitespace)")
        m = _CLIP_RE.match(clip_id)
        if not m:
            raise ValueError(
                f"malformed clip id {clip_id!r} (expected <4-digit movie id>_<MOVIE_NAME>_<start>-<end>)"
            )
        return cls(
            clip_id=clip_id,
            movie=m["movie"],
            movie_id=m["movie_id"],
            movie_name=m["name"],
            start=parse_timestamp(m["start"]),
            end=parse_timestamp(m["end"]),
        )

    @property
    def source(self) -> str:
        """``M-VAD``, ``MPII-MD`` (audio description) or ``MPII-MD-script``."""
        return {"3": "M-VAD", "1": "MPII-MD", "0": "MPII-MD-script"}.get(self.movie_id[0], "unknown")

    def video_path(self, video_root: str | os.PathLike) -> Path:
        """Where the clip's video lives: ``<video_root>/<movie>/<clip_id>.avi``."""
        return Path(video_root) / self.movie / f"{self.clip_id}.avi"


# Control characters (C0, DEL, C1): never legitimate in an id, and NUL truncates paths in C libraries.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def id_problem(text: str, *, allow_slash: bool = False) -> str | None:
    """Why ``text`` cannot be an id (clip or question id), or None when it can.

    Ids become file names: absolute paths, ``..`` parts, NUL and control characters are refused
    everywhere; ``/`` only where ids are relative paths by design (``allow_slash``: ``--folder`` clips).
    """
    if not text:
        return "empty id"
    if _CONTROL_RE.search(text):
        return f"id {text!r} holds a control character"
    if "/" in text or "\\" in text:
        if not allow_slash:
            return f"id {text!r} holds a path separator"
        parts = text.replace("\\", "/").split("/")
        if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
            return f"id {text!r} is an absolute path"
        if any(p in ("", ".", "..") for p in parts):
            return f"id {text!r} has an empty, '.' or '..' path part"
    elif text in (".", ".."):
        return f"id {text!r} is not a name"
    return None


def text_problem(text: str, *, line_breaks: bool = False) -> str | None:
    """Why ``text`` cannot be a sentence (or a question, an answer), or None when it can.

    Only NUL and control characters other than tab are refused: they are never part of a described
    sentence, and they corrupt files and terminals downstream. Everything else is the corpus's business.
    ``line_breaks`` also lets LF and CR through, for readers that fold whitespace into spaces (JSON
    sentences: five of the real ActivityNet file start with a line break).
    """
    m = next((m for m in _TEXT_CONTROL_RE.finditer(text) if not (line_breaks and m.group() in "\n\r")), None)
    if m:
        return f"control character {m.group()!r} at character {m.start()}"
    return None


def lsmdc_clip_problem(clip_id: str, start_aligned: float, end_aligned: float) -> str | None:
    """Why ``clip_id`` is not a valid LSMDC clip id for a row with these ALIGNED times, or None.

    The rule: ``<4 digits>_<NAME>_<start>-<end>`` (:class:`ClipId`), and the id's times equal the row's
    ALIGNED times within :data:`ID_TIME_TOLERANCE`. The EXTRACTED times are not compared: they are the
    aligned ones padded to at least 2 s, so they differ from the id on short clips.
    """
    try:
        clip = ClipId.parse(clip_id)
    except ValueError as exc:
        return str(exc)
    if abs(clip.start - start_aligned) > ID_TIME_TOLERANCE or abs(clip.end - end_aligned) > ID_TIME_TOLERANCE:
        return (f"clip id times {format_timestamp(clip.start)}-{format_timestamp(clip.end)} disagree with "
                f"START_ALIGNED/END_ALIGNED {format_timestamp(start_aligned)}-{format_timestamp(end_aligned)}")
    return None


class JSONInputError(ValueError):
    """Text that :func:`load_json` refuses; ``line`` is 1-based when the parser knows it."""

    def __init__(self, reason: str, line: int | None = None):
        super().__init__(reason)
        self.reason = reason
        self.line = line


@dataclass(frozen=True)
class BadNumber:
    """A JSON number that is not a finite Python number (NaN, Infinity, 1e400, a 5,000-digit integer).

    :func:`load_json` leaves it in place of the value, so that the reader that checks the field can say
    where it was (a line, a JSON path) instead of the parser failing without a location.
    """

    text: str

    def __str__(self) -> str:
        return self.text


def _json_int(text: str):
    try:
        return int(text)
    except ValueError:  # past Python's limit on integer digits (4,300 by default)
        return BadNumber(f"an integer of {len(text.lstrip('-'))} digits")


def _json_float(text: str):
    value = float(text)
    return value if math.isfinite(value) else BadNumber(f"{text} (out of range)")


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_pairs(pairs: list[tuple[str, object]]) -> dict:
    """An object's pairs as a dict, refusing a repeated key: ``json.loads`` would silently keep the last."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _RepeatedKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return out


def load_json(text: str, *, object_pairs_hook=None):
    """``json.loads`` for untrusted files: NaN, Infinity, overflowing numbers and integers past Python's
    digit limit become :class:`BadNumber` markers; syntax errors, nesting too deep and a key repeated in
    one object raise :class:`JSONInputError`. ``object_pairs_hook`` replaces the repeated-key check (a
    reader that reports repeats itself, such as the submission reader, passes its own)."""
    try:
        return json.loads(text, parse_constant=BadNumber, parse_int=_json_int, parse_float=_json_float,
                          object_pairs_hook=object_pairs_hook or _unique_pairs)
    except _RepeatedKey as exc:
        # The parser has no position for it here; the key names the object.
        raise JSONInputError(f"key {exc.key!r} repeated in one JSON object (which value is meant?)") from None
    except json.JSONDecodeError as exc:
        raise JSONInputError(f"malformed JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})",
                             exc.lineno) from None
    except RecursionError:
        raise JSONInputError("JSON nested too deeply to read") from None


def json_number(value, what: str) -> float:
    """``value`` (a parsed JSON value) as a finite float; ValueError naming ``what`` otherwise.

    No coercion: ``true``, ``"2.5"`` and null are refused, as are the :class:`BadNumber` markers and
    integers too large for a float.
    """
    if isinstance(value, BadNumber):
        raise ValueError(f"{what} is {value}, not a finite number")
    if value is None:
        raise ValueError(f"{what} is null, not a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        shown = json.dumps(value)[:40] if isinstance(value, (bool, str)) else ""
        raise ValueError(f"{what} is a JSON {json_type_name(value)}{' ' + shown if shown else ''}, not a number")
    try:
        out = float(value)
    except OverflowError:
        raise ValueError(f"{what} is an integer of {len(str(abs(value)))} digits, too large") from None
    if not math.isfinite(out):
        raise ValueError(f"{what} is {value!r}, not a finite number")
    return out


def json_type_name(value) -> str:
    """The JSON name of a parsed value's type, for messages (``string``, ``number``, ``null``...)."""
    if isinstance(value, BadNumber):
        return f"number {value}"
    names = {bool: "boolean", str: "string", list: "array", dict: "object", int: "number", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


_DECIMAL_RE = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$", re.ASCII)  # float() reads "\u0663" too


def text_number(text: str, what: str) -> float:
    """A decimal number written in a text field (TSV) as a finite float; ValueError naming ``what``.

    Only plain decimals (``2``, ``-0.5``, ``1e3``): ``nan``, ``inf``, ``1_000`` and overflowing values,
    which Python's ``float`` would accept or turn into infinity, are refused.
    """
    s = text.strip()
    if not _DECIMAL_RE.match(s):
        raise ValueError(f"{what} {text[:40]!r} is not a decimal number")
    value = float(s)
    if not math.isfinite(value):
        raise ValueError(f"{what} {text[:40]!r} is out of range")
    return value


def movie_of(clip_id: str) -> str:
    """The movie folder of a clip id (its id without the last ``_`` field), without full parsing."""
    return clip_id.rsplit("_", 1)[0]


@dataclass(frozen=True)
class DescriptionRow:
    """One row of a 6-column description file.

    Attributes:
        clip_id: the LSMDC clip id (not unique: a clip may carry several sentences).
        start_aligned, end_aligned: the annotated times, seconds into the movie.
        start_extracted, end_extracted: the times of the cut clip (padded to at least 2 s).
        sentence: the description sentence, as written.
        line: 1-based line number in the file it was read from (0 when built in memory).
    """

    clip_id: str
    start_aligned: float
    end_aligned: float
    start_extracted: float
    end_extracted: float
    sentence: str
    line: int = field(default=0, compare=False)
    # The four time stamps as written, so that writing back is byte-identical.
    raw_times: tuple[str, str, str, str] | None = field(default=None, compare=False, repr=False)

    @property
    def clip(self) -> ClipId:
        return ClipId.parse(self.clip_id)

    @property
    def movie(self) -> str:
        return movie_of(self.clip_id)

    def time_fields(self) -> list[str]:
        secs = (self.start_aligned, self.end_aligned, self.start_extracted, self.end_extracted)
        if self.raw_times is not None and all(
            abs(parse_timestamp(r) - s) < 5e-4 for r, s in zip(self.raw_times, secs)
        ):
            return list(self.raw_times)
        return [format_timestamp(s) for s in secs]

    def fields(self) -> list[str]:
        return [self.clip_id, *self.time_fields(), self.sentence]


@dataclass(frozen=True)
class FIBRow(DescriptionRow):
    """One row of an 8-column FIB file: a description row plus the question and its answer.

    Attributes:
        fill_in: the sentence with the blank written as ``_____``.
        blank: the answer (the blanked word).
    """

    fill_in: str = ""
    blank: str = ""

    def fields(self) -> list[str]:
        return [*super().fields(), self.fill_in, self.blank]


@dataclass
class ReadResult:
    """What a reader returns: the rows kept, the rows skipped (errors) and the quirks kept (warnings)."""

    path: str
    rows: list
    problems: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)

    def __iter__(self) -> Iterator:
        return iter(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def warning_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in self.warnings:
            counts[w.kind] = counts.get(w.kind, 0) + 1
        return counts


def missing_reason(path: str | os.PathLike, missing: str = "no such file") -> str:
    """Why ``path``, which is neither a file nor a folder, cannot be opened: ``missing``, unless it is a
    symbolic link loop (``Path.exists()`` is False on a loop, so it would read as missing)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
    return missing


_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"),
         (b"\xfe\xff", "UTF-16"))
# Bytes looked at: enough to see that text is UTF-16 without a byte-order mark (every other byte NUL).
ENCODING_PROBE_BYTES = 4096


def not_utf8_problem(head: bytes) -> str | None:
    """Why a text file starting with ``head`` is not UTF-8 text at all (UTF-16/32, or NUL bytes all
    through it), or None. One line for the whole file, instead of one "invalid UTF-8" per row.

    A lone NUL is left to the row readers, which name its line; a quarter of the bytes NUL is not text.
    """
    for bom, name in _BOMS:
        if head.startswith(bom):
            return f"{name} text (byte-order mark); save it as UTF-8"
    if len(head) >= 16 and head.count(0) * 4 >= len(head):
        return "NUL bytes all through it (UTF-16/32 text without a byte-order mark, or binary data); save it as UTF-8"
    return None


def check_input_file(path: Path) -> None:
    """Raise :class:`FormatError` unless ``path`` is a readable regular file of UTF-8 text (or at least
    not UTF-16/32: :func:`not_utf8_problem`); says "is a directory" or "symbolic link loop"."""
    if path.is_dir():
        raise FormatError(path, None, "is a directory, not a file")
    if not path.is_file():
        raise FormatError(path, None, missing_reason(path))
    try:
        with open(path, "rb") as fh:
            head = fh.read(ENCODING_PROBE_BYTES)
    except OSError as exc:
        raise FormatError(path, None, f"cannot be read ({(exc.strerror or str(exc)).lower()})") from None
    problem = not_utf8_problem(head)
    if problem:
        raise FormatError(path, None, problem)


class _RowError(Exception):
    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


def _iter_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Yield (line number, text) for each line; accepts a UTF-8 BOM and CRLF line ends."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            if raw.endswith(b"\n"):
                raw = raw[:-1]
            if raw.endswith(b"\r"):
                raw = raw[:-1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield lineno, _RowError(f"invalid UTF-8 at byte {exc.start}", "encoding")  # type: ignore[misc]
                continue
            yield lineno, text


def _parse_times(cols: Sequence[str]) -> tuple[float, float, float, float]:
    names = DESCRIPTION_COLUMNS[1:5]
    secs = []
    for name, text in zip(names, cols):
        try:
            secs.append(parse_timestamp(text))
        except ValueError as exc:
            raise _RowError(f"{name}: {exc}", "timestamp") from None
    sa, ea, se, ee = secs
    if sa > ea:
        raise _RowError(f"START_ALIGNED {cols[0]} is after END_ALIGNED {cols[1]}", "start_after_end")
    if se > ee:
        raise _RowError(f"START_EXTRACTED {cols[2]} is after END_EXTRACTED {cols[3]}", "start_after_end")
    # The cut clip is the aligned segment padded: a clip that misses part of it cannot show what the
    # sentence describes (all 23,514 rows of the real val files are covered).
    if se > sa + ID_TIME_TOLERANCE or ee < ea - ID_TIME_TOLERANCE:
        raise _RowError(f"EXTRACTED {cols[2]}-{cols[3]} does not cover ALIGNED {cols[0]}-{cols[1]}",
                        "extracted_range")
    return sa, ea, se, ee


def _parse_description(cols: list[str], lineno: int) -> DescriptionRow:
    clip_id = cols[0]
    if not clip_id.strip():
        raise _RowError("empty CLIP_ID", "clip_id")
    times = _parse_times(cols[1:5])
    problem = lsmdc_clip_problem(clip_id, times[0], times[1])
    if problem:
        raise _RowError(f"CLIP_ID: {problem}", "clip_id")
    sentence = cols[5]
    if not sentence.strip():
        raise _RowError("empty SENTENCE", "empty_sentence")
    _check_text(sentence, "SENTENCE")
    return DescriptionRow(clip_id, *times, sentence, line=lineno, raw_times=tuple(cols[1:5]))


def _check_text(value: str, column: str) -> None:
    problem = text_problem(value)
    if problem:
        raise _RowError(f"{column}: {problem}", "control_character")


def _fib_quirks(row: FIBRow) -> list[tuple[str, str]]:
    """Quirks of the original release that are kept (reason, kind).

    A FILL_IN without ``_____`` (rows of the real val file: the original script wrote a stale question
    for a sentence with nothing to blank) is kept as ``no_blank``: published all-rows scores count it.
    """
    if BLANK not in row.fill_in:
        return [(f"FILL_IN holds no {BLANK!r}: {row.fill_in!r}", "no_blank")]
    quirks = []
    i = row.fill_in.index(BLANK)
    before = row.fill_in[i - 1] if i > 0 else " "
    after = row.fill_in[i + len(BLANK)] if i + len(BLANK) < len(row.fill_in) else " "
    if before.isalnum() or after.isalnum():
        quirks.append((f"blank inside a word: {row.fill_in!r}", "blank_inside_word"))
    filled = row.fill_in.replace(BLANK, row.blank, 1)
    if filled != row.sentence:
        if row.sentence.startswith(filled):
            quirks.append(("FILL_IN with BLANK filled in is only the start of SENTENCE "
                           "(a repeated word truncated it)", "truncated_fill_in"))
        else:
            raise _RowError("FILL_IN with BLANK filled in does not reproduce SENTENCE", "mismatch")
    return quirks


def _read(path, ncols: int, errors: ErrorMode) -> ReadResult:
    if errors not in ("strict", "skip"):
        raise ValueError(f"errors must be 'strict' or 'skip', not {errors!r}")
    path = Path(path)
    check_input_file(path)
    result = ReadResult(str(path), [])
    saw_line = False
    for lineno, text in _iter_lines(path):
        saw_line = True
        try:
            if isinstance(text, _RowError):
                raise text
            cols = text.split("\t")
            if len(cols) != ncols:
                raise _RowError(f"expected {ncols} tab-separated columns, found {len(cols)}", "columns")
            row = _parse_description(cols[:6], lineno)
            if ncols == 8:
                fill_in, blank = cols[6], cols[7]
                if fill_in.count(BLANK) > 1 or BLANK + "_" in fill_in:
                    raise _RowError(f"FILL_IN must contain one {BLANK!r} (or none, a kept quirk), "
                                    "not more", "fill_in")
                if not blank.strip():
                    raise _RowError("empty BLANK (answer)", "empty_answer")
                if any(c.isspace() for c in blank):  # a one-word answer: no valid submission could match it
                    raise _RowError(f"BLANK {blank!r} holds whitespace (an answer is one word)", "answer_whitespace")
                _check_text(fill_in, "FILL_IN")
                _check_text(blank, "BLANK")
                row = FIBRow(*[getattr(row, f) for f in
                               ("clip_id", "start_aligned", "end_aligned", "start_extracted",
                                "end_extracted", "sentence")],
                             line=lineno, raw_times=row.raw_times, fill_in=fill_in, blank=blank)
                for reason, kind in _fib_quirks(row):
                    result.warnings.append(RowProblem(str(path), lineno, reason, kind))
        except _RowError as exc:
            if errors == "strict":
                raise FormatError(path, lineno, exc.reason) from None
            result.problems.append(RowProblem(str(path), lineno, exc.reason, exc.kind))
            continue
        result.rows.append(row)
    if not saw_line:
        raise FormatError(path, None, "empty file")
    return result


def read_descriptions(path: str | os.PathLike, *, errors: ErrorMode = "strict") -> ReadResult:
    """Read a 6-column LSMDC description file (``LSMDC16_annos_<split>.csv``)."""
    return _read(path, 6, errors)


def read_fib(path: str | os.PathLike, *, errors: ErrorMode = "strict") -> ReadResult:
    """Read an 8-column LSMDC FIB question file (``LSMDC16_annos_<split>_FIB.csv``)."""
    return _read(path, 8, errors)


def _check_field(value: str, name: str) -> None:
    if "\t" in value or "\n" in value or "\r" in value:
        raise ValueError(f"{name} {value!r} contains a tab or a line break; LSMDC files cannot hold it")


def write_rows(path: str | os.PathLike, rows: Iterable[DescriptionRow]) -> int:
    """Write description or FIB rows (by their type) atomically: a temp file renamed into place.

    Returns the number of rows written. A crash never leaves a half-written file at ``path``.
    """
    n = 0
    with atomic_output(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            cols = row.fields()
            for name, value in zip(FIB_COLUMNS, cols):
                _check_field(value, name)
            fh.write("\t".join(cols) + "\n")
            n += 1
    return n


write_descriptions = write_rows
write_fib = write_rows
