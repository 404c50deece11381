#!/usr/bin/env python
"""Thin entry point: ``python scripts/train.py RECIPE [--set section.key=value ...]`` (a packaged
recipe's name, see ``moviefib recipes list``, or a TOML file) is ``moviefib train ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moviefib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
