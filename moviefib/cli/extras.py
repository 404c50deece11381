"""Optional dependencies: a command that needs an extra not installed says so in one line (exit 5)."""

from __future__ import annotations

import importlib.util

from . import EXIT_UNAVAILABLE, CLIError


def require_extra(command: str, extra: str, *modules: str) -> None:
    """Raise :class:`CLIError` naming ``pip install 'moviefib[extra]'`` when a module is not installed.

    Checked by the import system's finder, without importing the modules (torch takes seconds).
    """
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"{command} needs {', '.join(missing)}, which this install lacks: "
                       f"pip install 'moviefib[{extra}]'", EXIT_UNAVAILABLE)
