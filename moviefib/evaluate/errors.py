"""Errors of the evaluator. Each carries the exit status the ``moviefib evaluate`` command returns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..exits import EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_USAGE

if TYPE_CHECKING:
    from .submission import ValidationReport


class EvaluationError(Exception):
    """Base class: a one-line reason and the exit status that goes with it."""

    exit_code = EXIT_INVALID


class UsageError(EvaluationError):
    """The evaluator was asked for something impossible: bad options or option values."""

    exit_code = EXIT_USAGE


class MissingInput(EvaluationError):
    """An input file, folder or split is absent, a directory where a file is expected, or unreadable.

    Invalid input (not usage), as in every other command: the flags were well formed, the file is not.
    """

    exit_code = EXIT_INVALID


class InputError(EvaluationError):
    """An input other than the submission (dataset table, key, FIB file, human answers) is malformed,
    or a submission is not UTF-8 text at all (UTF-16/32): a line-by-line report would say nothing more."""

    exit_code = EXIT_INVALID


class SubmissionInvalid(EvaluationError):
    """One or more submissions failed validation; ``reports`` holds every problem found."""

    exit_code = EXIT_INVALID

    def __init__(self, reports: list[ValidationReport]):
        self.reports = reports
        names = ", ".join(r.path for r in reports)
        total = sum(r.n_fatal for r in reports)
        super().__init__(f"invalid submission ({total} problem(s)): {names}")


class ResourceUnavailable(EvaluationError):
    """An optional resource (the spaCy model for lemma matching, matplotlib) is not installed."""

    exit_code = EXIT_UNAVAILABLE
