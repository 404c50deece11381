"""Integrity checks: decoded vs expected length, cut containers vs lying headers, source identities."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest

from moviefib.integrity import (
    DurationTolerance,
    SourceIdentity,
    container_shortfall,
    current_identity,
    judge_duration,
    source_identity,
)


def test_judge_duration_thresholds():
    tol = DurationTolerance()
    assert judge_duration(2.0, expected=2.0, source="clip id", tolerance=tol).status == "ok"
    assert judge_duration(1.5, expected=2.0, source="clip id", tolerance=tol).status == "warn"
    short = judge_duration(0.4, expected=2.0, source="clip id", tolerance=tol)
    assert short.status == "short" and "0.40 s of the 2.00 s its clip id" in short.reason
    assert judge_duration(0.4, expected=None, source=None).status == "ok"
    with pytest.raises(ValueError):
        DurationTolerance(short=0.9, warn=0.5)


# ---------------------------------------------------------------------------------------------------
# Containers: cut short or whole


def _cut(src: Path, dst: Path, fraction: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def _lie_about_frames(avi: Path, dst: Path, factor: int) -> Path:
    """A copy whose avih dwTotalFrames and strh dwLength claim ``factor`` times the frames."""
    data = bytearray(avi.read_bytes())
    i = data.index(b"avih") + 8
    total = struct.unpack_from("<I", data, i + 16)[0]
    struct.pack_into("<I", data, i + 16, total * factor)
    j = data.index(b"strh") + 8
    length = struct.unpack_from("<I", data, j + 32)[0]
    struct.pack_into("<I", data, j + 32, length * factor)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    pytest.importorskip("av")
    from moviefib.video import write_synthetic_video

    d = tmp_path_factory.mktemp("integrity")
    return {"avi": write_synthetic_video(d / "a.avi", 50, codec="mpeg4"),
            "mkv": write_synthetic_video(d / "a.mkv", 50),
            "mp4": write_synthetic_video(d / "a.mp4", 50, codec="mpeg4")}


@pytest.mark.parametrize("kind", ["avi", "mkv", "mp4"])
def test_whole_files_are_whole(videos, kind):
    assert container_shortfall(videos[kind]) is None


@pytest.mark.parametrize("kind", ["avi", "mkv", "mp4"])
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_cut_files_are_seen_as_cut(videos, tmp_path, kind, fraction):
    cut = _cut(videos[kind], tmp_path / f"cut.{kind}", fraction)
    reason = container_shortfall(cut)
    assert reason is not None and f"the file holds {cut.stat().st_size}" in reason


def test_files_without_declared_sizes_give_no_verdict(tmp_path):
    (tmp_path / "x.mpg").write_bytes(b"\x00\x00\x01\xba" + bytes(100))
    assert container_shortfall(tmp_path / "x.mpg") is None


def test_a_lying_header_is_not_a_cut(videos, tmp_path):
    """A whole AVI whose header claims 10x its frames: the container is whole, the clip is kept."""
    from moviefib.features.pipeline import ClipSource, judge_clip
    from moviefib.video import DecodedSpan, EveryKth, header_duration, sample

    liar = _lie_about_frames(videos["avi"], tmp_path / "liar.avi", 10)
    assert container_shortfall(liar) is None
    span = DecodedSpan()
    assert sum(1 for _ in sample(liar, EveryKth(1), span=span)) == 50
    assert header_duration(span.info) == pytest.approx(20.0)
    verdict = judge_clip(ClipSource("liar", str(liar)), span, DurationTolerance())
    assert verdict.status == "warn" and "taken to lie" in verdict.reason
    # The same file cut to 70 % of its bytes (12 of its 50 frames; the header is a large part of a
    # small file): the header is believed, the clip is short.
    cut = _cut(videos["avi"], tmp_path / "cut.avi", 0.7)
    span = DecodedSpan()
    for _ in sample(cut, EveryKth(1), span=span):
        pass
    verdict = judge_clip(ClipSource("cut", str(cut)), span, DurationTolerance())
    assert verdict.status == "short" and "file cut short" in verdict.reason


# ---------------------------------------------------------------------------------------------------
# Source identity


def test_identity_sees_a_replaced_or_repaired_file(tmp_path):
    f = tmp_path / "v.avi"
    f.write_bytes(os.urandom(300_000))
    ident = source_identity(f)
    assert isinstance(ident, SourceIdentity) and ident.size == 300_000 and len(ident.digest) == 32
    assert current_identity(f, ident) == ident  # untouched: not even re-hashed
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF  # same size, new tail (a repaired file)
    f.write_bytes(bytes(data))
    assert current_identity(f, ident).digest != ident.digest
    f.write_bytes(bytes(data[:1000]))  # cut short: the size says it without hashing
    assert current_identity(f, ident).size == 1000
    assert current_identity(tmp_path / "absent.avi", ident) is None


def test_a_copied_file_keeps_its_identity(tmp_path):
    f = tmp_path / "v.avi"
    f.write_bytes(os.urandom(200_000))
    ident = source_identity(f)
    copy = tmp_path / "copy" / "v.avi"
    copy.parent.mkdir()
    shutil.copyfile(f, copy)
    os.utime(copy, ns=(ident.mtime_ns + 10**9, ident.mtime_ns + 10**9))
    now = current_identity(copy, ident)
    assert now.digest == ident.digest and now.size == ident.size and now.mtime_ns != ident.mtime_ns


def test_small_files_hash_whole(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"x" * 100)
    b.write_bytes(b"x" * 99 + b"y")
    assert source_identity(a).digest != source_identity(b).digest


@pytest.mark.parametrize("text, short, warn", [("0.5,0.9", 0.5, 0.9), ("0.7", 0.7, 0.9), ("0.95", 0.95, 0.95),
                                               ("1,1", 1.0, 1.0)])
def test_tolerance_flag_text(text, short, warn):
    from moviefib.integrity import DurationTolerance

    t = DurationTolerance.parse(text)
    assert (t.short, t.warn) == (short, warn)


@pytest.mark.parametrize("text", ["", "x", "0.5,0.9,1", "nan", "inf,1", "0,0.5", "0.9,0.5", "1.5"])
def test_bad_tolerance_flag_text(text):
    from moviefib.integrity import DurationTolerance

    with pytest.raises(ValueError):
        DurationTolerance.parse(text)
