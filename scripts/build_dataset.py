#!/usr/bin/env python
"""Thin entry point: ``python scripts/build_dataset.py ARGS`` = ``moviefib build ARGS``."""

import sys

from moviefib.cli import main

if __name__ == "__main__":
    sys.exit(main(["build", *sys.argv[1:]]))
