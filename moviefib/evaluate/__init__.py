"""Evaluate MovieFIB submissions: strict validation, metrics with breakdowns, humans side by side.

Modules: :mod:`.submission` (formats, validation, ``write_submission``; stdlib only), :mod:`.key`
(answer keys), :mod:`.metrics`, :mod:`.bootstrap`, :mod:`.human`, :mod:`.report`, :mod:`.api`. The
names below load their module on first access, so ``from moviefib.evaluate import write_submission``
does not import numpy or pyarrow. Nothing here imports torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "evaluate": "api", "evaluate_key": "api", "Evaluation": "api", "SubmissionResult": "api",
    "load_key": "key", "AnswerKey": "key",
    "read_submission": "submission", "read_ordered_submission": "submission", "validate": "submission",
    "write_submission": "submission", "ValidationReport": "submission",
    "normalise": "metrics", "score": "metrics",
    "read_human_answers": "human", "PUBLISHED_HUMAN": "human",
    "format_table": "report", "write_outputs": "report",
    "EvaluationError": "errors", "UsageError": "errors", "InputError": "errors", "MissingInput": "errors",
    "SubmissionInvalid": "errors", "ResourceUnavailable": "errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
