"""The embedded demo: a described-video corpus generated on the fly (:mod:`moviefib.demo.corpus`) and the
end-to-end run over it (:mod:`moviefib.demo.run`: questions, features, five baselines, evaluation).

Importing this package is light: PyAV, torch and the rest are imported only when a stage runs.
"""

from __future__ import annotations

from .corpus import (
    CorpusConfig,
    CorpusError,
    CorpusInfo,
    generate_corpus,
    plan_corpus,
    question_type_labels,
    read_word_types,
)
from .run import BASELINES, DEMO_TRAINING, DemoError, DemoResult, StageTime, run_demo

__all__ = ["BASELINES", "DEMO_TRAINING", "CorpusConfig", "CorpusError", "CorpusInfo", "DemoError", "DemoResult",
           "StageTime", "generate_corpus", "plan_corpus", "question_type_labels", "read_word_types", "run_demo"]
