#!/usr/bin/env python
"""Validate and score MovieFIB submissions: the same as ``moviefib evaluate`` (see ``--help``)."""

import sys

from moviefib.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", *sys.argv[1:]]))
