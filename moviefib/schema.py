"""The declared layout of a MovieFIB dataset folder and of its question tables.

A dataset folder (written by ``moviefib build``, read by ``moviefib.load_dataset``)::

    <folder>/
      README.md                 dataset card with Hugging Face YAML ``configs`` (plain datasets.load_dataset works)
      stats.json                sizes, tagger name and version, builder mode, warnings
      data/<split>.parquet      one table of questions per split (columns below)
      vocab/blank_vocab.txt     the words that may be blanked, one per line
      vocab/answer_counts.tsv   ``word<TAB>count`` of the answers of the training split

A blind split keeps ``answer`` and ``answer_pos`` null in ``data/<split>.parquet``; its answer key
(``question_id``, ``answer``, ``answer_pos`` and the label columns) is written outside the folder, to
``<folder>.keys/<split>.parquet``, so that the folder can be handed to participants.

This module is stdlib only; ``arrow_schema`` imports pyarrow when called.
"""

from __future__ import annotations

from collections.abc import Iterable

DATA_DIR = "data"
VOCAB_DIR = "vocab"
BLANK_VOCAB_FILE = "vocab/blank_vocab.txt"
ANSWER_COUNTS_FILE = "vocab/answer_counts.tsv"
STATS_FILE = "stats.json"
CARD_FILE = "README.md"
KEYS_SUFFIX = ".keys"

# Splits in the order a user expects them (the builder's stats and card, the readers' listings); any
# other split follows, sorted by name.
SPLIT_ORDER = ("train", "training", "val", "validation", "test", "blindtest")


def sorted_splits(names: Iterable[str]) -> list[str]:
    """The distinct split ``names`` in :data:`SPLIT_ORDER`, the others after it by name."""
    rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
    return sorted(set(names), key=lambda s: (rank.get(s, len(rank)), s))

# (name, arrow type, nullable, meaning)
QUESTION_COLUMNS: tuple[tuple[str, str, bool, str], ...] = (
    ("question_id", "string", False, "stable id: built = hash of clip id, sentence and word index; "
                                     "imported = <split>-<row number>"),
    ("clip_id", "string", False, "LSMDC clip id (or the video id of a generic corpus)"),
    ("movie", "string", False, "movie (or video) the clip comes from"),
    ("sentence_id", "string", False, "groups the questions made from one sentence"),
    ("start_aligned", "float64", False, "annotated start, seconds"),
    ("end_aligned", "float64", False, "annotated end, seconds"),
    ("start_extracted", "float64", False, "start of the cut clip, seconds"),
    ("end_extracted", "float64", False, "end of the cut clip, seconds"),
    ("sentence", "string", False, "the description sentence, original casing and punctuation"),
    ("question", "string", False, "the sentence with the blank written as _____ (an imported quirk may "
                                 "hold none)"),
    ("answer", "string", True, "the blanked word (null in a blind split)"),
    ("answer_pos", "string", True, "Penn Treebank tag of the answer (null in a blind split)"),
    ("word_index", "int32", False, "index of the blanked word among the whitespace-separated words "
                                   "(-1: an imported question without a blank, a quirk of the release)"),
    ("char_start", "int32", False, "character offset of the blank's start in sentence (-1: no blank)"),
    ("char_end", "int32", False, "character offset of the blank's end in sentence, exclusive (-1: no blank)"),
)
COLUMN_NAMES = tuple(c[0] for c in QUESTION_COLUMNS)
# Extra label columns (e.g. ``question_type`` of the demo corpus) are strings after these.
KEY_COLUMNS = ("question_id", "answer", "answer_pos")


def arrow_schema(extra_labels: tuple[str, ...] = ()):
    """The pyarrow schema of a question table, with optional extra string label columns."""
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "int32": pa.int32()}
    fields = [pa.field(n, types[t], nullable=null, metadata={"description": d})
              for n, t, null, d in QUESTION_COLUMNS]
    fields += [pa.field(n, pa.string(), nullable=True) for n in extra_labels]
    return pa.schema(fields)


def column_problems(table, names) -> list[str]:
    """Why the declared columns ``names`` of a pyarrow ``table`` break the schema: a value type other
    than the declared one (a dictionary-encoded or large string is still a string) or a null in a column
    declared non-null. Columns absent from ``table`` are left to the caller, which knows if it needs them.

    A Parquet file written by another tool can hold ``question_id`` as integers or a null ``question``;
    readers check the columns they use here instead of failing deep inside (or scoring nothing).
    """
    import pyarrow.types as pat

    kinds = {"string": lambda t: pat.is_string(t) or pat.is_large_string(t),
             "float64": pat.is_floating, "int32": pat.is_integer}
    declared = {n: (t, null) for n, t, null, _ in QUESTION_COLUMNS}
    problems = []
    for name in names:
        if name not in table.column_names or name not in declared:
            continue
        want, nullable = declared[name]
        typ = table.schema.field(name).type
        value_type = typ.value_type if pat.is_dictionary(typ) else typ
        if not kinds[want](value_type):
            problems.append(f"column {name!r} holds {typ}, not {want}")
        elif not nullable and table.column(name).null_count:
            problems.append(f"column {name!r} has {table.column(name).null_count} null value(s)")
    return problems
