"""FpsFilter: FFmpeg's ``fps`` filter (round=near, the defaults of FrozenBiLM's ffmpeg-python call)
reproduced on moviefib's decoded frames, checked frame for frame against FFmpeg itself: PyAV's filter
graph (the FFmpeg its wheel bundles), the ``ffmpeg`` command where one is installed (the command
FrozenBiLM's extract/video_loader.py runs), and the real videos of ../shared/videos.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")

from moviefib.features.presets import parse_sampling  # noqa: E402
from moviefib.video import (  # noqa: E402
    EveryKth,
    FpsFilter,
    Uniform,
    VideoError,
    Windows,
    iter_frames,
    sample,
    sampling_from_dict,
    sampling_to_dict,
    write_synthetic_video,
)

SHARED_VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "videos"
RATES = [25, Fraction(30000, 1001), 30, 24]
# Frame counts around the edges: under half a second (no output), the half second itself, x.5 s
# (62/63 at 25 fps, 60 = exactly 2.5 s at 24, 75 = exactly 2.5 s at 30), whole seconds, longer.
LENGTHS = [1, 11, 12, 13, 15, 60, 61, 62, 63, 74, 75, 76, 90, 101]


def _ident(img: np.ndarray) -> int:
    """The frame number write_synthetic_video painted into a frame (red + 256 * green)."""
    return int(img[0, 0, 0]) + 256 * int(img[0, 0, 1])


def _ffmpeg_filter(path, fps) -> list[tuple[float, np.ndarray]]:
    """(output time, RGB frame) of FFmpeg's fps filter run by PyAV on the decoded stream, its timestamps
    taken from the stream's start as the ``ffmpeg`` command does (it subtracts the file's start time)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        graph = av.filter.Graph()
        chain = [graph.add_buffer(template=stream), graph.add("fps", f"fps={fps}"), graph.add("buffersink")]
        chain[0].link_to(chain[1])
        chain[1].link_to(chain[2])
        graph.configure()
        out = []
        for frame in [*container.decode(stream), None]:
            if frame is not None:
                frame.pts -= stream.start_time or 0
            graph.push(frame)
            while True:
                try:
                    got = graph.pull()
                except (av.BlockingIOError, av.EOFError):
                    break
                out.append((float(got.pts * got.time_base), got.to_ndarray(format="rgb24")))
    return out


def _ours(path, fps) -> list[tuple[float, np.ndarray]]:
    try:
        return [(info.time, frames[0]) for info, frames in sample(path, FpsFilter(fps))]
    except VideoError as exc:
        assert "FFmpeg's fps filter outputs no frame" in str(exc), exc
        return []


def _assert_same(ours, theirs, where):
    assert len(ours) == len(theirs), f"{where}: {len(ours)} steps, FFmpeg's {len(theirs)}"
    assert [t for t, _ in ours] == pytest.approx([t for t, _ in theirs], abs=1e-9), where
    for i, ((_, a), (_, b)) in enumerate(zip(ours, theirs)):
        assert np.array_equal(a, b), f"{where}: output {i} is frame {_ident(a)}, FFmpeg's is {_ident(b)}"


# ---------------------------------------------------------------- the sampler's record


@pytest.mark.parametrize("fps", [0, -1, math.nan, math.inf, 1000.5])
def test_the_rate_is_bounded(fps):
    with pytest.raises(ValueError, match="fps filter rate must be > 0 and <= 1,000 frames/s"):
        FpsFilter(fps)


def test_it_round_trips_through_provenance_and_text():
    s = FpsFilter(1.0)
    assert sampling_to_dict(s) == {"type": "FpsFilter", "fps": 1.0}
    assert sampling_from_dict(sampling_to_dict(s)) == s
    assert parse_sampling("ffmpeg-fps:1") == s
    assert parse_sampling(" ffmpeg-fps:30000/1001 ") == FpsFilter(30000 / 1001)
    assert parse_sampling("ffmpeg-fps:2.5").fps == 2.5
    # The other forms are read as before.
    assert parse_sampling("windows:1,fps=1") == Windows(1, fps=1.0)
    assert parse_sampling("every:3") == EveryKth(3) and parse_sampling("uniform:8") == Uniform(8)


@pytest.mark.parametrize("text", ["ffmpeg-fps:", "ffmpeg-fps:0", "ffmpeg-fps:x", "ffmpeg-fps:1,2", "ffmpeg-fps:1/0",
                                  "ffmpeg-fps:2000", "ffmpeg-fps:nan"])
def test_bad_text_is_refused(text):
    with pytest.raises(ValueError, match="bad sampling"):
        parse_sampling(text)


# ---------------------------------------------------------------- the rule, worked by hand


def test_output_n_is_the_frame_on_screen_half_a_period_later(tmp_path):
    video = write_synthetic_video(tmp_path / "v.mkv", 80, fps=25)  # 3.2 s
    steps = list(sample(video, FpsFilter(1.0)))
    # The last frame starting before n + 0.5 s: 12 (0.48 s), 37, 62; round(3.2) = 3 of them.
    assert [(s.index, s.time, s.start, _ident(f[0])) for s, f in steps] == [
        (0, 0.0, 0.48, 12), (1, 1.0, 1.48, 37), (2, 2.0, 2.48, 62)]
    assert [s.is_last for s, _ in steps] == [False, False, True]
    # At 2 frames/s the grid is 0.5 s: the frames on screen at 0.25, 0.75, ... s.
    assert [_ident(f[0]) for _, f in sample(video, FpsFilter(2.0))] == [6, 18, 31, 43, 56, 68]


def test_a_frame_exactly_on_a_half_goes_to_the_next_output(tmp_path):
    # At 24 fps frame 12 starts at exactly 0.5 s: FFmpeg's rounding sends it to output 1.
    video = write_synthetic_video(tmp_path / "v.mkv", 48, fps=24)
    assert [_ident(f[0]) for _, f in sample(video, FpsFilter(1.0))] == [11, 35]


def test_under_half_a_period_is_no_step_in_one_line(tmp_path):
    video = write_synthetic_video(tmp_path / "v.mkv", 12, fps=25)  # 0.48 s
    with pytest.raises(VideoError) as err:
        list(sample(video, FpsFilter(1.0)))
    assert str(err.value) == (f"{video}: 0.480 s of video, under half a period at 1 frames/s: FFmpeg's fps "
                              "filter outputs no frame of it")
    assert len(list(sample(write_synthetic_video(tmp_path / "w.mkv", 13, fps=25), FpsFilter(1.0)))) == 1


# ---------------------------------------------------------------- against FFmpeg


@pytest.mark.parametrize("start", [None, 0.54], ids=["from-0", "from-0.54s"])
@pytest.mark.parametrize("rate", RATES, ids=lambda r: f"{float(r):.2f}fps")
def test_the_frames_are_ffmpegs(tmp_path, rate, start):
    for n in LENGTHS:
        video = write_synthetic_video(tmp_path / f"v{n}.mkv", n, fps=rate, start_time=start)
        theirs = _ffmpeg_filter(video, 1)
        if rate == 25:  # 40 ms frames: Matroska's milliseconds hold them exactly, so d is exact
            assert len(theirs) == math.floor(n / 25 + 0.5), n  # round(d), halves up
        _assert_same(_ours(video, 1), theirs, f"{n} frames at {float(rate):.3f} fps from {start}")


@pytest.mark.parametrize("fps", [0.5, 2, 3, Fraction(30000, 1001)], ids=str)
def test_other_rates_are_ffmpegs(tmp_path, fps):
    video = write_synthetic_video(tmp_path / "v.mkv", 173, fps=25, start_time=0.54)
    theirs = _ffmpeg_filter(video, fps)
    assert theirs
    _assert_same(_ours(video, float(fps)), theirs, f"fps={fps}")


def test_the_ffmpeg_command_frozenbilm_runs_gives_the_same_frames(tmp_path):
    """``ffmpeg -i CLIP -filter_complex [0]fps=fps=1[s0] -map [s0] -f rawvideo -pix_fmt rgb24 pipe:``: what
    ffmpeg-python builds from extract/video_loader.py (its scale and crop left out: frames compared)."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("no ffmpeg command on PATH (PyAV's bundled filter is checked above)")
    for rate, n, start in [(25, 63, 0.54), (24, 60, None), (24, 61, 0.54), (Fraction(30000, 1001), 75, None),
                           (30, 75, 0.54), (25, 12, None), (25, 101, None)]:
        video = write_synthetic_video(tmp_path / f"v{n}.mkv", n, fps=rate, start_time=start)
        done = subprocess.run([ffmpeg, "-v", "error", "-i", str(video), "-filter_complex", "[0]fps=fps=1[s0]",
                               "-map", "[s0]", "-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:"],
                              capture_output=True, check=True)
        theirs = [_ident(f) for f in np.frombuffer(done.stdout, np.uint8).reshape(-1, 48, 64, 3)]
        assert [_ident(f) for _, f in _ours(video, 1)] == theirs, (rate, n, start)


@pytest.mark.parametrize("name", ["bigbuckbunny.mp4", "bikes.mp4", "carphone_pristine.mp4", "cityCC0.mpg"])
def test_real_videos_give_ffmpegs_frames(name):
    path = SHARED_VIDEOS / name
    if not path.exists():
        pytest.skip(f"{path} not here (the real videos live in ../shared/videos)")
    for fps in (1, 2):
        theirs = _ffmpeg_filter(path, fps)
        ours = _ours(path, fps)
        assert len(ours) == len(theirs) > 0
        _assert_same(ours, theirs, f"{name} at fps={fps}")
    if name == "cityCC0.mpg":  # its stream starts at 0.54 s: the first output is the frame 0.48 s into it
        first = next(img for t, img in iter_frames(path) if t >= 0.48 - 1e-6)
        assert np.array_equal(_ours(path, 1)[0][1], first)
