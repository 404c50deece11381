"""Is a decoded clip as long as it should be? One rule for extraction and the human page.

A clip's length is known three ways: its LSMDC clip id and extracted start/end (``expected``), its
container's header (``header``: may lie, some AVI headers say 444 frames and hold 68), and what decoding
actually yields (``decoded``: the time from the first frame to the end of the last one). A file cut short
decodes its first part without any error, so the decoded length is compared with the expected one.

Stdlib only.
"""

from __future__ import annotations

import hashlib
import math
import os
import stat
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "warn", "short"]


@dataclass(frozen=True)
class DurationTolerance:
    """How much shorter than expected a decoded clip may be.

    Attributes:
        short: decoded / expected below this is a clip clearly short: refused (or kept as partial).
        warn: decoded / expected below this (and at or above ``short``) is kept with a counted warning.
        slack: seconds always forgiven (rounding of the times in ids, one frame period at the end).
    """

    short: float = 0.5
    warn: float = 0.9
    slack: float = 0.25

    def __post_init__(self):
        if not (0.0 < self.short <= self.warn <= 1.0):
            raise ValueError(f"duration tolerance needs 0 < short <= warn <= 1, not short={self.short} "
                             f"warn={self.warn}")
        if self.slack < 0:
            raise ValueError(f"duration slack must be >= 0 seconds, not {self.slack}")

    @classmethod
    def parse(cls, text: str) -> DurationTolerance:
        """``SHORT`` or ``SHORT,WARN`` (ratios, as the ``--duration-tolerance`` flags take them); a lone
        SHORT keeps the default WARN (or SHORT itself when higher). ValueError when malformed."""
        values = [float(x) for x in text.split(",")]
        if len(values) not in (1, 2) or not all(math.isfinite(v) for v in values):
            raise ValueError("expected SHORT or SHORT,WARN")
        warn = values[1] if len(values) == 2 else max(values[0], cls.warn)
        return cls(short=values[0], warn=warn)


@dataclass(frozen=True)
class DurationCheck:
    """The verdict on one clip's length.

    Attributes:
        decoded: seconds actually decoded.
        expected: seconds the clip should last (None: nothing to compare with).
        source: where ``expected`` comes from (``clip id``, ``header``), or None.
        status: ``ok``, ``warn`` (somewhat short) or ``short`` (clearly short).
    """

    decoded: float
    expected: float | None
    source: str | None
    status: Status

    @property
    def reason(self) -> str:
        """Both durations in words, for a failure manifest or a warning."""
        if self.expected is None:
            return f"decoded {self.decoded:.2f} s (no expected length to compare with)"
        pct = 100.0 * self.decoded / self.expected if self.expected > 0 else 100.0
        what = {"ok": "as expected", "warn": "somewhat short", "short": "clip cut short"}[self.status]
        return (f"{what}: decoded {self.decoded:.2f} s of the {self.expected:.2f} s its {self.source} "
                f"gives ({pct:.0f} %)")


def judge_duration(decoded: float, *, expected: float | None, source: str | None,
                   tolerance: DurationTolerance = DurationTolerance()) -> DurationCheck:
    """Compare a decoded length with the expected one under ``tolerance``."""
    if expected is None or expected <= 0:
        return DurationCheck(decoded, None, None, "ok")
    ratio = (decoded + tolerance.slack) / expected
    status: Status = "short" if ratio < tolerance.short else "warn" if ratio < tolerance.warn else "ok"
    return DurationCheck(decoded, expected, source, status)


# ---------------------------------------------------------------------------------------------------
# Is the container whole? A header's frame count may lie (then the decoded length is the truth), but a
# file cut short keeps its header while losing its end: the sizes the container declares tell the two
# apart. Formats without declared sizes (MPEG program streams) give no verdict.

_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot", b"uuid", b"styp")


def container_shortfall(path: str | os.PathLike) -> str | None:
    """Why the file is shorter than its container declares (AVI RIFF sizes, MP4/MOV box sizes,
    Matroska/WebM segment size), or None when it is whole or the format declares no sizes."""
    size = os.path.getsize(path)
    with open(path, "rb") as fh:
        head = fh.read(12)
        if head[:4] == b"RIFF":
            declared = _riff_extent(fh, size)
            kind = "AVI RIFF chunks"
        elif head[4:8] in _ISO_BOXES:
            declared = _iso_extent(fh, size)
            kind = "MP4/MOV boxes"
        elif head[:4] == b"\x1a\x45\xdf\xa3":
            declared = _matroska_extent(fh, size)
            kind = "Matroska segment"
        else:
            return None
    if declared is None or declared <= size:
        return None
    return f"file cut short: its {kind} declare {declared} bytes, the file holds {size}"


def _riff_extent(fh, size: int) -> int | None:
    """Where the last RIFF chunk ends (OpenDML files over 1 GB chain RIFF 'AVIX' chunks)."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        head = fh.read(8)
        if head[:4] != b"RIFF":
            break  # trailing bytes after the last chunk: not a truncation
        pos += 8 + int.from_bytes(head[4:8], "little")
        pos += pos & 1  # chunks are padded to an even size
    return pos


def _iso_extent(fh, size: int) -> int | None:
    """Where the last top-level ISO BMFF box ends."""
    pos = 0
    while pos + 8 <= size:
        fh.seek(pos)
        head = fh.read(16)
        box = int.from_bytes(head[:4], "big")
        if box == 1 and len(head) == 16:
            box = int.from_bytes(head[8:16], "big")  # 64-bit size
        elif box == 0:
            return size  # the last box runs to the end of the file
        if box < 8:
            return None  # not a box: the walk went astray, so no verdict
        pos += box
    return pos


def _ebml_vint(fh) -> tuple[int, int] | None:
    """An EBML variable-size integer: (value with its length marker removed, its length in bytes)."""
    first = fh.read(1)
    if not first:
        return None
    b = first[0]
    length = next((i + 1 for i in range(8) if b & (0x80 >> i)), None)
    if length is None:
        return None
    value = b & (0xFF >> length)
    rest = fh.read(length - 1)
    if len(rest) != length - 1:
        return None
    for x in rest:
        value = (value << 8) | x
    return value, length


def _matroska_extent(fh, size: int) -> int | None:
    """Where the Matroska Segment ends (None when its size is 'unknown', as live recordings write)."""
    fh.seek(4)
    header = _ebml_vint(fh)
    if header is None:
        return None
    fh.seek(fh.tell() + header[0])
    if fh.read(4) != b"\x18\x53\x80\x67":
        return None
    seg = _ebml_vint(fh)
    if seg is None or seg[0] == (1 << (7 * seg[1])) - 1:  # all ones: unknown size
        return None
    return fh.tell() + seg[0]


# ---------------------------------------------------------------------------------------------------
# The identity of a source file, for resuming: a rerun redoes a clip whose file changed.

IDENTITY_BLOCK = 64 * 1024


@dataclass(frozen=True)
class LengthVerdict:
    """How a decoded clip's length compares with what it should be.

    Attributes:
        status: ``ok``, ``warn`` (kept with a counted warning) or ``short`` (clearly short).
        reason: the comparison in words, naming the file (None when ``ok``).
        decoded: seconds decoded.
        expected: seconds expected, or None when nothing says.
        expected_from: ``clip id``, ``segment``, ``header`` (or the caller's own source), or None.
    """

    status: Status
    reason: str | None
    decoded: float
    expected: float | None
    expected_from: str | None


def judge_length(path: str | os.PathLike, decoded: float, *, expected: float | None, source: str | None,
                 header: float | None, whole_file: bool,
                 tolerance: DurationTolerance = DurationTolerance()) -> LengthVerdict:
    """The one rule for a decoded clip's length, used by extraction and by the human page.

    ``expected`` (from ``source``: the clip's row or id, or its segment) is trusted when given. Without
    it, the ``header``'s length counts only when the container shows the file was cut short: a whole
    container whose header promises more than it holds has a lying header (some AVI headers say 444
    frames and hold 68), and its decoded frames are the clip. ``whole_file``: the clip is the whole file
    (not a segment of a movie), so the container's declared sizes speak for it. A cut container is at
    least a warning even when the length passes: a cut to 90 % of the bytes often loses less than the
    tolerance forgives.
    """
    try:
        cut = container_shortfall(path) if whole_file else None
    except OSError:
        cut = None  # the file was readable a moment ago; the decoder's verdict stands
    if expected is not None:
        check = judge_duration(decoded, expected=expected, source=source, tolerance=tolerance)
        if cut is not None and check.status == "ok":
            return LengthVerdict("warn", f"{path}: {cut} (decoded {decoded:.2f} s of {expected:.2f} s)",
                                 decoded, expected, source)
        reason = None if check.status == "ok" else f"{path}: {check.reason}"
        return LengthVerdict(check.status, reason, decoded, expected, source)
    if cut is not None:
        if not header:
            return LengthVerdict("short", f"{path}: {cut}; its header gives no length to compare with",
                                 decoded, None, None)
        check = judge_duration(decoded, expected=header, source="header", tolerance=tolerance)
        status: Status = "warn" if check.status == "ok" else check.status
        return LengthVerdict(status, f"{path}: {cut}; {check.reason}", decoded, header, "header")
    check = judge_duration(decoded, expected=header, source="header", tolerance=tolerance)
    if check.status == "ok":
        return LengthVerdict("ok", None, decoded, header, "header" if header else None)
    return LengthVerdict("warn", f"{path}: the header declares {header:.2f} s but {decoded:.2f} s decode "
                                 f"from the whole file: the header's frame count is taken to lie",
                         decoded, header, "header")


@dataclass(frozen=True)
class SourceIdentity:
    """Which file a clip's features were made from.

    Attributes:
        size: bytes.
        mtime_ns: modification time; only a shortcut (same size and time: the same file, not re-hashed).
        digest: BLAKE2b of the size and the first and last 64 KiB (cheap on 118k clips, and a file cut
            short, repaired or replaced changes its size or its tail).
    """

    size: int
    mtime_ns: int
    digest: str


def source_identity(path: str | os.PathLike) -> SourceIdentity:
    """The identity of the file at ``path`` (OSError when it cannot be read or is not a regular file)."""
    # O_NONBLOCK: a named pipe named like a video must not block the open until a writer comes.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with open(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):  # a pipe or a device (/dev/zero): the decoder says which
            raise OSError(f"{path}: not a regular file")
        return SourceIdentity(st.st_size, st.st_mtime_ns, _digest(fh, st.st_size))


def _digest(fh, size: int) -> str:
    h = hashlib.blake2b(str(size).encode("ascii"), digest_size=16)
    h.update(fh.read(IDENTITY_BLOCK))
    if size > IDENTITY_BLOCK:
        fh.seek(max(IDENTITY_BLOCK, size - IDENTITY_BLOCK))
        h.update(fh.read(IDENTITY_BLOCK))
    return h.hexdigest()


def current_identity(path: str | os.PathLike, recorded: SourceIdentity) -> SourceIdentity | None:
    """The identity of the file now, re-hashed only when its size or time differ from ``recorded``
    (a copied dataset has new times and the same bytes: it is re-hashed, not redone). None when the
    file cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    if st.st_size == recorded.size and st.st_mtime_ns == recorded.mtime_ns:
        return recorded
    if st.st_size != recorded.size:
        return SourceIdentity(st.st_size, st.st_mtime_ns, "")
    try:
        return source_identity(path)
    except OSError:
        return None
