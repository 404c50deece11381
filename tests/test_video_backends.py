"""Every decoding backend gives what PyAV (the reference) gives: frames, times, samplers, segments, errors."""

from __future__ import annotations

import sys
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
    iter_frames,
    probe,
    sample,
    write_synthetic_video,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FPS = 25
# Frame counts, first and last times (seconds on the clip's time line), header start offset.
SHARED_EXPECTED = {
    "bigbuckbunny.mp4": (132, 0.0, 5.24, 0.0), "bikes.mp4": (250, 0.0, 9.96, 0.0),
    "carphone_pristine.mp4": (120, 0.0, 119 / 29.97, 0.0),
    "carphone_distorted.mp4": (120, 0.0, 119 / 29.97, 0.0), "cityCC0.mpg": (190, 0.0, 7.56, 0.54)}


def _torchcodec_problem(probe_file: Path) -> str | None:
    """Why torchcodec cannot decode here, or None when it can.

    Importing ``torchcodec.decoders`` is not enough: torchcodec loads FFmpeg's shared libraries only
    when it first opens a file, so a machine without them imports it fine and then fails every
    decode. Only that failure to load is a reason to skip; any other error opening a valid file is a
    real failure and is raised.
    """
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError:
        return "torchcodec is not installed (pip install torchcodec)"
    except (OSError, RuntimeError) as exc:  # its native libraries do not load at import time
        return f"torchcodec cannot load its libraries here ({str(exc).splitlines()[0]})"
    try:
        VideoDecoder(str(probe_file))
    except (OSError, RuntimeError) as exc:
        if "libtorchcodec" not in str(exc):
            raise
        return "torchcodec cannot load FFmpeg's libraries here: install Debian's ffmpeg (apt-get install ffmpeg)"
    return None


@pytest.fixture(scope="session")
def torchcodec_problem(tmp_path_factory) -> str | None:
    return _torchcodec_problem(write_synthetic_video(tmp_path_factory.mktemp("tc") / "probe.mkv", 3))


@pytest.fixture
def torchcodec_usable(torchcodec_problem):
    """Skips the test, saying why, unless torchcodec can decode a file here."""
    if torchcodec_problem is not None:
        pytest.skip(torchcodec_problem)


@pytest.fixture(params=["pyav", "torchcodec"])
def backend(request) -> str:
    """Each decoding backend; torchcodec only where it can decode (else skipped with the reason)."""
    if request.param == "torchcodec":
        request.getfixturevalue("torchcodec_usable")
    return request.param


class _FakeDecoders:
    """Stands in for ``torchcodec.decoders``: its VideoDecoder raises ``error`` on every open."""

    def __init__(self, error: Exception):
        self.error = error

    def VideoDecoder(self, path):  # noqa: N802 (torchcodec's name)
        raise self.error


def test_skip_reason_when_torchcodec_cannot_load_ffmpeg(tmp_path, monkeypatch):
    """The import succeeds and only opening a file fails (this machine): a skip that says why."""
    load_error = RuntimeError("Could not load libtorchcodec. Likely causes:\n 1. FFmpeg is not installed")
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", _FakeDecoders(load_error))
    reason = _torchcodec_problem(tmp_path / "probe.mkv")
    assert reason is not None and "FFmpeg's libraries" in reason and "install" in reason


def test_other_torchcodec_errors_are_not_skipped(tmp_path, monkeypatch):
    """A torchcodec that loads but fails on a valid file is a failure, not a skip."""
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", _FakeDecoders(RuntimeError("bad stream")))
    with pytest.raises(RuntimeError, match="bad stream"):
        _torchcodec_problem(tmp_path / "probe.mkv")


def test_skip_reason_when_torchcodec_is_absent(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)  # import then raises ImportError
    assert "not installed" in _torchcodec_problem(tmp_path / "probe.mkv")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """150 lossless frames at 25 fps, frame i has red = i; the stream starts at 0.2 s (5 frames)."""
    return write_synthetic_video(tmp_path_factory.mktemp("v") / "syn.mkv", 150, fps=FPS, start_frames=5)


def _ids(steps):
    return [f[:, 0, 0, 0].tolist() for _, f in steps]


def test_shared_videos(shared_videos, backend):
    for name, path in shared_videos.items():
        info = probe(path, backend=backend)
        times = []
        for t, img in iter_frames(path, backend=backend, short_side=48):
            assert img.dtype == np.uint8 and img.ndim == 3 and min(img.shape[:2]) == 48, name
            assert img.shape == (48, round(info.width * 48 / info.height / 2) * 2, 3), name
            times.append(t)
        assert np.all(np.diff(times) > 0), name
        if name in SHARED_EXPECTED:
            n, first, last, offset = SHARED_EXPECTED[name]
            assert len(times) == n, (name, len(times))
            assert times[0] == pytest.approx(first, abs=1e-6) and times[-1] == pytest.approx(last, abs=1e-3)
            assert info.start_time == pytest.approx(offset), name


def test_probe_matches_pyav(shared_videos, syn, backend):
    for path in [*shared_videos.values(), syn]:
        ref, got = probe(path), probe(path, backend=backend)
        assert got.backend == backend and (got.codec, got.width, got.height) == (ref.codec, ref.width, ref.height)
        assert got.fps == pytest.approx(ref.fps) and got.start_time == pytest.approx(ref.start_time)
        assert got.num_frames == ref.num_frames and got.duration == pytest.approx(ref.duration)


def test_pixels_match_pyav(shared_videos, backend):
    """Native-size frames of the 7 KB distorted clip are identical; after scaling only close (the scalers differ)."""
    path = shared_videos["carphone_distorted.mp4"]
    ref = [img for _, img in iter_frames(path)]
    got = [img for _, img in iter_frames(path, backend=backend)]
    np.testing.assert_array_equal(np.stack(got), np.stack(ref))
    small_ref = np.stack([img for _, img in iter_frames(path, short_side=72)]).astype(np.int16)
    small = np.stack([img for _, img in iter_frames(path, backend=backend, short_side=72)])
    assert small.shape == small_ref.shape and np.abs(small - small_ref).mean() < 4.0


def test_exact_lossless_frames(syn, backend):
    frames = list(iter_frames(syn, backend=backend))
    assert [int(f[0, 0, 0]) for _, f in frames] == list(range(150))
    np.testing.assert_allclose([t for t, _ in frames], np.arange(150) / FPS, atol=1e-9)
    ref = [img for _, img in iter_frames(syn)]
    assert all(np.array_equal(a, b) for (_, a), b in zip(frames, ref))


@pytest.mark.parametrize("sampling", [EveryKth(3), Uniform(7), Uniform(200), Windows(16),
                                      Windows(16, stride=8, last="shift"), Windows(16, last="drop"),
                                      Windows(5, fps=12.5), Windows(4, fps=50, stride=7)], ids=repr)
def test_samplers_match_pyav(syn, backend, sampling):
    for segment in (None, Segment(1.3, 4.1)):
        ref = list(sample(syn, sampling, segment=segment))
        got = list(sample(syn, sampling, segment=segment, backend=backend))
        assert [s for s, _ in got] == [s for s, _ in ref]
        assert _ids(got) == _ids(ref)


def test_segments_of_a_longer_video(syn, shared_videos, backend):
    seg = list(iter_frames(syn, segment=Segment(3.0, 4.5), backend=backend))
    assert [int(f[0, 0, 0]) for _, f in seg] == list(range(75, 113))
    np.testing.assert_allclose([t for t, _ in seg], np.arange(75, 113) / FPS - 3.0, atol=1e-9)
    assert [int(f[0, 0, 0]) for _, f in iter_frames(syn, segment=Segment(5.9), backend=backend)] == [148, 149]
    assert list(iter_frames(syn, segment=Segment(7.0, 8.0), backend=backend)) == []
    with pytest.raises(VideoError, match="no video frames"):
        list(sample(syn, EveryKth(1), segment=Segment(7.0, 8.0), backend=backend))
    city = shared_videos["cityCC0.mpg"]
    # MPEG-PS seeks land on a later key frame: near the start (0.1 s) and mid-stream (2.0 s).
    for lo, hi, n in ((0.1, 0.5, 10), (2.0, 3.0, 25), (7.0, None, 15)):
        ref = [t for t, _ in iter_frames(city, segment=Segment(lo, hi), short_side=32)]
        got = [t for t, _ in iter_frames(city, segment=Segment(lo, hi), short_side=32, backend=backend)]
        assert len(got) == n and got == pytest.approx(ref, abs=1e-6), (lo, hi)
        assert got[0] == pytest.approx(0.0, abs=0.021)


def test_lying_frame_count(tmp_path, backend):
    path = write_synthetic_video(tmp_path / "liar.avi", 50, fps=FPS)
    data = bytearray(path.read_bytes())
    i = data.index(b"avih")  # main AVI header: dwTotalFrames at offset 8 + 16
    data[i + 24:i + 28] = (444).to_bytes(4, "little")
    j = data.index(b"strh")  # stream header: dwLength at offset 8 + 32
    data[j + 40:j + 44] = (444).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    assert probe(path, backend=backend).num_frames == 444
    assert [int(f[0, 0, 0]) for _, f in iter_frames(path, backend=backend)] == list(range(50))
    assert _ids(list(sample(path, Uniform(2), backend=backend))) == [[12], [37]]
    # Segments inside the length the header claims, but past the real end, hold no frame.
    assert [int(f[0, 0, 0]) for _, f in iter_frames(path, segment=Segment(1.0, 1.2), backend=backend)] \
        == list(range(25, 30))
    assert list(iter_frames(path, segment=Segment(5.0, 6.0), backend=backend)) == []
    assert _ids(list(sample(path, Windows(16), backend=backend)))[-1] == [48, 49] + [49] * 14


def test_bad_files(tmp_path, backend):
    with pytest.raises(VideoError, match="no such file"):
        list(sample(tmp_path / "missing.avi", EveryKth(1), backend=backend))
    (tmp_path / "empty.avi").write_bytes(b"")
    with pytest.raises(VideoError, match="empty file"):
        list(sample(tmp_path / "empty.avi", EveryKth(1), backend=backend))
    (tmp_path / "junk.mp4").write_bytes(b"\x00garbage" * 100)
    with pytest.raises(VideoError, match="junk.mp4"):
        list(sample(tmp_path / "junk.mp4", EveryKth(1), backend=backend))
    (tmp_path / "corrupt.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 12)
    with pytest.raises(VideoError, match="corrupt.mp4"):
        list(sample(tmp_path / "corrupt.mp4", Uniform(3), backend=backend))


def test_cli_extract_with_torchcodec(tmp_path, shared_videos, torchcodec_usable):
    pytest.importorskip("torch")
    pytest.importorskip("h5py")
    from moviefib.cli import main
    from moviefib.features.store import open_store

    clips = tmp_path / "clips"
    clips.mkdir()
    write_synthetic_video(clips / "syn.mkv", 12, start_frames=3)
    (clips / "distorted.mp4").symlink_to(shared_videos["carphone_distorted.mp4"])
    stores = {}
    for decoder in ("torchcodec", "pyav"):
        stores[decoder] = tmp_path / f"{decoder}.h5"
        assert main(["extract", "--extractor", "googlenet", "--weights", "none", "--sampling", "every:20",
                     "--folder", str(clips), "-o", str(stores[decoder]), "--decoder", decoder,
                     "--workers", "1", "--short-side", "64", "--no-progress"]) == 0
    with open_store(stores["torchcodec"]) as tc, open_store(stores["pyav"]) as av:
        assert tc.provenance["decoder"] == "torchcodec" and sorted(tc.clip_ids()) == ["distorted", "syn"]
        assert sorted(tc.clip_ids()) == sorted(av.clip_ids())
        for c in tc.clip_ids():
            got, ref = tc.get(c), av.get(c)
            assert got.features.shape == ref.features.shape and got.features.shape[1] == 1024
            np.testing.assert_allclose(got.timestamps, ref.timestamps, atol=1e-9)
        np.testing.assert_allclose(tc.get("syn").timestamps, [0.0])
        assert len(tc.get("distorted").timestamps) == 6
