"""The blank vocabulary: which words may become blanks.

Not to be confused with a model's answer (output) vocabulary, which the baselines derive from
``vocab/answer_counts.tsv``. The released MovieFIB questions only blank about a thousand frequent words
(REFERENCE §2); a rebuild gets the same effect by counting the words that pass the blank rule in the
training split and keeping the top K and/or those seen at least ``min_count`` times, or by reading the
list from a file (one word per line, e.g. the answers of the official training questions).
Words are compared in lower case in ``clean`` mode and as written in ``compat`` mode
(:func:`moviefib.questions.words.vocab_key`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_write
from ..formats import FormatError, check_input_file


@dataclass(frozen=True)
class VocabSpec:
    """How to make the blank vocabulary.

    Attributes:
        top_k: keep the K most frequent candidate words of the counting split (None: no limit).
        min_count: keep words seen at least this often in the counting split.
        split: the split to count in (normally the training split).
        file: read the vocabulary from this file instead of counting (one word per line).
        unlimited: no vocabulary at all, every word that passes the rule is blanked.
    """

    top_k: int | None = 1000
    min_count: int = 1
    split: str = "train"
    file: str | None = None
    unlimited: bool = False

    def describe(self) -> dict:
        if self.unlimited:
            return {"source": "none (every word that passes the rule)"}
        if self.file:
            return {"source": "file", "file": str(self.file)}
        return {"source": f"counted in split {self.split!r}", "top_k": self.top_k, "min_count": self.min_count}


def select_vocab(counts: Mapping[str, int], *, top_k: int | None = None, min_count: int = 1) -> list[str]:
    """Words by decreasing count (ties alphabetical), cut at ``min_count`` then at ``top_k``."""
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, not {top_k}")
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return words if top_k is None else words[:top_k]


def read_vocab_file(path: str | os.PathLike, *, lower: bool = True) -> frozenset[str]:
    """Read a blank-vocabulary file: one word per line (a TSV's first column is taken).

    ``lower`` folds the words to lower case (``clean`` mode); ``compat`` mode keeps them as written.
    """
    path = Path(path)
    check_input_file(path)
    words = set()
    try:
        with open(path, encoding="utf-8-sig") as fh:
            for line in fh:
                w = line.split("\t", 1)[0].strip()
                if w:
                    words.add(w.lower() if lower else w)
    except UnicodeDecodeError as exc:
        raise FormatError(path, None, f"invalid UTF-8 at byte {exc.start}") from None
    if not words:
        raise FormatError(path, None, "the blank vocabulary file holds no word")
    return frozenset(words)


def write_word_list(path: str | os.PathLike, words: Iterable[str]) -> None:
    atomic_write(path, "".join(f"{w}\n" for w in words))


def write_counts(path: str | os.PathLike, counts: Mapping[str, int]) -> None:
    """``word<TAB>count`` by decreasing count, ties alphabetical."""
    order = sorted(counts, key=lambda w: (-counts[w], w))
    atomic_write(path, "".join(f"{w}\t{counts[w]}\n" for w in order))
