"""The dataset builder: description sentences -> fill-in-the-blank questions -> a dataset folder.

Modules: :mod:`.words` (blank units, stop lists, the ``clean``/``compat`` rules), :mod:`.tagging`
(spaCy), :mod:`.inputs` (LSMDC, official FIB, generic corpus and ActivityNet adapters, split by movie),
:mod:`.vocab` (blank vocabulary), :mod:`.builder` (questions, ids, writing), :mod:`.card` (dataset card).
Importing this package does not import spaCy, torch or ``datasets``.
"""

from __future__ import annotations

from .builder import (
                      BuildError,
                      BuildOptions,
                      BuildReport,
                      Question,
                      build_dataset,
                      build_questions,
                      import_dataset,
                      make_question,
                      question_id,
                      sentence_id,
                      write_dataset,
)
from .inputs import (
                      ImportedRow,
                      Loaded,
                      SentenceRecord,
                      from_descriptions,
                      generic_record,
                      read_activitynet,
                      read_fib_import,
                      read_generic,
                      split_by_movie,
                      split_from_filename,
)
from .vocab import VocabSpec, read_vocab_file, select_vocab
from .words import MODES, Word, align, passes_rule, select_blanks

__all__ = [
    "BuildError", "BuildOptions", "BuildReport", "Question", "build_dataset", "build_questions",
    "import_dataset", "make_question", "question_id", "sentence_id", "write_dataset",
    "ImportedRow", "Loaded", "SentenceRecord", "from_descriptions", "generic_record", "read_activitynet",
    "read_fib_import", "read_generic", "split_by_movie", "split_from_filename",
    "VocabSpec", "read_vocab_file", "select_vocab", "MODES", "Word", "align", "passes_rule", "select_blanks",
]
