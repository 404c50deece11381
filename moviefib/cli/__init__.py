"""The ``moviefib`` command: argument parsing and printing only; the work lives in the library.

Each sub-command lives in its own module here and exposes ``register(subparsers)``, which adds its
parser(s) and sets ``func`` to a function ``(args) -> int`` (the exit status). Modules are imported to
register their arguments only; heavy imports happen inside ``func``.

Exit statuses: 0 success; 2 usage error; 3 invalid input (a bad file, a bad submission); 4 finished
with failures (some clips could not be processed); 5 a resource is unavailable (weights offline...);
130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

EXIT_OK, EXIT_USAGE, EXIT_INVALID, EXIT_PARTIAL, EXIT_UNAVAILABLE = 0, 2, 3, 4, 5

# Sub-command modules, in the order of the data flow.
COMMAND_MODULES = ("build", "evaluate", "weights", "features", "train", "demo", "human")


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
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"moviefib {args.command}: error: {exc}", file=sys.stderr)
        return exc.code
    except FormatError as exc:
        print(f"moviefib {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print(f"moviefib {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
