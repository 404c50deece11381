"""The exit statuses of the ``moviefib`` command: the one table, in the code once.

The CLI (``moviefib.cli``) re-exports the ``EXIT_*`` names; library modules that carry an exit status
with their errors (``moviefib.evaluate.errors``) read it from here, so the library never imports the
CLI. The README's table of exit statuses is checked against :data:`EXIT_STATUSES` by the tests.
Stdlib only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ExitStatus:
    """One exit status of the command.

    Attributes:
        code: the number the process exits with.
        name: the constant's name (``EXIT_...``).
        meaning: what it says, in a few words.
        examples: typical causes, for the README and ``--help`` texts.
    """

    code: int
    name: str
    meaning: str
    examples: str


EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INVALID = 3
EXIT_PARTIAL = 4
EXIT_UNAVAILABLE = 5
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool stopped by a closed pipe

EXIT_STATUSES: tuple[ExitStatus, ...] = (
    ExitStatus(EXIT_OK, "EXIT_OK", "success", "the work is done and every input was used"),
    ExitStatus(EXIT_USAGE, "EXIT_USAGE", "usage error",
               "an unknown flag, flags that contradict each other, a missing required flag"),
    ExitStatus(EXIT_INVALID, "EXIT_INVALID", "invalid input",
               "a bad row or file (named with its line or clip), a recipe key with a bad value, a corrupt "
               "Parquet file, store or checkpoint, an output that cannot be written"),
    ExitStatus(EXIT_PARTIAL, "EXIT_PARTIAL", "finished with failures",
               "some clips could not be decoded: they are listed in the failure manifest"),
    ExitStatus(EXIT_UNAVAILABLE, "EXIT_UNAVAILABLE", "resource unavailable",
               "an optional extra is not installed, weights are not cached offline, CUDA asked for "
               "but absent, a port is taken"),
    ExitStatus(EXIT_INTERRUPTED, "EXIT_INTERRUPTED", "interrupted", "Ctrl-C (SIGINT)"),
    ExitStatus(EXIT_BROKEN_PIPE, "EXIT_BROKEN_PIPE", "output closed",
               "the reader of the output went away (output piped into `head`, which stops reading)"),
)
