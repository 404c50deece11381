"""A reader that stops reading (``moviefib … | head -1``) ends the command quietly with its own status."""

import subprocess
import sys

from moviefib.exits import EXIT_BROKEN_PIPE


def test_closed_output_is_quiet():
    # Python ignores SIGPIPE, so writing to a pipe whose reader is gone raises BrokenPipeError (stdout is
    # block-buffered into a pipe: the write happens at the flush).
    code = ("import os, sys\n"
            "r, w = os.pipe(); os.close(r); os.dup2(w, 1)\n"
            "from moviefib.cli import main\n"
            "sys.exit(main(['recipes', 'list']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == EXIT_BROKEN_PIPE, proc.stderr
    assert proc.stderr == ""
