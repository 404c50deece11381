"""Decoding and time-based sampling: real files of ../shared/videos and exact lossless synthetic videos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("av")

from moviefib.video import (  # noqa: E402
    EveryKth,
    Segment,
    Uniform,
    VideoError,
    Windows,
    available_backends,
    iter_frames,
    probe,
    sample,
    sampling_from_dict,
    sampling_to_dict,
    write_synthetic_video,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FPS = 25


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """50 lossless frames at 25 fps; frame i has red = i; the stream starts at 0.2 s (5 frames)."""
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "syn.mkv", 50, fps=FPS, start_frames=5)


def _ids(steps):
    return [f[:, 0, 0, 0].tolist() for _, f in steps]


def test_decodes_every_shared_video(shared_videos):
    expected = {"bigbuckbunny.mp4": 132, "bikes.mp4": 250, "carphone_pristine.mp4": 120,
                "carphone_distorted.mp4": 120, "cityCC0.mpg": 190}
    for name, path in shared_videos.items():
        info = probe(path)
        n, last = 0, -1.0
        for t, img in iter_frames(path, short_side=64):
            assert t > last and img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) == 64
            last, n = t, n + 1
        if name in expected:
            assert n == expected[name], name
        assert abs(last - (n - 1) / info.fps) < 0.05, name


def test_start_offset_is_removed(shared_videos):
    info = probe(shared_videos["cityCC0.mpg"])
    assert info.start_time == pytest.approx(0.54) and info.codec == "mpeg2video"
    times = [t for t, _ in iter_frames(shared_videos["cityCC0.mpg"], short_side=32)]
    assert times[0] == pytest.approx(0.0) and times[-1] == pytest.approx(7.56)
    seg = [t for t, _ in iter_frames(shared_videos["cityCC0.mpg"], segment=Segment(2.0, 3.0),
                                     short_side=32)]
    assert len(seg) == 25 and seg[0] == pytest.approx(0.0, abs=1e-6)


def test_exact_frame_timestamps(syn):
    info = probe(syn)
    assert info.start_time == pytest.approx(0.2) and info.codec == "ffv1"
    frames = list(iter_frames(syn))
    assert [int(f[0, 0, 0]) for _, f in frames] == list(range(50))
    np.testing.assert_allclose([t for t, _ in frames], np.arange(50) / FPS, atol=1e-9)
    # A segment of the time line (seek past key frames, start offset added back).
    seg = list(iter_frames(syn, segment=Segment(0.5, 1.0)))
    assert [int(f[0, 0, 0]) for _, f in seg] == list(range(13, 25))
    np.testing.assert_allclose([t for t, _ in seg], np.arange(13, 25) / FPS - 0.5, atol=1e-9)


def test_every_kth(syn):
    steps = list(sample(syn, EveryKth(3)))
    assert _ids(steps) == [[i] for i in range(0, 50, 3)]
    assert [s.index for s, _ in steps] == list(range(17))
    assert [s.is_last for s, _ in steps] == [False] * 16 + [True]
    assert steps[2][0].time == pytest.approx(6 / FPS)


def test_uniform_picks_slice_centres(syn):
    steps = list(sample(syn, Uniform(5)))
    # 2 s clip, slices of 0.4 s, centres 0.2, 0.6, ... -> frames 5, 15, 25, 35, 45
    assert _ids(steps) == [[5], [15], [25], [35], [45]]
    assert steps[-1][0].is_last
    seg = list(sample(syn, Uniform(2), segment=Segment(1.0, 1.4)))
    assert _ids(seg) == [[27], [32]]  # centres 1.1 s and 1.3 s -> frames 27.5 (tie: earlier) and 32.5
    assert list(sample(syn, Uniform(60)))[-1][1][0, 0, 0, 0] == 49  # more steps than frames


def test_windows_last_partial_rules(syn):
    pad = list(sample(syn, Windows(16)))
    assert _ids(pad)[:3] == [list(range(0, 16)), list(range(16, 32)), list(range(32, 48))]
    assert _ids(pad)[3] == [48, 49] + [49] * 14 and pad[3][0].padded == 14 and pad[3][0].is_last
    assert pad[3][0].time == pytest.approx(48.5 / FPS)  # padding excluded from the timestamp
    assert pad[0][0].time == pytest.approx(7.5 / FPS)
    shift = list(sample(syn, Windows(16, last="shift")))
    assert _ids(shift)[-1] == list(range(34, 50)) and shift[-1][0].padded == 0
    drop = list(sample(syn, Windows(16, last="drop")))
    assert len(drop) == 3 and drop[-1][0].is_last
    overlap = list(sample(syn, Windows(16, stride=8)))
    assert [ids[0] for ids in _ids(overlap)] == [0, 8, 16, 24, 32, 40]
    assert _ids(overlap)[-1][:10] == list(range(40, 50))
    gaps = list(sample(syn, Windows(4, stride=20)))
    assert _ids(gaps) == [[0, 1, 2, 3], [20, 21, 22, 23], [40, 41, 42, 43]]
    short = list(sample(syn, Windows(64)))
    assert len(short) == 1 and short[0][0].padded == 14
    with pytest.raises(VideoError, match="no video frames"):
        list(sample(syn, Windows(64, last="drop")))


def test_windows_resampled_fps(syn):
    steps = list(sample(syn, Windows(5, fps=12.5)))  # every 2nd frame at 25 fps
    assert _ids(steps) == [[0, 2, 4, 6, 8], [10, 12, 14, 16, 18], [20, 22, 24, 26, 28],
                           [30, 32, 34, 36, 38], [40, 42, 44, 46, 48]]
    up = list(sample(syn, Windows(4, fps=50)))  # each frame repeated twice
    assert _ids(up)[0] == [0, 0, 1, 1]
    assert sum(4 - s.padded for s, _ in up) == 100


def test_bad_files(tmp_path):
    with pytest.raises(VideoError, match="no such file"):
        list(sample(tmp_path / "missing.avi", EveryKth(1)))
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        list(sample(tmp_path / "empty.avi", EveryKth(1)))
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        list(sample(tmp_path / "junk.mp4", EveryKth(1)))


def test_sampling_dict_round_trip():
    for s in (EveryKth(3), Uniform(15), Windows(16, fps=25.0, stride=8, last="shift")):
        assert sampling_from_dict(sampling_to_dict(s)) == s
    with pytest.raises(ValueError):
        Windows(16, last="wrap")


def test_streaming_memory_is_bounded(tmp_path):
    """Windows hold at most W frames: a long video's frames are not kept."""
    import weakref

    path = write_synthetic_video(tmp_path / "long.mkv", 300, size=(32, 32))
    alive = []
    for _, frames in sample(path, Windows(8)):
        alive.append(weakref.ref(frames))
    assert sum(r() is not None for r in alive) <= 1
    assert "pyav" in available_backends()
