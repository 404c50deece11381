"""The ``moviefib`` command: argument parsing and printing only; the work lives in the library.

Each sub-command lives in its own module here and exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` to a function ``(args) -> int`` (the exit status). Modules are imported to
register their arguments only; heavy imports happen inside ``func``.

Exit statuses: the table in :mod:`moviefib.exits` (0 success, 2 usage, 3 invalid input, 4 finished
with failures, 5 resource unavailable, 130 interrupted), re-exported here for the command modules.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..exits import (  # noqa: F401
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_INVALID,
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)

# Sub-command modules, in the order of the data flow.
COMMAND_MODULES = ("build", "evaluate", "weights", "features", "recipes", "train", "demo", "human", "vlm")


class CLIError(Exception):
    """An error to report as one line, with an exit status."""

    def __init__(self, message: str, code: int = EXIT_INVALID):
        super().__init__(message)
        self.code = code


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="moviefib", description="Video fill-in-the-blank question answering (MovieFIB / LSMDC 2016).")
    parser.add_argument("--version", action="version", version=f"moviefib {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{name}":
                continue  # command not part of this install
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    from ..formats import FormatError

    try:
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is seen below
        return status
    except CLIError as exc:
        print(f"moviefib {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except FormatError as exc:
        print(f"moviefib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print(f"moviefib {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE


def _silence_stdout() -> None:
    """Point stdout at /dev/null: its reader is gone, and the interpreter's final flush of what is still
    buffered would otherwise print a second error on the way out."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


if __name__ == "__main__":
    sys.exit(main())
