"""The embedded demo: a described-video corpus generated on the fly (:mod:`moviefib.demo.corpus`).

Importing this package is light: PyAV is imported only when clips are written.
"""

from __future__ import annotations

from .corpus import (
    CorpusConfig, CorpusError, CorpusInfo, generate_corpus, plan_corpus, question_type_labels,
    read_word_types,
)

__all__ = ["CorpusConfig", "CorpusError", "CorpusInfo", "generate_corpus", "plan_corpus", "question_type_labels",
           "read_word_types"]
