"""A core-only install (``pip install .``): commands that need an extra say which, in one line, exit 5.

The missing packages are simulated by blocking their import (``sys.modules[name] = None``) in a fresh
interpreter, which is what the import system's finder then reports as absent.
"""

import subprocess
import sys

import pytest

_RUN = ("import sys\n"
        "for m in sys.argv[1].split(','): sys.modules[m] = None\n"
        "from moviefib.cli import main\n"
        "sys.exit(main(sys.argv[2:]))\n")


def _run_without(modules: str, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _RUN, modules, *argv], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("blocked, argv, extra", [
    ("torch,torchvision,h5py", ["demo", "run", "--out", "{tmp}/d"], "all"),
    ("av", ["demo", "corpus", "--out", "{tmp}/c"], "video"),
])
def test_missing_extra_is_one_line(tmp_path, blocked, argv, extra):
    proc = _run_without(blocked, *(a.format(tmp=tmp_path) for a in argv))
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'moviefib[{extra}]'" in lines[0], proc.stderr
    assert not any(tmp_path.iterdir())  # nothing written before the refusal
