"""Input adapters: everything the builder reads becomes :class:`SentenceRecord` (or, for official
question files, :class:`ImportedRow`).

Sources:

* LSMDC description files (6 columns, :func:`moviefib.formats.read_descriptions`) -> :func:`from_descriptions`;
* official FIB question files (8 columns), imported as they are -> :func:`read_fib_import`;
* the **generic corpus form** for any described-video corpus -> :func:`read_generic`. One record per
  sentence with the fields ``video`` (id of the video), ``start`` and ``end`` (seconds into the video),
  ``sentence`` and ``split``; any other field is a string label copied to every question of the
  sentence. Two spellings are read: JSON Lines (``.jsonl``, one object per line) and tab-separated text
  with a header line naming the columns (``.tsv``). A segment's clip id is
  ``<video>_<hh.mm.ss.mmm>-<hh.mm.ss.mmm>``, the LSMDC shape, so the video is its "movie".
* ActivityNet-Captions JSON (``{video: {duration, timestamps, sentences}}``) -> :func:`read_activitynet`,
  one reader of the generic form.

The rule for generic records (LSMDC rows follow :mod:`moviefib.formats`'s own rule):

* ``video`` is a string that can be a file name (:func:`~moviefib.formats.id_problem`: no path
  separator, no ``..``, no NUL or control character) without surrounding whitespace; ``split``
  likewise (it names a Parquet file);
* ``start`` and ``end`` are finite numbers with ``0 <= start < end``, at least a millisecond apart
  (the precision of clip ids: closer segments would share one id) and below 1000 hours (the largest
  time a clip id can write), and ``end`` is not past the
  video's ``duration`` (to the millisecond) when one is given. In JSON they must be JSON numbers (no
  ``true``, no ``"2.5"``, no NaN/Infinity, nothing that overflows a float); in TSV plain decimals
  written in ASCII digits;
* ``sentence`` is a non-empty string without NUL or control characters other than tab, LF and CR
  (runs of whitespace, line breaks included, become one space: five sentences of the real ActivityNet
  file start with a line break); extra label fields are strings without control characters, and
  their names (which become Parquet columns) are non-empty, without control characters or surrounding
  whitespace, and do not start with ``__`` (pandas' and Arrow's own column names).

A bad record is a bad row: ``errors="strict"`` raises a :class:`~moviefib.formats.FormatError` naming
the file and the line (JSONL, TSV) or the video and segment (ActivityNet); ``errors="skip"`` drops it
and reports each one. A file that is not JSON at all, or is nested too deeply, is refused whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..formats import (
    DescriptionRow,
    ErrorMode,
    FormatError,
    JSONInputError,
    ReadResult,
    RowProblem,
    check_input_file,
    format_timestamp,
    id_problem,
    json_number,
    json_type_name,
    load_json,
    movie_of,
    read_descriptions,
    read_fib,
    text_number,
    text_problem,
)

GENERIC_FIELDS = ("video", "start", "end", "sentence", "split")
# LSMDC file names -> split names of a dataset folder.
_LSMDC_SPLITS = {"training": "train", "train": "train", "val": "val", "validation": "val",
                 "test": "test", "blindtest": "blindtest"}


@dataclass(frozen=True)
class SentenceRecord:
    """One description sentence of a clip, the builder's unit of input.

    Attributes:
        clip_id: LSMDC clip id, or ``<video>_<start>-<end>`` for a generic corpus.
        movie: the movie (or video) of the clip.
        split: the split the sentence belongs to.
        start_aligned, end_aligned: annotated segment, seconds.
        start_extracted, end_extracted: the clip actually cut, seconds (= aligned for generic corpora).
        sentence: the sentence, original casing and punctuation.
        source: ``file:line`` (or ``file:video#segment``) it came from, for messages.
        labels: extra string labels ``(name, value)`` copied to each question of the sentence.
    """

    clip_id: str
    movie: str
    split: str
    start_aligned: float
    end_aligned: float
    start_extracted: float
    end_extracted: float
    sentence: str
    source: str = ""
    labels: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class ImportedRow:
    """One row of an official FIB file, kept as it is.

    Attributes:
        record: the sentence part of the row.
        question: FILL_IN, the sentence with ``_____``.
        answer: BLANK, the answer.
        row: 0-based row number in the file (the question id is ``<split>-<row>``).
    """

    record: SentenceRecord
    question: str
    answer: str
    row: int


@dataclass
class Loaded:
    """What an adapter returns: the records and the bad rows / kept quirks it reported."""

    records: list
    problems: list[RowProblem] = field(default_factory=list)
    warnings: list[RowProblem] = field(default_factory=list)


def split_from_filename(path: str | os.PathLike) -> str:
    """``LSMDC16_annos_training.csv`` -> ``train``, ``..._val_FIB.csv`` -> ``val`` and so on."""
    stem = Path(path).name.split(".")[0]
    parts = stem.split("_")
    if parts and parts[-1].upper() == "FIB":
        parts = parts[:-1]
    if not parts:
        raise FormatError(path, None, "cannot tell the split from the file name (give it as SPLIT=FILE)")
    return _LSMDC_SPLITS.get(parts[-1].lower(), parts[-1].lower())


def _checked_split(split: str, path) -> str:
    """A split name names a Parquet file of the dataset: it must be a plain file name."""
    problem = id_problem(split)
    if problem:
        raise FormatError(path, None, f"bad split name: {problem}")
    return split


def _record(row: DescriptionRow, split: str, path: str) -> SentenceRecord:
    return SentenceRecord(
        clip_id=row.clip_id, movie=movie_of(row.clip_id), split=split,
        start_aligned=row.start_aligned, end_aligned=row.end_aligned,
        start_extracted=row.start_extracted, end_extracted=row.end_extracted,
        sentence=row.sentence, source=f"{path}:{row.line}",
    )


def from_descriptions(path: str | os.PathLike, split: str | None = None, *,
                      errors: ErrorMode = "strict") -> Loaded:
    """Sentences of an LSMDC description file; the split defaults to the one in the file name."""
    split = _checked_split(split or split_from_filename(path), path)
    res: ReadResult = read_descriptions(path, errors=errors)
    return Loaded([_record(r, split, res.path) for r in res.rows], list(res.problems), list(res.warnings))


def read_fib_import(path: str | os.PathLike, split: str | None = None, *,
                    errors: ErrorMode = "strict") -> Loaded:
    """Every row of an official FIB file as :class:`ImportedRow`, duplicates and quirks included."""
    split = _checked_split(split or split_from_filename(path), path)
    res = read_fib(path, errors=errors)
    rows = [ImportedRow(_record(r, split, res.path), r.fill_in, r.blank, r.line - 1) for r in res.rows]
    return Loaded(rows, list(res.problems), list(res.warnings))


# Clip ids write hours in at most three digits (:func:`moviefib.formats.parse_timestamp`).
MAX_SECONDS = 1000 * 3600


def _label_name_problem(name: str) -> str | None:
    """Why a label field's name cannot be a column of the question table, or None."""
    if not name.strip() or name != name.strip():
        return f"label name {name!r} is empty or has whitespace around it"
    if text_problem(name):
        return f"label name {name!r} holds a control character"
    if name.startswith("__"):
        return f"label name {name!r} starts with '__' (kept for pandas' and Arrow's own columns)"
    return None


def generic_clip_id(video: str, start: float, end: float) -> str:
    return f"{video}_{format_timestamp(start)}-{format_timestamp(end)}"


class _BadRecord(ValueError):
    def __init__(self, reason: str, kind: str):
        super().__init__(reason)
        self.reason, self.kind = reason, kind


def _number(value, what: str) -> float:
    """A time of a record, which must already be a number (the TSV reader converts its text fields)."""
    try:
        return json_number(value, what)
    except ValueError as exc:
        raise _BadRecord(str(exc), "timestamp") from None


def _name_problem(value, what: str) -> str | None:
    if not isinstance(value, str):
        return f"{what} must be a string, not a JSON {json_type_name(value)}"
    if not value.strip():
        return f"empty {what}"
    if value != value.strip():  # "v1 " and "v1" would be two videos, and no file is named "v1 "
        return f"{what} {value!r} has whitespace around it"
    problem = id_problem(value)
    return f"{what}: {problem}" if problem else None


def _check_segment(start, end, duration=None) -> tuple[float, float]:
    s, e = _number(start, "start"), _number(end, "end")
    if duration is not None:
        duration = _number(duration, "duration")
        if duration <= 0:  # else every segment would read as ending past it
            raise _BadRecord(f"the video's duration {duration} is not positive", "timestamp")
    if s < 0:
        raise _BadRecord(f"negative start {s}", "timestamp")
    if s >= e:
        raise _BadRecord(f"start {s} is not before end {e}", "start_after_end")
    if e >= MAX_SECONDS:
        raise _BadRecord(f"end {e} is past 999.59.59.999, the largest time a clip id can write", "timestamp")
    if round(e * 1000) <= round(s * 1000):  # as format_timestamp rounds them
        raise _BadRecord(f"segment {s}-{e} is shorter than a millisecond, the precision of clip ids",
                         "start_after_end")
    # Compared to the millisecond (the precision of clip ids): the ActivityNet file writes ends such as
    # 70.29 against a duration of 70.28999999999999.
    if duration is not None and round(e, 3) > round(float(duration), 3):
        raise _BadRecord(f"end {e} is past the video's duration {duration}", "end_past_duration")
    return s, e


def generic_record(video: str, start, end, sentence: str, split: str, *, source: str = "",
                   labels: Mapping[str, str] | None = None, duration=None) -> SentenceRecord:
    """Validate one generic-form record (raises ValueError with the reason; rule in the module docs).

    ``start``, ``end`` and ``duration`` must be numbers (a text field is converted by its reader).
    """
    problem = _name_problem(video, "video id")
    if problem:
        raise _BadRecord(problem, "clip_id")
    if not isinstance(sentence, str):
        raise _BadRecord(f"sentence must be a string, not a JSON {json_type_name(sentence)}", "empty_sentence")
    if not sentence.strip():
        raise _BadRecord("empty sentence", "empty_sentence")
    # Checked before whitespace is normalised: str.split() would turn some control characters into spaces.
    problem = text_problem(sentence, line_breaks=True)
    if problem:
        raise _BadRecord(f"sentence: {problem}", "control_character")
    problem = _name_problem(split, "split")
    if problem:
        raise _BadRecord(problem, "split")
    for name, value in (labels or {}).items():
        problem = _label_name_problem(name)
        if problem:
            raise _BadRecord(problem, "label")
        if not isinstance(value, str):
            raise _BadRecord(f"label {name!r} must be a string, not a JSON {json_type_name(value)}", "label")
        problem = text_problem(value)
        if problem:
            raise _BadRecord(f"label {name!r}: {problem}", "control_character")
    s, e = _check_segment(start, end, duration)
    sentence = " ".join(sentence.split())
    return SentenceRecord(
        clip_id=generic_clip_id(video, s, e), movie=video, split=split, start_aligned=s, end_aligned=e,
        start_extracted=s, end_extracted=e, sentence=sentence, source=source,
        labels=tuple(sorted((labels or {}).items())),
    )


def _collect(items: Iterable[tuple[str, int | None, dict | _BadRecord]], path: str,
             errors: ErrorMode) -> Loaded:
    """Turn ``(where, line, fields)`` into records under the strict/skip policy.

    ``where`` names the record inside the file when there are no line numbers (a JSON file).
    """
    if errors not in ("strict", "skip"):
        raise ValueError(f"errors must be 'strict' or 'skip', not {errors!r}")
    out = Loaded([])
    for where, line, f in items:
        try:
            if isinstance(f, _BadRecord):
                raise f
            missing = [k for k in GENERIC_FIELDS if k not in f]
            if missing:
                raise _BadRecord(f"missing field(s) {', '.join(missing)}", "columns")
            labels = {k: v for k, v in f.items() if k not in GENERIC_FIELDS and k != "duration"}
            source = f"{path}:{line}" if line is not None else f"{path}: {where}"
            rec = generic_record(f["video"], f["start"], f["end"], f["sentence"], f["split"],
                                 source=source, labels=labels, duration=f.get("duration"))
        except _BadRecord as exc:
            reason = exc.reason if line is not None else f"{where}: {exc.reason}"
            if errors == "strict":
                raise FormatError(path, line, reason) from None
            out.problems.append(RowProblem(path, line or 0, reason, exc.kind))
            continue
        out.records.append(rec)
    if not out.records and not out.problems:  # else "no valid sentences" later, without the file's name
        raise FormatError(path, None, "holds no records (the file is empty, or a header or {} only)")
    return out


def _jsonl_fields(line: str) -> dict | _BadRecord:
    """One JSON Lines record, or why the line is not one (a bad row, skippable like any other)."""
    try:
        obj = load_json(line)
    except JSONInputError as exc:
        return _BadRecord(exc.reason, "json")
    if not isinstance(obj, dict):
        return _BadRecord(f"expected a JSON object, found a JSON {json_type_name(obj)}", "json")
    return obj


def _tsv_fields(fields: dict[str, str]) -> dict | _BadRecord:
    """A TSV row's fields with its times converted from text (plain decimals only)."""
    out = dict(fields)
    for name in ("start", "end", "duration"):
        if name in out:
            try:
                out[name] = text_number(out[name], name)
            except ValueError as exc:
                return _BadRecord(str(exc), "timestamp")
    return out


def _check_header(path: Path, header: list[str], lineno: int) -> None:
    """A TSV header names every field, and each once: a repeated column would silently keep its last."""
    missing = [k for k in GENERIC_FIELDS if k not in header]
    if missing:
        raise FormatError(path, None, f"header lacks column(s) {', '.join(missing)} (line {lineno})")
    repeated = sorted({k for k in header if header.count(k) > 1})
    if repeated:
        raise FormatError(path, None, f"header names column(s) {', '.join(map(repr, repeated))} more than "
                                      f"once (line {lineno})")


def read_generic(path: str | os.PathLike, *, errors: ErrorMode = "strict") -> Loaded:
    """Read a corpus in the generic form (``.jsonl`` or ``.tsv`` with a header); see module docs."""
    path = Path(path)
    check_input_file(path)
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".tsv"):
        raise FormatError(path, None, "generic corpus files must be .jsonl or .tsv")

    def items():
        with open(path, encoding="utf-8-sig") as fh:
            header = None
            for lineno, line in enumerate(fh, start=1):
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                if suffix == ".jsonl":
                    yield "", lineno, _jsonl_fields(line)
                elif header is None:
                    header = line.split("\t")
                    _check_header(path, header, lineno)
                else:
                    cols = line.split("\t")
                    if len(cols) != len(header):
                        yield "", lineno, _BadRecord(
                            f"expected {len(header)} tab-separated columns, found {len(cols)}", "columns")
                        continue
                    yield "", lineno, _tsv_fields(dict(zip(header, cols)))

    try:
        return _collect(items(), str(path), errors)
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"invalid UTF-8 at byte {exc.start}") from None


def read_activitynet(path: str | os.PathLike, split: str = "train", *,
                     errors: ErrorMode = "strict") -> Loaded:
    """Read an ActivityNet-Captions JSON file ``{video: {duration, timestamps, sentences}}``."""
    path = Path(path)
    check_input_file(path)
    try:
        data = load_json(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"invalid UTF-8 at byte {exc.start}") from None
    except JSONInputError as exc:
        raise FormatError(path, None, exc.reason) from None  # the reason says where
    if not isinstance(data, dict):
        raise FormatError(path, None, "expected an object {video: {duration, timestamps, sentences}}")

    def items():
        for video, entry in data.items():
            ts = entry.get("timestamps") if isinstance(entry, dict) else None
            sents = entry.get("sentences") if isinstance(entry, dict) else None
            if not isinstance(ts, list) or not isinstance(sents, list) or len(ts) != len(sents):
                raise FormatError(path, None, f"video {video}: needs lists 'timestamps' and 'sentences' "
                                              "of the same length")
            for k, (seg, sent) in enumerate(zip(ts, sents)):
                where = f"video {video} segment {k}"
                if not isinstance(seg, list) or len(seg) != 2:
                    shown = f"a list of {len(seg)}" if isinstance(seg, list) else f"a JSON {json_type_name(seg)}"
                    yield where, None, _BadRecord(f"a timestamp must be a pair [start, end], not {shown}",
                                                  "timestamp")
                    continue
                yield (where, None,
                       {"video": video, "start": seg[0], "end": seg[1], "sentence": sent, "split": split,
                        "duration": entry.get("duration")})

    return _collect(items(), str(path), errors)


def split_by_movie(records: Sequence[SentenceRecord], fractions: Mapping[str, float], *,
                   seed: str = "moviefib") -> list[SentenceRecord]:
    """Reassign splits so that every movie lies in exactly one split.

    Movies are ordered by a hash of ``seed`` and their name (stable across runs and machines) and
    cut into consecutive groups whose sentence counts follow ``fractions`` (normalised to sum 1).
    """
    from dataclasses import replace

    if not fractions or any(v < 0 for v in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"bad split fractions {dict(fractions)!r}")
    total = sum(fractions.values())
    sizes: dict[str, int] = {}
    for r in records:
        sizes[r.movie] = sizes.get(r.movie, 0) + 1
    movies = sorted(sizes, key=lambda m: hashlib.sha1(f"{seed}\t{m}".encode()).hexdigest())
    n = sum(sizes.values())
    assign: dict[str, str] = {}
    names = list(fractions)
    bounds, acc = [], 0.0
    for name in names:
        acc += fractions[name] / total
        bounds.append(acc * n)
    done = 0
    k = 0
    for m in movies:
        # a movie goes to the split whose share its middle falls into
        mid = done + sizes[m] / 2
        while k < len(names) - 1 and mid > bounds[k]:
            k += 1
        assign[m] = names[k]
        done += sizes[m]
    return [replace(r, split=assign[r.movie]) for r in records]
