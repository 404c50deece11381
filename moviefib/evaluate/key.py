"""Answer keys: the questions of one split with their true answers.

The answers come from the split's own ``answer`` column, or, for a blind split (all answers null), from
its separate key ``<folder>.keys/<split>.parquet`` (or any key file given explicitly). Question ids of the
table and of the key must match exactly: a key for other questions is an error, never a partial score.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import dataset as ds
from ..dataset import keys_path
from ..formats import id_problem
from ..schema import ANSWER_COUNTS_FILE, COLUMN_NAMES, DATA_DIR, column_problems
from .errors import InputError, MissingInput, UsageError

log = logging.getLogger(__name__)

# Columns the evaluator reads; the others (times, offsets) are not needed to score.
REQUIRED_COLUMNS = ("question_id", "clip_id", "movie", "sentence_id", "question", "answer", "answer_pos")
_EXAMPLES = 5


@dataclass(frozen=True, eq=False)
class AnswerKey:
    """The questions of one split and their true answers, in the table's row order.

    Attributes:
        split: the split name (``val``, ``test``...).
        table: a pyarrow Table with at least :data:`REQUIRED_COLUMNS` (answers filled in from the key of
            a blind split) and any label columns of the dataset.
        sources: the files the questions and answers were read from (fingerprinted in metrics.json).
        answer_counts: training answer counts ``word -> count`` (``vocab/answer_counts.tsv``), or None
            when the dataset has none.
        question_ids: the ``question_id`` column as a list.
        answers: the ``answer`` column as a list (never None).
        index: ``question_id -> row``.
    """

    split: str
    table: object
    sources: tuple[Path, ...]
    answer_counts: dict[str, int] | None
    question_ids: list[str] = field(repr=False)
    answers: list[str] = field(repr=False)
    index: dict[str, int] = field(repr=False)

    @classmethod
    def from_table(cls, table, *, split: str = "val", sources: tuple[Path, ...] = (),
                   answer_counts: dict[str, int] | None = None, where: str = "table") -> AnswerKey:
        """Build a key from a question table whose answers are all present (checks ids and answers)."""
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise InputError(f"{where}: missing column(s) {', '.join(missing)}")
        if table.column("question_id").null_count:
            raise InputError(f"{where}: null question_id")
        # Integer ids would match no submission, integer answers break the scoring, a null sentence
        # id would merge sentences in the bootstrap: named here (answer nulls are counted below).
        problems = column_problems(table, [c for c in REQUIRED_COLUMNS if c != "answer_pos"])
        if problems:
            raise InputError(f"{where}: {'; '.join(problems)}")
        qids = table.column("question_id").to_pylist()
        index = dict(zip(qids, range(len(qids))))
        if len(index) != len(qids):
            seen: set[str] = set()
            dups = [q for q in qids if q in seen or seen.add(q)]
            raise InputError(f"{where}: {len(dups)} duplicate question_id(s), e.g. {dups[:_EXAMPLES]}")
        n_null = table.column("answer").null_count
        if n_null:
            no_answer = [q for q, a in zip(qids, table.column("answer").to_pylist()) if a is None]
            raise InputError(f"{where}: {n_null} question(s) without an answer, "
                             f"e.g. {no_answer[:_EXAMPLES]}")
        answers = table.column("answer").to_pylist()
        if not qids:
            raise InputError(f"{where}: no questions")
        return cls(split, table, tuple(Path(s) for s in sources), answer_counts, qids, answers, index)

    @property
    def label_columns(self) -> tuple[str, ...]:
        """Extra columns of the dataset beyond the declared schema (``question_type``...)."""
        return tuple(c for c in self.table.column_names if c not in COLUMN_NAMES)

    def __len__(self) -> int:
        return len(self.question_ids)


# Large columns the scores never use; not reading them saves most of the table's decoding time.
_UNUSED_COLUMNS = frozenset({"sentence", "start_aligned", "end_aligned", "start_extracted", "end_extracted",
                             "word_index", "char_start", "char_end"})

__all__ = ["REQUIRED_COLUMNS", "AnswerKey", "keys_path", "load_key"]  # keys_path: moviefib.dataset's


def _evaluation_error(exc: ds.DatasetError) -> MissingInput | InputError:
    """The evaluator's error for what the dataset reader found: absent (MissingInput) or malformed."""
    return MissingInput(str(exc)) if isinstance(exc, ds.DatasetNotFound) else InputError(str(exc))


def _first(items, n=_EXAMPLES):
    return ", ".join(items[:n]) + (" ..." if len(items) > n else "")


def _merge_key(table, key_table, key_file: Path):
    """Put the key's answers (and any columns it carries) into the table's row order."""
    import pyarrow as pa

    for col in ("question_id", "answer"):
        if col not in key_table.column_names:
            raise InputError(f"{key_file}: missing column {col!r}")
    key_ids = key_table.column("question_id").to_pylist()
    key_index: dict[str, int] = {}
    for i, q in enumerate(key_ids):
        if key_index.setdefault(q, i) != i:
            raise InputError(f"{key_file}: duplicate question_id {q!r}")
    table_ids = table.column("question_id").to_pylist()
    table_set = set(table_ids)
    absent = [q for q in table_ids if q not in key_index]
    extra = [q for q in key_ids if q not in table_set]
    if absent or extra:
        parts = []
        if absent:
            parts.append(f"{len(absent)} question(s) of the split are not in the key ({_first(absent)})")
        if extra:
            parts.append(f"{len(extra)} key id(s) are not questions of the split ({_first(extra)})")
        raise InputError(f"{key_file}: key does not match the split: " + "; ".join(parts))
    ordered = key_table.take(pa.array([key_index[q] for q in table_ids], pa.int64()))
    for col in ordered.column_names:
        if col == "question_id":
            continue
        values = ordered.column(col)
        if col in table.column_names:
            table = table.set_column(table.column_names.index(col), col, values)
        else:
            table = table.append_column(col, values)
    return table


def load_key(dataset: str | os.PathLike, split: str, *, key_file: str | os.PathLike | None = None
             ) -> AnswerKey:
    """Load the questions of ``split`` from a dataset folder with their answers.

    A blind split's answers are read from ``key_file``, by default ``<folder>.keys/<split>.parquet``.
    A key file given for a split that has answers replaces them (after the same exact id check).
    Every file is read by :mod:`moviefib.dataset`, whose one-line errors name it.

    Raises:
        MissingInput: no such folder, split or key file.
        UsageError: a bad split name.
        InputError: a table or key that cannot be read, lacks columns, or does not match.
    """
    problem = id_problem(split)
    if problem:
        raise UsageError(f"--split: bad split name: {problem}")
    folder = Path(dataset)
    table_path = folder / DATA_DIR / f"{split}.parquet"
    try:
        table = ds.read_table(folder, split, exclude=_UNUSED_COLUMNS)
    except ds.DatasetError as exc:
        raise _evaluation_error(exc) from None
    missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(f"{table_path}: missing column(s) {', '.join(missing)}")
    sources = [table_path]
    n_null = table.column("answer").null_count
    blind = table.num_rows > 0 and n_null == table.num_rows
    if key_file is not None or blind:
        table, key_file = _with_key(folder, split, table, key_file)
        sources.append(key_file)
    elif n_null:
        raise InputError(f"{table_path}: {n_null} of {table.num_rows} questions have no answer "
                         "(neither a complete split nor a blind one)")
    answer_counts = _answer_counts(folder)
    if answer_counts is not None:
        sources.append(folder / ANSWER_COUNTS_FILE)
    where = str(key_file) if key_file is not None else str(table_path)
    return AnswerKey.from_table(table, split=split, sources=tuple(sources),
                                answer_counts=answer_counts, where=where)


def _with_key(folder: Path, split: str, table, key_file: str | os.PathLike | None):
    """``table`` with the answers of its key (``key_file``, else the folder's key of ``split``), and
    the key's path."""
    path = keys_path(folder, split) if key_file is None else Path(key_file)
    try:
        key_table = ds.read_keys(folder, split, key_file=path)
    except ds.DatasetNotFound as exc:
        if key_file is not None:
            raise MissingInput(str(exc)) from None
        raise MissingInput(f"split {split!r} of {folder} is blind and its key {path} does not exist "
                           "(pass --key KEYFILE)") from None
    except ds.DatasetError as exc:
        raise _evaluation_error(exc) from None
    log.debug("answers of %s from key %s", split, path)
    return _merge_key(table, key_table, path), path


def _answer_counts(folder: Path) -> dict[str, int] | None:
    """The training answer counts of the folder, or None when it has none."""
    counts_path = folder / ANSWER_COUNTS_FILE
    if not counts_path.is_file():
        log.info("%s absent: no answer-frequency breakdown", counts_path)
        return None
    try:
        return ds.read_answer_counts(counts_path)
    except ds.DatasetError as exc:
        raise InputError(str(exc)) from None
