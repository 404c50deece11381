"""Scoring protocols beside the official all-rows score: ``frozenbilm`` scores the rows FrozenBiLM's
code scores, so that a number can sit in the same table as its published ones.

What FrozenBiLM's LSMDC preprocessing does (``preproc/preproc_lsmdc.py`` and
``datasets/videoqa_dataset.py`` of antoyang/FrozenBiLM, pandas 1.4.1 in its requirements):

1. each FIB file is read by ``pandas.read_csv(path, sep="\\t")``: no ``header=None``, so the file's first
   row becomes the column header and is not a question; pandas' default quoting, so a field that starts
   with ``"`` runs to the next closing quote, tabs and line breaks included (rows merge, quotes vanish);
   pandas' default missing values (``NA``, ``null``, ``nan``, an empty field...) become NaN;
2. rows whose question holds no ``_____`` are dropped, in every split;
3. the answer vocabulary is the 1,000 most frequent answers of the training file (``Counter.most_common``:
   ties in order of first appearance); training rows with other answers are dropped, val/test rows
   with other answers stay and can never be right (their answer id is -1).

Here the files are read by pandas itself (the tokenizer, quoting included, is pandas' own), then its
1.4.1 missing-value rule is applied, since later pandas also reads ``None`` as missing. The files are
the official ones given explicitly, or rebuilt from a dataset imported from them (``moviefib build
import`` keeps every row, its question id ``<split>-<row>`` naming the file line). A dataset built from
description sentences has no file rows: then only step 2 (and 3, from its train split) apply, and the
result says so.
"""

from __future__ import annotations

import io
import json
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import dataset as ds
from ..formats import BLANK, format_timestamp
from ..schema import STATS_FILE
from .errors import InputError, MissingInput, ResourceUnavailable, UsageError

OFFICIAL = "official"
FROZENBILM = "frozenbilm"
PROTOCOLS = (OFFICIAL, FROZENBILM)
TOP_ANSWERS = 1000
TRAIN_SPLIT = "train"
N_COLUMNS = 8
# pandas 1.4.1's default missing values (pandas 2.0 added "None"): FrozenBiLM's pinned version.
PANDAS_1_4_NA = frozenset({"", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND",
                           "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "n/a", "nan", "null"})
_TIME_COLUMNS = ("start_aligned", "end_aligned", "start_extracted", "end_extracted")
_EXAMPLES = 5


@dataclass(frozen=True)
class FileRow:
    """One row of a FIB file as FrozenBiLM's pandas call reads it.

    Attributes:
        line: the 1-based file line the row starts on (a quoted field may run over later lines).
        question: the FILL_IN field, None where pandas reads a missing value.
        answer: the BLANK field, None where pandas reads a missing value.
    """

    line: int
    question: str | None
    answer: str | None


@dataclass(frozen=True)
class ProtocolStep:
    """One step of a protocol: whether it could be applied, the rows it touched, and how."""

    name: str
    applied: bool
    rows: int
    note: str

    def to_dict(self) -> dict:
        return {"step": self.name, "applied": self.applied, "rows": self.rows, "note": self.note}


@dataclass(frozen=True, eq=False)
class ProtocolRows:
    """Which questions of the split a protocol scores, and against what.

    Attributes:
        name: the protocol (``frozenbilm``). source: where the file rows came from.
        steps: what was applied, in order. comparable: every step applied from official files and
            every row FrozenBiLM scores is a question of the dataset (the number sits in its tables).
        n_rows: the rows FrozenBiLM's code scores (its denominator). n_absent: of these, rows that are
            no question of the dataset (skipped at import): they cannot be scored here.
        scored: bool per key row, scored under the protocol.
        gold: per key row, the answer as the protocol reads it (None: pandas reads it as missing).
        answerable: bool per key row, the gold answer is one the protocol's model can give (in the
            1,000 training answers; all True when that step is not applied).
    """

    name: str
    source: str
    steps: tuple[ProtocolStep, ...]
    comparable: bool
    n_rows: int
    n_absent: int
    scored: np.ndarray = field(repr=False)
    gold: tuple[str | None, ...] = field(repr=False)
    answerable: np.ndarray = field(repr=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "source": self.source, "comparable": self.comparable,
                "n_rows": self.n_rows, "n_scored": int(self.scored.sum()), "n_absent": self.n_absent,
                "steps": [s.to_dict() for s in self.steps]}


@dataclass(frozen=True)
class ProtocolScore:
    """One submission under a protocol: ``correct`` of ``n`` scored rows; ``unanswerable_matches``:
    answers equal to a gold answer outside the 1,000 training answers, counted wrong as FrozenBiLM's
    code counts them."""

    protocol: str
    n: int
    correct: int
    unanswerable_matches: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        return {"n": self.n, "correct": self.correct, "accuracy": self.accuracy,
                "unanswerable_matches": self.unanswerable_matches}


# --- reading a FIB file as pandas does ------------------------------------------------------------

def _pandas():
    try:
        import pandas
    except ImportError:
        raise ResourceUnavailable("--protocol frozenbilm reads the FIB files with pandas, as FrozenBiLM "
                                  "does (pip install pandas)") from None
    return pandas


def _read_tsv(pd, data: bytes, where: str, **options):
    """``pandas.read_csv(sep="\\t")`` with every field kept as its text; pandas' own errors in one line."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # index_col=False on long rows warns; the rows are checked
            return pd.read_csv(io.BytesIO(data), sep="\t", dtype=str, na_filter=False, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())
        raise InputError(f"{where}: pandas cannot read it as FrozenBiLM's preprocessing does ({reason})") from None


def _numbered(data: bytes) -> bytes:
    """The file with ``<line>\\t`` before each line pandas does not skip as blank, so that a row's first
    field names the line it starts on; inside a quoted field the prefix is only more text."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    out = []
    for i, line in enumerate(data.split(b"\n")[:-1] if data.endswith(b"\n") else data.split(b"\n"), 1):
        blank = not line.rstrip(b"\r").strip(b" ")  # pandas skips empty and space-only lines
        out.append(line if blank else b"%d\t%s" % (i, line))
    return b"\n".join(out) + b"\n"


def _start_lines(pd, data: bytes, frame, where: str) -> list[int]:
    """The line each row of ``frame`` (pandas' reading of ``data``) starts on, checked row by row."""
    numbered = _read_tsv(pd, _numbered(data), where, index_col=False)
    values = frame.to_numpy().tolist()
    lines_col = numbered.iloc[:, 0].tolist()
    rest = numbered.iloc[:, 1:N_COLUMNS + 1].to_numpy().tolist()
    if len(lines_col) != len(values):
        raise InputError(f"{where}: cannot tell the file line of each row pandas reads "
                         f"({len(values)} rows, {len(lines_col)} numbered); a lone carriage return?")
    lines = []
    for i, (number, row, other) in enumerate(zip(lines_col, values, rest)):
        merged = any("\n" in v or "\r" in v for v in row)
        if not str(number).isdigit() or (not merged and row != other) or (lines and int(number) <= lines[-1]):
            raise InputError(f"{where}: cannot tell the file line of row {i + 1} pandas reads "
                             "(a lone carriage return splits a line?)")
        lines.append(int(number))
    return lines


def read_like_frozenbilm(data: bytes, *, where: str) -> tuple[FileRow, ...]:
    """The rows of FIB file bytes as FrozenBiLM's ``read_csv(sep="\\t")`` gives them: the first row
    taken as the header (absent here), quoting applied, pandas 1.4.1's missing values as None."""
    pd = _pandas()
    frame = _read_tsv(pd, data, where)
    if frame.shape[1] != N_COLUMNS:
        raise InputError(f"{where}: pandas reads {frame.shape[1]} columns, FrozenBiLM's preprocessing "
                         f"names {N_COLUMNS} (not an official 8-column FIB file?)")
    if not isinstance(frame.index, pd.RangeIndex):
        raise InputError(f"{where}: its second line has one field more than its first, so pandas takes "
                         "the first column as the index and FrozenBiLM's columns would be shifted")
    lines = _start_lines(pd, data, frame, where)
    na = PANDAS_1_4_NA
    return tuple(FileRow(line, None if q in na else q, None if a in na else a)
                 for line, q, a in zip(lines, frame.iloc[:, 6].tolist(), frame.iloc[:, 7].tolist()))


def top_answers(rows: Sequence[FileRow], n: int = TOP_ANSWERS) -> frozenset[str]:
    """The ``n`` most frequent answers of training rows, ties by first appearance (``most_common``);
    a missing answer takes a place, as pandas' NaN does, and matches nothing."""
    ranked = Counter(r.answer for r in rows).most_common(n)
    return frozenset(a for a, _ in ranked if a is not None)


# --- the file behind a dataset's split --------------------------------------------------------------

def row_numbers(question_ids: Sequence[str], split: str) -> list[int] | None:
    """The file rows named by imported question ids ``<split>-<row>``, or None if any id is not one."""
    pattern = re.compile(re.escape(split) + r"-(0|[1-9][0-9]*)")
    out = []
    for q in question_ids:
        m = pattern.fullmatch(q)
        if m is None:
            return None
        out.append(int(m.group(1)))
    return out


def _stats(folder: Path) -> dict | None:
    path = folder / STATS_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: cannot be read ({exc})") from None


def not_imported_reason(folder: Path, split: str, question_ids: Sequence[str]) -> str | None:
    """Why the split's rows are not the lines of an official FIB file (None when they are)."""
    stats = _stats(folder)
    if stats is not None and stats.get("kind") != "imported":
        return f"the dataset was {stats.get('kind') or 'not imported'} (not imported from official FIB files)"
    if row_numbers(question_ids, split) is None:
        return "its question ids are not <split>-<row> (not imported from official FIB files)"
    return None


def _rebuild_problem(folder: Path, rows: list[int]) -> str | None:
    """Why the lines of an imported split cannot be rebuilt exactly: lines skipped at import."""
    stats = _stats(folder) or {}
    skipped = stats.get("input_problems") or []
    if skipped:
        return f"{len(skipped)} row(s) of the imported files were skipped at import (stats.json input_problems)"
    gaps = sorted(set(range(max(rows) + 1)) - set(rows))
    if gaps:
        shown = ", ".join(str(g + 1) for g in gaps[:_EXAMPLES]) + (" ..." if len(gaps) > _EXAMPLES else "")
        return f"file line(s) {shown} are no question of the split"
    return None


def rebuilt_file(folder: Path, split: str, key) -> bytes:
    """The FIB file an imported split was read from, rebuilt from its rows (times in the dataset's
    spelling: no time stamp holds a quote, a tab or an underscore, so pandas reads the same rows)."""
    rows = row_numbers(key.question_ids, split)
    problem = _rebuild_problem(folder, rows)
    if problem:
        flag = "--train-fib" if split == TRAIN_SPLIT else "--fib"
        raise InputError(f"split {split!r} of {folder}: its FIB file cannot be rebuilt ({problem}); "
                         f"give the official file with {flag} FILE")
    try:
        extra = ds.read_table(folder, split, columns=["question_id", "sentence", *_TIME_COLUMNS])
    except ds.DatasetError as exc:
        raise InputError(str(exc)) from None
    if extra.column("question_id").to_pylist() != key.question_ids:
        raise InputError(f"{folder}: split {split!r}: the table and its key list different questions")
    cols = [key.table.column("clip_id").to_pylist(),
            *[[format_timestamp(t) for t in extra.column(c).to_pylist()] for c in _TIME_COLUMNS],
            extra.column("sentence").to_pylist(), key.table.column("question").to_pylist(), key.answers]
    lines = [""] * len(rows)
    for row, fields in zip(rows, zip(*cols)):
        lines[row] = "\t".join(fields)
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _file_bytes(path: Path, what: str) -> bytes:
    from ..fileio import special_file_kind

    if path.is_dir():
        raise MissingInput(f"{what} {path}: is a directory, not a file")
    try:
        # A named pipe would block the read until a writer comes; a device is no FIB file.
        kind = special_file_kind(path.stat().st_mode)
        if kind is not None:
            raise MissingInput(f"{what} {path}: is {kind}, not a regular file")
        return path.read_bytes()
    except OSError as exc:
        raise MissingInput(f"{what} {path}: {(exc.strerror or str(exc)).lower()}") from None


def check_file_matches(data: bytes, where: str, split: str, key) -> None:
    """Every question of the split is the line its id names, with the same clip, question and answer."""
    rows = row_numbers(key.question_ids, split)
    if rows is None:
        raise InputError(f"{where}: the question ids of split {split!r} are not <split>-<row>, so its "
                         "rows cannot be matched with the file's (the dataset was not imported from it)")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    n_lines = len(lines) - (1 if data.endswith(b"\n") or not data else 0)  # an empty file has no line
    clips, questions = key.table.column("clip_id").to_pylist(), key.table.column("question").to_pylist()
    for qid, row, clip, question, answer in zip(key.question_ids, rows, clips, questions, key.answers):
        if row >= n_lines:
            raise InputError(f"{where}: has no line {row + 1} for question {qid} of the dataset")
        try:
            fields = lines[row].rstrip(b"\r").decode("utf-8").split("\t")
        except UnicodeDecodeError as exc:
            raise InputError(f"{where} line {row + 1}: invalid UTF-8 at byte {exc.start}") from None
        want = (clip, question, answer)
        if len(fields) != N_COLUMNS:
            raise InputError(f"{where} line {row + 1}: {len(fields)} tab-separated field(s), not the {N_COLUMNS} of "
                             f"question {qid} of the dataset: not the file it was imported from")
        got = (fields[0], fields[6], fields[7])
        if got != want:
            raise InputError(f"{where} line {row + 1}: {got!r} is not question {qid} of the dataset "
                             f"(clip, question, answer {want!r}): not the file it was imported from")


# --- the frozenbilm protocol on a split -------------------------------------------------------------

def _split_rows(folder: Path, key, fib_file) -> tuple[tuple[FileRow, ...] | None, str, str | None]:
    """(the split's file rows or None, where they came from, why there are none)."""
    split = key.split
    if fib_file is not None:
        data = _file_bytes(Path(fib_file), "--fib")
        check_file_matches(data, str(fib_file), split, key)
        return read_like_frozenbilm(data, where=str(fib_file)), str(fib_file), None
    reason = not_imported_reason(folder, split, key.question_ids)
    if reason:
        return None, f"split {split!r} of {folder}", reason
    where = f"{folder}: split {split!r} (its FIB file rebuilt from the imported rows)"
    return read_like_frozenbilm(rebuilt_file(folder, split, key), where=where), where, None


def _rows_without_file(key, reason: str):
    """A split with no file rows: only the blank filter applies (scored, gold, absent, steps)."""
    scored = np.array([BLANK in q for q in key.table.column("question").to_pylist()], bool)
    steps = (ProtocolStep("header", False, 0, f"not applied: {reason}, so no file row is read as the header"),
             ProtocolStep("quoting", False, 0, f"not applied: {reason}, so there is no file text to read "
                                               "with pandas' quoting"),
             ProtocolStep("no_blank", True, int((~scored).sum()), f"questions without {BLANK!r} dropped"))
    return scored, tuple(key.answers), 0, steps


def _rows_from_file(key, file_rows: Sequence[FileRow], where: str):
    """Each question of the split matched by its line with the row pandas reads there, if any."""
    lines = [r + 1 for r in row_numbers(key.question_ids, key.split)]
    by_line = {r.line: r for r in file_rows}
    for r in file_rows:
        if r.question is None:  # str.contains gives NaN there, and the boolean mask stops FrozenBiLM
            raise InputError(f"{where} line {r.line}: pandas reads its FILL_IN as missing (NA): FrozenBiLM's "
                             "preprocessing stops on such a file")
    first = min(by_line, default=max(lines) + 1)
    header = sum(line < first for line in lines)
    merged = sum(line > first and line not in by_line for line in lines)
    have = [by_line.get(line) for line in lines]
    scored = np.array([r is not None and BLANK in r.question for r in have], bool)
    questions = key.table.column("question").to_pylist()
    changed = sum(r is not None and (r.question, r.answer) != (q, a)
                  for r, q, a in zip(have, questions, key.answers))
    absent = len({r.line for r in file_rows if BLANK in r.question} - set(lines))
    steps = (ProtocolStep("header", True, header, "the file's first row is read as the column header, "
                                                  "so it is no question"),
             ProtocolStep("quoting", True, merged + changed,
                          f"{merged} row(s) swallowed by a quoted field of an earlier row, {changed} row(s) "
                          "whose question or answer pandas reads differently (quotes, missing values)"),
             ProtocolStep("no_blank", True, sum(r is not None and BLANK not in r.question for r in have),
                          f"rows whose question holds no {BLANK!r} dropped"))
    return scored, tuple(None if r is None else r.answer for r in have), absent, steps


def _file_top_answers(rows: Sequence[FileRow], where: str) -> frozenset[str]:
    """The training answers of a file's rows; a file of one line (its header) has none, and every
    answer would be counted wrong: a wrong file rather than a score."""
    if not rows:
        raise InputError(f"{where}: no training row after its first line (which pandas reads as the header), "
                         "so no training answer")
    return top_answers(rows)


def _training_answers(folder: Path, key, train_fib_file) -> tuple[frozenset[str] | None, str, bool]:
    """(the 1,000 training answers or None, where from, whether from an official file's rows)."""
    from .key import load_key

    if train_fib_file is not None:
        rows = read_like_frozenbilm(_file_bytes(Path(train_fib_file), "--train-fib"), where=str(train_fib_file))
        return _file_top_answers(rows, str(train_fib_file)), str(train_fib_file), True
    if key.split == TRAIN_SPLIT:
        train = key
    elif TRAIN_SPLIT in ds.available_splits(folder):
        train = load_key(folder, TRAIN_SPLIT)
    else:
        return None, (f"the dataset has no {TRAIN_SPLIT!r} split: give the official training file "
                      "with --train-fib FILE"), False
    reason = not_imported_reason(folder, TRAIN_SPLIT, train.question_ids)
    if reason is None:
        where = f"{folder}: split {TRAIN_SPLIT!r} (its FIB file rebuilt from the imported rows)"
        rows = read_like_frozenbilm(rebuilt_file(folder, TRAIN_SPLIT, train), where=where)
        return _file_top_answers(rows, where), where, True
    rows = [FileRow(0, None, a) for a in train.answers]
    return top_answers(rows), (f"answers of split {TRAIN_SPLIT!r} in row order ({reason}, so no header row "
                               "is dropped)"), False


def _vocabulary_step(key, scored, gold, answers: frozenset[str] | None, where: str):
    """(answerable per row, the step): answers outside the training answers never win."""
    if answers is None:
        return np.ones(len(gold), bool), ProtocolStep("top_answers", False, 0, f"not applied: {where}")
    answerable = np.array([g is not None and g in answers for g in gold], bool)
    outside = int((scored & ~answerable).sum())
    fate = ("dropped, as FrozenBiLM trains on them" if key.split == TRAIN_SPLIT
            else "kept and counted wrong, as in FrozenBiLM (their answer id is -1)")
    return answerable, ProtocolStep("top_answers", True, outside,
                                    f"rows whose answer is not among the {TOP_ANSWERS:,} most frequent "
                                    f"training answers ({where}): {fate}")


def frozenbilm_rows(folder: str | Path, key, *, fib_file=None, train_fib_file=None) -> ProtocolRows:
    """The questions of ``key``'s split that FrozenBiLM's code scores, and their gold answers.

    ``fib_file``: the official FIB file of the split (default: rebuilt from an imported dataset).
    ``train_fib_file``: the official training FIB file (default: the dataset's train split).
    """
    folder = Path(folder)
    file_rows, source, reason = _split_rows(folder, key, fib_file)
    if file_rows is None:
        scored, gold, absent, steps = _rows_without_file(key, reason)
    else:
        scored, gold, absent, steps = _rows_from_file(key, file_rows, source)
    answers, where, official = _training_answers(folder, key, train_fib_file)
    answerable, vocab_step = _vocabulary_step(key, scored, gold, answers, where)
    if key.split == TRAIN_SPLIT:
        scored = scored & answerable
    steps = (*steps, vocab_step)
    comparable = all(s.applied for s in steps) and official and not absent
    return ProtocolRows(FROZENBILM, source, steps, comparable, int(scored.sum()) + absent, absent,
                        scored, gold, answerable)


def protocol_rows(protocol: str, folder, key, *, fib_file=None, train_fib_file=None) -> ProtocolRows | None:
    """The rows of ``protocol`` (None for the official one, which scores every row)."""
    if protocol not in PROTOCOLS:
        raise UsageError(f"--protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    if protocol == OFFICIAL:
        if fib_file is not None or train_fib_file is not None:
            raise UsageError("--fib and --train-fib are read by --protocol frozenbilm only")
        return None
    return frozenbilm_rows(folder, key, fib_file=fib_file, train_fib_file=train_fib_file)


def score_protocol(rows: ProtocolRows, key, answers: Mapping[str, str], *, invalid_ids=frozenset()
                   ) -> ProtocolScore:
    """A submission's answers ``{question_id: answer}`` scored on the protocol's rows and gold answers."""
    n = len(key)
    match = np.fromiter((p is not None and p == g
                         for p, g in zip(map(answers.get, key.question_ids), rows.gold)), bool, n)
    if invalid_ids:
        match[[key.index[q] for q in invalid_ids if q in key.index]] = False
    hit = match & rows.scored
    return ProtocolScore(rows.name, int(rows.scored.sum()), int((hit & rows.answerable).sum()),
                         int((hit & ~rows.answerable).sum()))
