"""Reading a MovieFIB dataset folder (layout: :mod:`moviefib.schema`).

* :func:`load_dataset` -> ``datasets.DatasetDict``, offline (the user-facing API);
* :func:`read_table` -> ``pyarrow.Table`` of one split, fast and without ``datasets``;
* :func:`split_question`, :class:`QuestionView`, :class:`QuestionItem`: the question as left / right
  word context plus an answer index, the shape the baselines train on (no torch needed here).

``datasets`` and ``pyarrow`` are imported inside the functions so that ``import moviefib.dataset`` stays
light.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

from .formats import BLANK, id_problem, missing_reason
from .schema import ANSWER_COUNTS_FILE, BLANK_VOCAB_FILE, DATA_DIR, KEYS_SUFFIX, column_problems, sorted_splits


class DatasetError(ValueError):
    """A dataset folder that is missing, incomplete or does not hold the requested split."""


class DatasetNotFound(DatasetError):
    """What was asked for is not there: the folder, a split of it, an answer key (as opposed to there
    but unreadable or malformed)."""


def _folder(path: str | os.PathLike) -> Path:
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise DatasetNotFound(f"{folder}: is a file, not a dataset folder")
    if not folder.is_dir():
        raise DatasetNotFound(f"{folder}: {missing_reason(folder, 'no such dataset folder')}")
    if not (folder / DATA_DIR).is_dir():
        raise DatasetNotFound(f"{folder}: not a MovieFIB dataset folder (no {DATA_DIR}/ inside)")
    return folder


def available_splits(path: str | os.PathLike) -> list[str]:
    """The splits of a dataset folder (one ``data/<split>.parquet`` each), in the usual order
    (:func:`moviefib.schema.sorted_splits`, the builder's)."""
    folder = _folder(path)
    # Hidden files are no splits: "._val.parquet" (macOS's AppleDouble copies) or ".parquet" would be
    # listed, then fail every load of the folder.
    return sorted_splits(p.stem for p in (folder / DATA_DIR).glob("*.parquet") if not p.name.startswith("."))


def _split_file(folder: Path, split: str) -> Path:
    problem = id_problem(split)
    if problem:
        raise DatasetError(f"{folder}: bad split name: {problem}")
    f = folder / DATA_DIR / f"{split}.parquet"
    if f.is_dir():
        raise DatasetError(f"{f}: is a directory, not a Parquet file")
    if not f.is_file():
        raise DatasetNotFound(f"{folder}: no split {split!r} (have: {', '.join(available_splits(folder)) or 'none'})")
    return f


def load_dataset(path: str | os.PathLike, *, splits: Iterable[str] | None = None,
                 in_memory: bool = False, cache_dir: str | os.PathLike | None = None):
    """Load a MovieFIB dataset folder as a ``datasets.DatasetDict``, without network access.

    Args:
        path: the dataset folder (written by ``moviefib build``).
        splits: the splits to load (default: all of ``data/*.parquet``).
        in_memory: read the Parquet files straight into memory instead of going through the
            ``datasets`` cache (no cache files written; fine up to a few hundred thousand questions).
        cache_dir: the ``datasets`` cache to use when ``in_memory`` is false.

    A blind split is loaded as it is: ``answer`` and ``answer_pos`` are null.
    """
    import datasets

    folder = _folder(path)
    names = list(splits) if splits is not None else available_splits(folder)
    if not names:
        raise DatasetError(f"{folder}: no question tables in {DATA_DIR}/")
    files = {s: _split_file(folder, s) for s in names}
    for f in files.values():
        _check_parquet(f)
    if in_memory:
        from datasets.table import InMemoryTable

        return datasets.DatasetDict(
            {s: datasets.Dataset(InMemoryTable(read_table(folder, s)), split=datasets.Split(s)) for s in names})
    # The packaged Parquet builder resolves local files only, so it never touches the network.
    return datasets.load_dataset(
        "parquet", data_files={s: str(f) for s, f in files.items()},
        cache_dir=None if cache_dir is None else str(cache_dir),
    )


def _check_parquet(path: Path) -> None:
    """Read a Parquet file's footer (cheap): a corrupt or truncated file is named here, not deep inside
    ``datasets``."""
    import pyarrow.parquet as pq

    try:
        pq.read_metadata(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None


def _read_parquet(path: Path, columns: Sequence[str] | None = None, exclude: Collection[str] = ()):
    import pyarrow.parquet as pq

    try:
        if exclude:
            names = columns if columns is not None else pq.read_schema(path).names
            columns = [c for c in names if c not in exclude]
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None


def read_table(path: str | os.PathLike, split: str, *, columns: Sequence[str] | None = None,
               exclude: Collection[str] = ()):
    """One split's question table as a ``pyarrow.Table`` (no ``datasets`` involved); ``columns``: only
    these; ``exclude``: not these (faster on a large split: the sentences and times are most of it).

    Raises DatasetNotFound for a missing folder or split, DatasetError for a bad split name and for a
    file that is not readable Parquet.
    """
    folder = _folder(path)
    return _read_parquet(_split_file(folder, split), columns, exclude)


def keys_folder(path: str | os.PathLike) -> Path:
    """Where the answer keys of a folder's blind splits live: ``<folder>.keys/`` (beside the folder).

    A folder named by a symbolic link has them beside the link when they are there, else beside the
    folder it points to, where the builder wrote them (so ``link`` finds what ``cd link; .`` does:
    the system names the current folder by its real path)."""
    p = Path(path)
    if p.name in ("", ".", ".."):  # "." or "data/..": the folder's own name is needed
        p = p.resolve()
    beside = p.parent / (p.name + KEYS_SUFFIX)
    if beside.exists() or not p.is_symlink():
        return beside
    real = p.resolve()
    return real.parent / (real.name + KEYS_SUFFIX)


def keys_path(path: str | os.PathLike, split: str) -> Path:
    """The answer key of a blind split: ``<folder>.keys/<split>.parquet``."""
    return keys_folder(path) / f"{split}.parquet"


def read_keys(path: str | os.PathLike, split: str, *, key_file: str | os.PathLike | None = None):
    """The answer key of a blind split (``question_id``, ``answer``, ``answer_pos``, labels), from
    ``key_file`` or else from :func:`keys_path`.

    Raises DatasetNotFound when there is no such file, DatasetError when it is not readable Parquet.
    """
    problem = id_problem(split)
    if problem:
        raise DatasetError(f"{path}: bad split name: {problem}")
    f = keys_path(path, split) if key_file is None else Path(key_file)
    if f.is_dir():
        raise DatasetError(f"{f}: is a directory, not a key file")
    if not f.is_file():
        raise DatasetNotFound(f"{f}: {missing_reason(f, f'no answer key for split {split!r}')}")
    return _read_parquet(f)


def read_answer_counts(path: str | os.PathLike) -> dict[str, int]:
    """``word -> count`` of the training answers, from a dataset folder or the TSV file itself.

    Ordered by decreasing count (ties by word), the order the file is written in. A count is plain
    ASCII digits (no sign, no ``1_000``, at most 18 digits): anything else is an error naming the line.
    """
    p = Path(path)
    f = p / ANSWER_COUNTS_FILE if p.is_dir() else p
    if f.is_dir():
        raise DatasetError(f"{f}: is a directory, not an answer counts file")
    if not f.is_file():
        raise DatasetError(f"{f}: no answer counts file")
    try:
        return _parse_answer_counts(f)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{f}: invalid UTF-8 at byte {exc.start}") from None


def _parse_answer_counts(f: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    with open(f, encoding="utf-8-sig") as fh:  # a UTF-8 byte-order mark is dropped, as by every reader
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\n")
            if not line:
                continue
            word, sep, num = line.rpartition("\t")
            if not sep or not word:
                raise DatasetError(f"{f}:{lineno}: expected 'word<TAB>count'")
            if not _COUNT_RE.match(num):
                raise DatasetError(f"{f}:{lineno}: count {num[:40]!r} is not a whole number of at most 18 digits")
            if word in counts:
                raise DatasetError(f"{f}:{lineno}: word {word!r} listed twice")
            counts[word] = int(num)
    return counts


# Counts are written by the builder as plain digits; 18 digits keeps every count exact in an int64.
_COUNT_RE = re.compile(r"^[0-9]{1,18}$")


def read_blank_vocab(path: str | os.PathLike) -> list[str]:
    """The words that may be blanked, from a dataset folder or a one-word-per-line file."""
    p = Path(path)
    f = p / BLANK_VOCAB_FILE if p.is_dir() else p
    if f.is_dir():
        raise DatasetError(f"{f}: is a directory, not a blank vocabulary file")
    if not f.is_file():
        raise DatasetError(f"{f}: no blank vocabulary file")
    try:
        with open(f, encoding="utf-8-sig") as fh:
            return [w for w in (line.strip() for line in fh) if w]
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{f}: invalid UTF-8 at byte {exc.start}") from None


def split_question(question: str) -> tuple[list[str], list[str]]:
    """Words left of the blank and words right of it, both in reading order.

    Words are whitespace separated. Text glued to the blank (``_____,`` or a released quirk such as
    ``h_____s``) is kept as a word of its own on its side, so punctuation is not lost.
    """
    words = question.split()
    for i, w in enumerate(words):
        j = w.find(BLANK)
        if j < 0:
            continue
        left, right = words[:i], words[i + 1:]
        prefix, suffix = w[:j], w[j + len(BLANK):]
        if prefix:
            left.append(prefix)
        if suffix:
            right.insert(0, suffix)
        return left, right
    raise ValueError(f"question has no blank {BLANK!r}: {question!r}")


@dataclass(frozen=True)
class QuestionItem:
    """One question in the shape the baselines use.

    Attributes:
        question_id: the dataset's question id.
        clip_id: the clip to look up in a feature store.
        left: the words before the blank, in reading order.
        right: the words after the blank, in reading order (a right-to-left encoder reverses them).
        answer: the answer, or None in a blind split.
        (An imported question without a blank, a quirk of the release, has all its words in ``left``
        and an empty ``right``: it is still asked and scored, as the published all-rows scores do.)
        answer_index: the answer's index in the answer vocabulary; -1 when the answer is outside it
            (exact, case-sensitive match) or unknown (blind split).
    """

    question_id: str
    clip_id: str
    left: tuple[str, ...]
    right: tuple[str, ...]
    answer: str | None
    answer_index: int


class QuestionView(Sequence[QuestionItem]):
    """A read-only sequence of :class:`QuestionItem` over a question table.

    ``table`` is a ``pyarrow.Table`` (e.g. from :func:`read_table`) or a ``datasets.Dataset``;
    ``answer_vocab`` maps an answer word to its output index. Items are built on access, so a view
    over 300k questions costs only the column lists.
    """

    def __init__(self, table, answer_vocab: dict[str, int]):
        if hasattr(table, "with_format") and hasattr(table, "features"):  # a datasets.Dataset
            # Through the arrow formatter so that a selected / shuffled view keeps its row order.
            table = table.with_format("arrow")[:]
        cols = set(table.column_names)
        missing = {"question_id", "clip_id", "question", "answer"} - cols
        if missing:
            raise DatasetError(f"question table lacks column(s) {', '.join(sorted(missing))}")
        # A null question or an integer answer would otherwise fail (or mismatch) item by item, later.
        problems = column_problems(table, ("question_id", "clip_id", "question", "answer"))
        if problems:
            raise DatasetError(f"question table: {'; '.join(problems)}")
        self._ids = table.column("question_id").to_pylist()
        self._clips = table.column("clip_id").to_pylist()
        self._questions = table.column("question").to_pylist()
        self._answers = table.column("answer").to_pylist()
        self.answer_vocab = dict(answer_vocab)

    def __len__(self) -> int:
        return len(self._ids)

    @overload
    def __getitem__(self, i: int) -> QuestionItem: ...
    @overload
    def __getitem__(self, i: slice) -> list[QuestionItem]: ...

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        question = self._questions[i]
        left, right = split_question(question) if BLANK in question else (question.split(), [])
        answer = self._answers[i]
        return QuestionItem(
            question_id=self._ids[i], clip_id=self._clips[i], left=tuple(left), right=tuple(right),
            answer=answer, answer_index=-1 if answer is None else self.answer_vocab.get(answer, -1),
        )

    def clip_ids(self) -> list[str]:
        """The clip id of every question, in order (for feature look-ups without building items)."""
        return list(self._clips)
