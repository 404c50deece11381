"""Crash-safe file output shared by every room: write to a temp file beside the target, then rename.

A reader never sees a half-written file at the target path: either the old content, or the new. A
writer that must be alone (a resumable extraction) holds an :func:`exclusive_lock`.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import pickle
import re
import socket
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temp path beside ``path``; when the block succeeds it is renamed to ``path``.

    On an exception the temp file is removed and ``path`` is left as it was. The file gets the
    permissions a plain ``open()`` would give (mkstemp makes it private), so shared caches stay readable.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str, *, fsync: bool = False) -> Path:
    """Write ``data`` (text is UTF-8 encoded) to ``path`` atomically; ``fsync`` for durability too."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(payload)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


class LockHeldError(RuntimeError):
    """Another live process holds the lock; the message names it (pid, host, since when)."""


# Descriptors of the locks this process holds. A forked child (a DataLoader worker) inherits them, and a
# flock lasts while any copy of its descriptor is open: the lock would outlive a holder killed before its
# workers. Each child closes its copies at once, so the lock dies with the process that took it.
_HELD_LOCK_FDS: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _HELD_LOCK_FDS:
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD_LOCK_FDS.clear()


os.register_at_fork(after_in_child=_close_inherited_locks)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, *, what: str) -> Iterator[None]:
    """Hold an exclusive lock on the file ``path`` for the block, or raise :class:`LockHeldError` at once.

    The kernel drops a ``flock`` when its holder dies, even by ``kill -9``, so a crash never leaves a
    stale lock behind. The file names its holder and is removed on release. ``what`` says what the lock
    guards, for the error message. Where the file system has no locks, it warns and runs the block unguarded.
    """
    import fcntl

    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode("utf-8", "replace").strip() or "a process starting up"
            os.close(fd)
            raise LockHeldError(f"{what} (held by {holder}; lock file {path})") from None
        except OSError as exc:
            # Some cluster file systems have no locks (Lustre mounted without -o flock, some NFS): go on
            # unguarded rather than refuse to work there.
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            log.warning("%s: this file system cannot lock files (%s); nothing stops a second run on the "
                        "same output", path, exc.strerror or exc)
            yield
            return
        # The previous holder may have removed the file between our open and our lock: a lock on that
        # orphan would guard nothing, so open the path again.
        try:
            st = os.stat(path)
            current = (st.st_dev, st.st_ino) == (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        except FileNotFoundError:
            current = False
        if current:
            break
        os.close(fd)
    _HELD_LOCK_FDS.add(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        yield
    finally:
        # Removed while still held, so no other process can lock the old file after we let go.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        _HELD_LOCK_FDS.discard(fd)
        os.close(fd)


def special_file_kind(mode: int) -> str | None:
    """What a file that is neither a regular file nor a folder is (``a named pipe``...), else None."""
    for test, kind in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return None


def folder_problem(path: str | os.PathLike) -> str | None:
    """Why files cannot be written in a folder at ``path`` (something else stands there, a file stands
    where a folder above it must be, or the system refuses to make it or a file in it), else None, with
    the folder made. Checked before any work, so that an output folder that cannot be written is not
    found out after it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"is {special_file_kind(path.stat().st_mode) or 'a file'}, not a folder"
    blocker = file_in_the_way(path)
    if blocker is not None:
        return f"{blocker} is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        return f"cannot write there ({exc.strerror or exc})"
    return None


def file_in_the_way(path: str | os.PathLike) -> Path | None:
    """The file that stands where a folder above ``path`` must be (its nearest existing ancestor, when
    that is not a folder), else None. ``mkdir`` would only say "File exists", not which path is in the way.
    """
    for candidate in Path(path).absolute().parents:
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


class PathEscapeError(ValueError):
    """A path built from an id (a clip id, a file name from a request) would leave its root folder."""


def contained_path(root: str | os.PathLike, relative: str) -> Path:
    """``root / relative``, refused (:class:`PathEscapeError`) unless it stays inside ``root``.

    Ids become paths in several rooms (clip files under a video root, exported ``.npy`` files, the human
    page's clip cache); an id such as ``../../etc/x`` or ``/abs`` must never reach outside. Symbolic links
    inside ``root`` are not followed here: the check is on the names, which is what an id controls.
    """
    root = Path(root)
    rel = Path(relative)
    if not relative or rel.is_absolute() or "\x00" in relative or any(p == ".." for p in rel.parts):
        raise PathEscapeError(f"{relative!r}: not a relative path inside {root}")
    return root / rel


# What unpickling a file that is not a pickle raises (the pickle docs name the first five; a damaged
# opcode stream gives the others: IndexError "pop from empty list", struct.error, AssertionError for a
# storage key not found).
UNPICKLE_ERRORS = (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError,
                   TypeError, ValueError, OverflowError, struct.error, AssertionError)
# torch.load adds its own for a damaged zip container or a truncated legacy file (RuntimeError) and a
# truncated zip or a file it cannot open (OSError, "Invalid argument"); a MemoryError or a bug still gives
# a traceback.
TORCH_LOAD_ERRORS = (*UNPICKLE_ERRORS, RuntimeError, OSError)


def torch_load_problem(exc: BaseException) -> str:
    """One short line of why torch.load failed (its own messages run to many lines of advice, the first
    of which suggests weights_only=False: the one thing not to do with a file that pickles a callable)."""
    text = str(exc)
    # "Unsupported global: GLOBAL m.C" for a class, "unsupported GLOBAL posix.system whose module posix
    # is blocked" for a function of a blocked module (os.system).
    refused = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", text)
    if refused:
        return f"it holds {refused.group(1)}, which weights_only=True does not load"
    operand = re.search(r"Unsupported operand (\d+)", text)
    if operand:
        return f"not a torch.save file: unknown pickle operand {operand.group(1)}"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first if len(first) <= 120 else first[:117] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__
