#!/usr/bin/env python
"""Extract video features: a thin wrapper over ``moviefib extract`` (same arguments; see --help)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moviefib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
