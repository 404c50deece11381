#!/usr/bin/env python
"""Thin entry point: ``python scripts/train.py baselines/<name>.toml [--set section.key=value ...]``
is ``moviefib train ...``."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moviefib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
