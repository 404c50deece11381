"""The crash-safe file helpers: the output lock dies with the process that took it, however it dies."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from moviefib.fileio import LockHeldError, PathEscapeError, contained_path, exclusive_lock

_HOLDER = textwrap.dedent("""
    import os, sys, time
    from moviefib.fileio import exclusive_lock
    with exclusive_lock(sys.argv[1], what="test"):
        child = os.fork()
        if child == 0:  # a forked worker (as a DataLoader's) that outlives its parent for a while
            time.sleep(60)
            os._exit(0)
        print(child, flush=True)
        time.sleep(60)
""")


def test_lock_dies_with_its_holder_not_with_its_forked_children(tmp_path):
    lock = tmp_path / "out.h5.lock"
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock)], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    try:
        with pytest.raises(LockHeldError, match=f"pid {proc.pid} on "):
            with exclusive_lock(lock, what="held"):
                pass
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        os.kill(child, 0)  # the forked child is still alive ...
        with exclusive_lock(lock, what="free again"):  # ... yet the lock is free
            pass
    finally:
        proc.kill()
        proc.wait(timeout=30)
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.time() + 30
    while time.time() < deadline:  # reap nothing (not our child); just let it go
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


@pytest.mark.parametrize("rel", ["../x", "a/../../x", "/etc/passwd", "a\x00b", ""])
def test_contained_path_refuses_escapes(tmp_path, rel):
    with pytest.raises(PathEscapeError):
        contained_path(tmp_path, rel)


def test_contained_path_keeps_nested_names(tmp_path):
    assert contained_path(tmp_path, "movie/clip.avi") == tmp_path / "movie" / "clip.avi"


def test_file_in_the_way_names_the_file_that_blocks_a_folder(tmp_path):
    from moviefib.fileio import file_in_the_way

    (tmp_path / "afile").write_text("x")
    assert file_in_the_way(tmp_path / "afile" / "sub" / "out.h5") == tmp_path / "afile"
    assert file_in_the_way(tmp_path / "afile" / "out.h5") == tmp_path / "afile"
    assert file_in_the_way(tmp_path / "new" / "deeper" / "out.h5") is None
    assert file_in_the_way(tmp_path / "afile") is None  # the path itself may be a file (to replace)


def test_folder_problem_names_what_stands_in_the_way(tmp_path):
    from moviefib.fileio import folder_problem

    afile = tmp_path / "afile"
    afile.write_text("x")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert folder_problem(tmp_path / "new" / "deep") is None and (tmp_path / "new" / "deep").is_dir()
    assert folder_problem(afile) == "is a file, not a folder"
    assert folder_problem(fifo) == "is a named pipe (FIFO), not a folder"
    assert folder_problem(afile / "below") == f"{afile} is a file, not a folder"
    assert folder_problem("/proc/moviefib-no-such/x").startswith("cannot write there (")
