"""Video decoding and time-based frame sampling, streamed: a video is never held whole in memory.

Decoders: PyAV (default; the ``av`` wheel bundles FFmpeg) and torchcodec (``backend="torchcodec"``,
when it is importable). Both give RGB frames as uint8 ``[H, W, 3]`` arrays with their presentation time.

Time conventions (all in seconds):

* A video's own time line starts at its stream's first presentation time: a stream that starts at
  0.54 s (``cityCC0.mpg``) has its first frame at 0.0 here. A :class:`Segment` (a clip cut out of a whole
  movie, at the LSMDC extracted start/end) is given on that time line.
* Sampled steps carry times from the *clip* start: the segment start, or 0 for a clip file decoded whole.
* A step's ``time`` (what feature stores record) is the mean of the presentation times of the frames it
  covers, padding excluded: the frame time for one frame, the window centre for a window;
  :class:`FpsFilter`'s is FFmpeg's output time instead (see there).

Samplers (frozen dataclasses, see :data:`Sampling`):

* :class:`EveryKth` — every k-th decoded frame (k = 1: all frames), one frame per step.
* :class:`Uniform` — N frames whose times are spread uniformly: the frames nearest to the centres of N
  equal slices of the clip's duration, one frame per step.
* :class:`Windows` — windows of W frames taken at F frames/s (the decoded frames resampled to F by
  nearest presentation time; F None = the video's own frames), a new window every S frames.
  **The last partial window** (fewer than W frames left): ``last="pad"`` (default) keeps it when it holds
  at least one frame no earlier window covered, padding it by repeating its last frame (so a clip shorter
  than one window still gives one step); ``"shift"`` moves it back to end on the clip's last frame
  (overlapping the previous window; padded only when the whole clip is shorter than W); ``"drop"``
  discards it (a clip shorter than W then gives no step at all).
* :class:`FpsFilter` — FFmpeg's ``fps=F`` filter with its defaults (``round=near``, ``eof_action=round``),
  one frame per step, the frames ``ffmpeg -i CLIP -vf fps=F`` outputs (FrozenBiLM's extraction). Output
  frame n is on the 1/F grid at n / F (its ``time``); it repeats the last frame starting *before*
  (n + 0.5) / F, i.e. the frame on screen half a period after n / F. The outputs run from the first
  frame's rounded time, round(t0 * F) (0 for a file decoded whole), to round(end * F) exclusive, where
  end is the end of the last frame: round(d * F) steps for d seconds, none under half a period.
  Rounding is FFmpeg's ``AV_ROUND_NEAR_INF``, halves away from zero: a frame starting exactly at
  (n + 0.5) / F belongs to output n + 1, and a clip of exactly 2.5 s gives 3 steps. The time line is the
  clip's (the ``ffmpeg`` command subtracts the file's start time: a stream starting at 0.54 s gives
  the same frames as one starting at 0; PyAV's filter graph fed raw timestamps would not). The last
  frame lasts one period of the stream's average rate, where FFmpeg reads its own duration: Matroska
  stores it in whole milliseconds (41 ms at 24 frames/s, so that 60 frames end at 2.499 s: 2 steps),
  and the two disagree only where a half period falls between the two ends, which with timestamps
  and durations in whole milliseconds it cannot.
Sampler parameters are bounded (ValueError past a bound): k <= 100,000 (over an hour of 25 fps video
between two frames), N <= 10,000, W <= 1,024 frames, S <= 100,000 frames, F <= 1,000 frames/s. Past
them a sampler is a typo, not a setting: ``uniform:99999999999999`` would plan that many frames and run
until killed. :class:`FpsFilter`'s F has the same bound as a window's.

Frame counts in headers are never trusted (some AVI headers say 444 frames and hold 68): decoding runs
to the end of the stream or the segment.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np

from .fileio import special_file_kind

log = logging.getLogger(__name__)

BACKENDS = ("pyav", "torchcodec")

# The documented bounds of the samplers' parameters (see the module documentation).
MAX_EVERY_K = 100_000
MAX_UNIFORM_N = 10_000
MAX_WINDOW = 1_024
MAX_STRIDE = 100_000
MAX_FPS = 1_000.0


class VideoError(Exception):
    """A video that cannot be decoded: missing, empty, corrupt, no video stream. Names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What a container says about its video stream (``num_frames`` and ``duration`` may be wrong).

    Attributes:
        path: the file.
        backend: decoder used (``pyav`` or ``torchcodec``).
        codec: codec name (``h264``, ``mpeg2video``...).
        width, height: frame size in pixels.
        fps: average frame rate, or None when unknown.
        start_time: the stream's first presentation time, seconds (the offset the time line removes).
        duration: stream duration in seconds from the metadata, or None.
        num_frames: frame count from the header, or None (may lie).
    """

    path: str
    backend: str
    codec: str
    width: int
    height: int
    fps: float | None
    start_time: float
    duration: float | None
    num_frames: int | None


@dataclass(frozen=True)
class Segment:
    """A part of a video's time line, in seconds from its first frame (``end`` None: to the end).

    Frames with ``start <= time < end`` belong to the segment.
    """

    start: float = 0.0
    end: float | None = None

    def __post_init__(self):
        if self.start < 0 or (self.end is not None and self.end <= self.start):
            raise ValueError(f"bad segment [{self.start}, {self.end}): need 0 <= start < end")

    @property
    def duration(self) -> float | None:
        return None if self.end is None else self.end - self.start


@dataclass(frozen=True)
class StepInfo:
    """One sampled step of a clip (like pytorchvideo's ClipInfo, with times in seconds from the clip start).

    Attributes:
        index: step number within the clip (0-based).
        time: the step's timestamp: mean presentation time of its frames (padding excluded), or for
            :class:`FpsFilter` the output frame's time n / F (its frame starts up to half a period later).
        start: presentation time of its first frame.
        end: presentation time of its last real frame.
        num_frames: frames in the step (1, or the window size W including padding).
        padded: how many of them repeat the last real frame (the partial-window rule).
        is_last: True on the clip's last step.
    """

    index: int
    time: float
    start: float
    end: float
    num_frames: int
    padded: int
    is_last: bool


@dataclass(frozen=True)
class EveryKth:
    """Every k-th decoded frame, starting with the first (k = 1: every frame)."""

    k: int = 1

    def __post_init__(self):
        if not 1 <= self.k <= MAX_EVERY_K:
            raise ValueError(f"every-k sampling needs 1 <= k <= {MAX_EVERY_K:,}, not {self.k}")


@dataclass(frozen=True)
class Uniform:
    """N frames spread uniformly over the clip: those nearest the centres of N equal time slices."""

    n: int

    def __post_init__(self):
        if not 1 <= self.n <= MAX_UNIFORM_N:
            raise ValueError(f"uniform sampling needs 1 <= n <= {MAX_UNIFORM_N:,}, not {self.n}")


@dataclass(frozen=True)
class Windows:
    """Windows of ``window`` frames at ``fps`` (None: native frames), one every ``stride`` frames.

    ``stride`` None means ``window`` (non-overlapping). ``last``: rule for the final partial window
    (``pad``, ``shift`` or ``drop``; see the module documentation).
    """

    window: int
    fps: float | None = None
    stride: int | None = None
    last: Literal["pad", "shift", "drop"] = "pad"

    def __post_init__(self):
        if not 1 <= self.window <= MAX_WINDOW:
            raise ValueError(f"window sampling needs 1 <= window <= {MAX_WINDOW:,}, not {self.window}")
        if self.stride is not None and not 1 <= self.stride <= MAX_STRIDE:
            raise ValueError(f"window stride must be 1 <= stride <= {MAX_STRIDE:,}, not {self.stride}")
        if self.fps is not None and not 0 < self.fps <= MAX_FPS:  # also refuses NaN
            raise ValueError(f"window fps must be > 0 and <= {MAX_FPS:,.0f}, not {self.fps}")
        if self.last not in ("pad", "shift", "drop"):
            raise ValueError(f"last-window rule must be pad, shift or drop, not {self.last!r}")

    @property
    def step(self) -> int:
        return self.window if self.stride is None else self.stride


@dataclass(frozen=True)
class FpsFilter:
    """FFmpeg's ``fps`` filter at ``fps`` frames/s with its defaults (``round=near``, ``eof_action=round``,
    no ``start_time``): the frames ``ffmpeg -i CLIP -vf fps=F`` outputs, one per step, each timestamped
    with its output time n / F (see the module documentation)."""

    fps: float = 1.0

    def __post_init__(self):
        if not 0 < self.fps <= MAX_FPS:  # also refuses NaN
            raise ValueError(f"fps filter rate must be > 0 and <= {MAX_FPS:,.0f} frames/s, not {self.fps}")


Sampling = EveryKth | Uniform | Windows | FpsFilter


def sampling_to_dict(sampling: Sampling) -> dict:
    """A JSON-friendly description of a sampler (for provenance)."""
    from dataclasses import asdict

    return {"type": type(sampling).__name__, **asdict(sampling)}


def sampling_from_dict(d: dict) -> Sampling:
    """The inverse of :func:`sampling_to_dict`."""
    kinds = {"EveryKth": EveryKth, "Uniform": Uniform, "Windows": Windows, "FpsFilter": FpsFilter}
    d = dict(d)
    kind = d.pop("type", None)
    if kind not in kinds:
        raise ValueError(f"unknown sampling type {kind!r}; expected one of {', '.join(kinds)}")
    return kinds[kind](**d)


class DecoderUnavailableError(Exception):
    """A decoder that cannot run on this machine at all (not one bad file): the message says why."""


def backend_problem(name: str) -> str | None:
    """Why the decoder ``name`` cannot run here, in one line, or None when it can."""
    if name not in BACKENDS:
        return f"unknown video backend {name!r}; expected one of {', '.join(BACKENDS)}"
    if name == "pyav":
        try:
            import av  # noqa: F401
        except ImportError:
            return "the pyav decoder needs PyAV: pip install 'moviefib[features]'"
        return None
    try:
        from torchcodec._core import ops
    except ImportError:
        return "torchcodec is not installed: pip install 'moviefib[torchcodec]'"
    except (OSError, RuntimeError) as exc:  # torchcodec < 0.8 loads FFmpeg at import
        return f"torchcodec cannot load its libraries here ({str(exc).splitlines()[0]})"
    # torchcodec >= 0.8 imports without FFmpeg and fails only when a video is opened, with a
    # traceback per attempt; its own flag says whether the libraries loaded.
    if not getattr(ops, "_FFMPEG_AVAILABLE", True):
        return ("torchcodec cannot load FFmpeg's shared libraries (it needs FFmpeg 4-9, e.g. "
                "apt-get install ffmpeg); use --decoder pyav, whose wheel bundles FFmpeg")
    return None


def available_backends() -> list[str]:
    """Decoders usable here: ``pyav`` when ``av`` is installed, ``torchcodec`` when it loads FFmpeg."""
    return [name for name in BACKENDS if backend_problem(name) is None]


def require_backend(name: str) -> None:
    """Raise :class:`DecoderUnavailableError` (one line) unless the decoder ``name`` can run here."""
    problem = backend_problem(name)
    if problem is not None:
        raise DecoderUnavailableError(problem)


# Codecs of still images. FFmpeg opens a PNG or JPEG under any name (as ``png_pipe``, ``image2``...)
# and decodes it as a one-frame "video": such a file is refused, not turned into a one-frame clip.
_STILL_IMAGE_CODECS = frozenset({
    "png", "apng", "bmp", "tiff", "webp", "jpeg2000", "jpegls", "jpegxl", "pgm", "pgmyuv", "ppm", "pbm",
    "pam", "targa", "sgi", "dpx", "exr", "qoi", "xbm", "xpm", "pcx", "sunrast", "photocd", "hdr", "gem",
    "pictor", "psd", "dds", "vbn", "xwd"})


def _still_image_problem(path: Path, demuxer: str, codec: str) -> str | None:
    if demuxer == "image2" or demuxer.endswith("_pipe") or codec in _STILL_IMAGE_CODECS:
        return f"{path}: a still image ({demuxer or 'image'}, codec {codec or '?'}), not a video"
    return None


# ---------------------------------------------------------------------------------------------------
# Decoders: each yields (time on the video's time line, RGB uint8 [H, W, 3]) in presentation order.


def _check_file(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise VideoError(f"{path}: symbolic link loop") from None
        raise VideoError(f"{path}: broken symbolic link (to {os.readlink(path)}, which does not exist)")
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video file")
    kind = special_file_kind(path.stat().st_mode)
    if kind is not None:  # opening a named pipe blocks until a writer comes; /dev/zero never ends
        raise VideoError(f"{path}: {kind}, not a regular file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file")


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int] | None:
    if not short_side or min(width, height) == short_side:
        return None
    scale = short_side / min(width, height)
    # Even sizes: some scalers and all yuv420 consumers want them; the error is under one pixel.
    return (max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2))


class _PyAVDecoder:
    name = "pyav"

    def __init__(self, path: Path, threads: int = 1):
        import av

        _check_file(path)
        self.path = path
        try:
            self.container = av.open(str(path))
        except Exception as exc:  # av.error.* (InvalidDataError...) all derive from Exception
            raise VideoError(f"{path}: cannot open ({type(exc).__name__}: {exc})") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(f"{path}: no video stream")
        self.stream = self.container.streams.video[0]
        still = _still_image_problem(path, self.container.format.name or "", self.stream.codec_context.name)
        if still:
            self.container.close()
            raise VideoError(still)
        if threads > 1:
            self.stream.thread_type = "AUTO"
            self.stream.codec_context.thread_count = threads
        s = self.stream
        tb = s.time_base
        start = float(s.start_time * tb) if s.start_time is not None and tb else None
        if start is None and self.container.start_time is not None:
            start = self.container.start_time / 1_000_000
        duration = float(s.duration * tb) if s.duration is not None and tb else None
        if duration is None and self.container.duration is not None:
            duration = self.container.duration / 1_000_000
        rate = s.average_rate or s.base_rate or s.guessed_rate
        self.info = VideoInfo(
            path=str(path), backend=self.name, codec=s.codec_context.name, width=s.width,
            height=s.height, fps=float(rate) if rate else None, start_time=start or 0.0,
            duration=duration, num_frames=int(s.frames) or None)

    def frames(self, segment: Segment | None, short_side: int | None) -> Iterator[tuple[float, np.ndarray]]:
        s, info = self.stream, self.info
        lo = 0.0 if segment is None else segment.start
        hi = None if segment is None else segment.end
        size = _scaled_size(info.width, info.height, short_side)
        period = 1.0 / info.fps if info.fps else 0.04
        eps = 1e-6
        # Seeking goes to a key frame near the target, but some containers (MPEG-PS) land after it:
        # back off further until the first frame decoded is not past the segment start.
        for margin in ((0.0, 1.0, 4.0, 16.0, None) if lo > 0 else (None,)):
            if margin is None and lo > 0:
                self.container.seek(0, backward=True, any_frame=False)  # from the very start
            elif margin is not None:
                target = max(0.0, info.start_time + lo - margin)
                self.container.seek(int(target / s.time_base), stream=s, backward=True, any_frame=False)
            decoded = self._decode(period)
            first = next(decoded, None)
            if first is None or margin is None or first[0] <= lo + eps:
                break
            log.debug("%s: seek to %.3f s landed at %.3f s; backing off", self.path, lo, first[0])
        if first is None:
            return
        for t, frame in _prepend(first, decoded):
            if t < lo - eps:
                continue
            if hi is not None and t >= hi - eps:
                break
            if size is None:
                img = frame.to_ndarray(format="rgb24")
            else:
                img = frame.reformat(width=size[0], height=size[1], format="rgb24",
                                     interpolation="BICUBIC").to_ndarray()
            yield t, img

    def _decode(self, period: float) -> Iterator[tuple[float, object]]:
        """(time on the video's time line, av.VideoFrame) in presentation order, repaired timestamps."""
        raw = ((frame.time, frame) for frame in self.container.decode(self.stream))
        return _repaired_times(raw, self.path, self.info.start_time, period)

    def close(self) -> None:
        self.container.close()


class _TorchcodecDecoder:
    """torchcodec, read sequentially frame by frame like the PyAV decoder.

    torchcodec's public calls seek before decoding, and its seeks land late in MPEG-PS files: in
    ``cityCC0.mpg`` a seek to the first frame (0.54 s) lands on the next key frame (1.02 s), so 12
    frames are lost and asking for the last indexed frames raises. Its ``get_next_frame`` decodes from
    where the decoder stands and, on a fresh decoder, from the very first packet without seeking; it
    is only exported from ``torchcodec._core``, so it is looked up when the backend opens a file.
    ``approximate`` seek mode spares the full packet scan that ``exact`` does on every open (a whole
    movie is opened once per clip); frame counts and times come from the decoded stream anyway.
    """

    name = "torchcodec"

    def __init__(self, path: Path, threads: int = 1):
        require_backend(self.name)  # without FFmpeg every open would print a 125-line traceback
        from torchcodec import _core
        from torchcodec.decoders import VideoDecoder

        self._next_frame = _core.get_next_frame
        self._container_metadata = _core.get_container_metadata
        _check_file(path)
        self.path = path
        self.threads = threads
        self._VideoDecoder = VideoDecoder
        self.decoder = self._open()
        m = self.decoder.metadata
        still = _still_image_problem(path, "", m.codec or "")
        if still:
            raise VideoError(still)
        start = m.begin_stream_seconds_from_header
        if start is None:
            start = m.begin_stream_seconds or 0.0
        fps = m.average_fps_from_header or m.average_fps
        duration = m.duration_seconds_from_header
        if duration is None:  # as PyAV does: the container's duration (Matroska has no stream one)
            try:
                duration = self._container_metadata(self.decoder._decoder).duration_seconds_from_header
            except Exception as exc:
                log.debug("%s: no container metadata (%s)", path, exc)
        self.info = VideoInfo(
            path=str(path), backend=self.name, codec=m.codec or "", width=m.width, height=m.height,
            fps=float(fps) if fps else None, start_time=float(start),
            duration=duration, num_frames=m.num_frames_from_header)

    def _open(self):
        try:
            return self._VideoDecoder(str(self.path), dimension_order="NHWC", seek_mode="approximate",
                                      num_ffmpeg_threads=self.threads)
        except Exception as exc:
            raise VideoError(f"{self.path}: cannot open ({type(exc).__name__}: {exc})") from None

    def frames(self, segment: Segment | None, short_side: int | None) -> Iterator[tuple[float, np.ndarray]]:
        info = self.info
        lo = 0.0 if segment is None else segment.start
        hi = None if segment is None else segment.end
        size = _scaled_size(info.width, info.height, short_side)
        period = 1.0 / info.fps if info.fps else 0.04
        eps = 1e-6
        first = None
        if lo > 0:
            first = self._seek(lo, eps)
            if first is None:
                log.debug("%s: cannot seek to %.3f s; decoding from the start", self.path, lo)
                self.decoder = self._open()  # a fresh decoder reads from the first packet
        for t, data in self._decode(period, first):
            if t < lo - eps:
                continue
            if hi is not None and t >= hi - eps:
                break
            if size is not None:
                data = _resize_hwc(data, size)
            yield t, data.numpy()

    def _seek(self, lo: float, eps: float):
        """Put the decoder on a frame at or before ``lo``: that frame's (pts, data), or None.

        None when the seeks land late however early they aim, or when torchcodec refuses the time:
        it checks it against the header's duration, which may be wrong (the caller then decodes
        from the start, which is always right).
        """
        start = self.info.start_time
        for margin in (0.0, 1.0, 4.0, 16.0):
            target = max(start, start + lo - margin)
            try:
                frame = self.decoder.get_frame_played_at(target)
            except IndexError as exc:
                log.debug("%s: seek to %.3f s refused (%s)", self.path, target, exc)
                return None
            except Exception as exc:
                raise VideoError(f"{self.path}: seeking to {lo:.3f} s failed "
                                 f"({type(exc).__name__}: {exc})") from None
            if frame.pts_seconds <= start + lo + eps:
                return frame.pts_seconds, frame.data
            if target <= start:
                break
        return None

    def _decode(self, period: float, first) -> Iterator[tuple[float, object]]:
        """(time on the video's time line, torch uint8 [H, W, 3]) in presentation order, repaired times.

        ``first``: the (pts, data) a seek left the decoder on, decoded before the frames that follow.
        """
        def raw():
            if first is not None:
                yield first
            while True:
                try:
                    data, pts, _ = self._next_frame(self.decoder._decoder)
                except IndexError:  # torchcodec's end of stream
                    return
                yield float(pts), data

        return _repaired_times(raw(), self.path, self.info.start_time, period)

    def close(self) -> None:
        self.decoder = None


def _repaired_times(raw: Iterator[tuple[float | None, object]], path: Path, start: float,
                    period: float) -> Iterator[tuple[float, object]]:
    """``(presentation time, frame)`` from a decoder -> ``(time on the video's time line, frame)``,
    increasing: a frame without a time stamp (some AVI/MPEG streams) or with a non-increasing one
    follows its predecessor by ``period``. A decoder error becomes a :class:`VideoError`."""
    prev = None
    try:
        for pts, frame in raw:
            t = (prev + period if prev is not None else 0.0) if pts is None else pts - start
            if prev is not None and t <= prev:
                t = prev + period
            prev = t
            yield t, frame
    except Exception as exc:
        raise VideoError(f"{path}: decoding failed after {prev or 0.0:.3f} s "
                         f"({type(exc).__name__}: {exc})") from None


def _resize_hwc(data, size: tuple[int, int]):
    """Scale a torch uint8 [H, W, 3] frame to ``size`` (width, height), bilinear with antialiasing."""
    import torch

    # uint8 in, uint8 out: torch's CPU kernel for this is several times faster than going through float.
    x = torch.nn.functional.interpolate(data.permute(2, 0, 1)[None], size=(size[1], size[0]),
                                        mode="bilinear", antialias=True, align_corners=False)
    return x[0].permute(1, 2, 0).contiguous()


def open_video(path: str | os.PathLike, *, backend: str = "pyav", threads: int = 1):
    """Open a video with a decoder; raises :class:`VideoError` naming the file and the reason."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown video backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    cls = _PyAVDecoder if backend == "pyav" else _TorchcodecDecoder
    return cls(Path(path), threads=threads)


def probe(path: str | os.PathLike, *, backend: str = "pyav") -> VideoInfo:
    """The container's description of its video stream (without decoding)."""
    dec = open_video(path, backend=backend)
    try:
        return dec.info
    finally:
        dec.close()


# A hole in the decoded frames: consecutive frames further apart than this many frame periods and
# seconds. Zeroed or lost bytes in the middle of a file drop their frames without an error and the
# decoder resumes after them; the whole files of ../shared/videos never leave more than one period
# between frames, and a variable frame rate (whose header rate may be its time base) stays far under.
GAP_PERIODS = 10
GAP_SECONDS = 0.5


@dataclass(frozen=True)
class Gap:
    """Frames missing in the middle of a clip: from ``start`` (seconds from the clip start) for ``length``."""

    start: float
    length: float


class DecodedSpan:
    """What decoding one clip actually yielded, filled in as its frames go by (see :func:`sample`).

    Attributes:
        info: the container's description of the stream (its header), once the file is open.
        frames: frames decoded.
        first, last: times of the first and last decoded frames (seconds from the clip start), or None.
        gaps: holes between decoded frames (see :data:`GAP_SECONDS`), in order.
    """

    def __init__(self):
        self.info: VideoInfo | None = None
        self.frames = 0
        self.first: float | None = None
        self.last: float | None = None
        self.gaps: list[Gap] = []

    @property
    def period(self) -> float:
        fps = self.info.fps if self.info is not None else None
        return 1.0 / fps if fps else 0.04

    def observe(self, t: float) -> None:
        if self.first is None:
            self.first = t
        elif t - self.last > max(GAP_SECONDS, GAP_PERIODS * self.period):
            self.gaps.append(Gap(self.last + self.period, t - self.last - self.period))
        self.last = t
        self.frames += 1

    @property
    def missing(self) -> float:
        """Seconds lost in the gaps."""
        return sum(g.length for g in self.gaps)

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last one, less the gaps (0 when nothing was
        decoded): a file with its middle lost is as short as one cut by as much."""
        if self.first is None or self.last is None:
            return 0.0
        return self.last - self.first + self.period - self.missing

    def gap_text(self) -> str | None:
        """The gaps in words (None when there is none), for a failure manifest or a warning."""
        if not self.gaps:
            return None
        first = self.gaps[0]
        more = f" and {len(self.gaps) - 1} more" if len(self.gaps) > 1 else ""
        return (f"{self.missing:.2f} s of frames missing in the middle (a gap of {first.length:.2f} s at "
                f"{first.start:.2f} s{more}): damaged or lost data")


def header_duration(info: VideoInfo) -> float | None:
    """The clip length the header declares: its frame count over its rate, else its duration field."""
    if info.num_frames and info.fps:
        return info.num_frames / info.fps
    return info.duration


def iter_frames(path: str | os.PathLike, *, segment: Segment | None = None, backend: str = "pyav",
                short_side: int | None = None, threads: int = 1,
                span: DecodedSpan | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Stream ``(time, RGB uint8 [H, W, 3])`` for every frame of the file or of ``segment``.

    ``time`` is in seconds from the clip start (segment start, or the stream's first frame).
    ``short_side``: scale frames (aspect kept, even sizes) so their short side has this many pixels:
    PyAV with FFmpeg's bicubic scaler, torchcodec with torch's antialiased bilinear, so scaled frames
    differ by 2-5 levels on average between the backends. Unscaled h264 frames are identical; MPEG-2
    ones differ by about 0.6 level on average (the two convert YUV to RGB differently).
    ``span``: filled in with the header and the times of the frames as they go by.
    """
    dec = open_video(path, backend=backend, threads=threads)
    lo = 0.0 if segment is None else segment.start
    if span is not None:
        span.info = dec.info
    try:
        for t, img in dec.frames(segment, short_side):
            if span is not None:
                span.observe(t - lo)
            yield t - lo, img
    finally:
        dec.close()


def _stream_duration(path: Path, backend: str, info: VideoInfo) -> float:
    """The true duration of a whole file: demux packets (cheap, no decoding) to find the last frame."""
    if backend == "pyav":
        import av

        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                last, n = None, 0
                for pkt in c.demux(s):
                    if pkt.pts is not None and pkt.size:
                        t = float(pkt.pts * s.time_base)
                        last = t if last is None else max(last, t)
                        n += 1
                if last is not None:
                    period = 1.0 / info.fps if info.fps else 0.0
                    return last - info.start_time + period
        except Exception as exc:
            log.debug("%s: packet scan failed (%s); using the header's duration", path, exc)
    else:
        try:
            from torchcodec.decoders import VideoDecoder

            # exact mode scans every packet (no decoding) and reports where the content ends.
            m = VideoDecoder(str(path), seek_mode="exact").metadata
            if m.end_stream_seconds_from_content is not None:
                return float(m.end_stream_seconds_from_content) - info.start_time
        except Exception as exc:
            log.debug("%s: packet scan failed (%s); using the header's duration", path, exc)
    if info.duration:
        return info.duration
    raise VideoError(f"{path}: cannot tell the duration for uniform sampling")


# ---------------------------------------------------------------------------------------------------
# Samplers over a stream of (time, frame).


def _nearest(frames: Iterator[tuple[float, np.ndarray]], targets: Iterator[float],
             to_end: bool) -> Iterator[tuple[float, np.ndarray]]:
    """For each increasing target time, the decoded frame nearest to it (ties: the earlier frame).

    Targets past the last frame get the last frame: all of them when ``to_end``, else only those
    before the end of the last frame's display (its time plus the spacing of the last two frames).
    Holds at most two frames.
    """
    targets = iter(targets)
    target = next(targets, None)
    prev = None
    spacing = 0.0
    for cur in frames:
        while target is not None and prev is not None and target <= (prev[0] + cur[0]) / 2 + 1e-9:
            yield prev
            target = next(targets, None)
        if target is None:
            return
        if prev is not None:
            spacing = cur[0] - prev[0]
        prev = cur
    if prev is None:
        return
    while target is not None and (to_end or target < prev[0] + spacing - 1e-9 or target <= prev[0]):
        yield prev
        target = next(targets, None)


def _steps_single(frames) -> Iterator[tuple[StepInfo, np.ndarray]]:
    """One frame per step, timestamped with its presentation time."""
    return _steps_timed((t, t, img) for t, img in frames)


def _steps_timed(items) -> Iterator[tuple[StepInfo, np.ndarray]]:
    """One frame per step from ``(step time, frame time, frame)``, with one-step look-ahead to mark the
    last step."""
    pending = None
    i = 0
    for item in items:
        if pending is not None:
            time, t, img = pending
            yield StepInfo(i, time, t, t, 1, 0, False), img[None]
            i += 1
        pending = item
    if pending is not None:
        time, t, img = pending
        yield StepInfo(i, time, t, t, 1, 0, True), img[None]


# FFmpeg rounds in integers, moviefib's times are floats (errors near 1e-12 s): a time within this
# fraction of an output period of a half is a half. Ticks of real time bases (1/90,000 s, 1 ms) lie
# thousands of times further apart.
_HALF_TOLERANCE = 1e-7


def _fps_index(t: float, fps: float) -> int:
    """FFmpeg's ``av_rescale_q_rnd(.., AV_ROUND_NEAR_INF)`` of a time ``t >= 0`` onto the 1/fps grid:
    the nearest output frame, halves up."""
    return math.floor(t * fps + 0.5 + _HALF_TOLERANCE)


def _fps_filter(frames: Iterator[tuple[float, np.ndarray]], fps: float,
                span: DecodedSpan) -> Iterator[tuple[int, float, np.ndarray]]:
    """``(output frame n, frame time, frame)`` as FFmpeg's fps filter (round=near, eof_action=round)
    outputs them; holds one frame. Like the filter, a frame fills every output slot before the slot
    its own rounded time opens, and the last frame those up to its end's rounded time; ``span`` gives
    the stream's frame period (known once the file is open)."""
    n = 0
    held = None
    for t, img in frames:
        k = _fps_index(t, fps)
        if held is None:
            n = k  # the filter's first output is at the first frame's rounded time
        while n < k:
            yield n, held[0], held[1]
            n += 1
        held = (t, img)
    if held is None:
        return
    end = _fps_index(held[0] + span.period, fps)
    while n < end:
        yield n, held[0], held[1]
        n += 1


def _window_steps(frames: Iterator[tuple[float, np.ndarray]], w: Windows) -> Iterator[tuple[StepInfo, np.ndarray]]:
    W, S = w.window, w.step
    buf: deque = deque(maxlen=W)
    ready: list | None = None  # a full window waiting to learn whether it is the last one
    covered_to = -1  # index of the last frame that an emitted window covers
    n = 0
    index = 0

    def make(frames_list, first_index, is_last):
        real = len(frames_list)
        times = [t for t, _ in frames_list]
        imgs = [img for _, img in frames_list]
        padded = W - real
        imgs.extend([imgs[-1]] * padded)
        info = StepInfo(first_index, float(np.mean(times)), times[0], times[-1], W, padded, is_last)
        return info, np.stack(imgs)

    for item in frames:
        buf.append(item)
        n += 1
        start = n - W
        if start >= 0 and start % S == 0:
            if ready is not None:
                yield make(ready, index, False)
                index += 1
            ready = list(buf)
            covered_to = n - 1
    if n == 0:
        return
    tail = None
    if covered_to < n - 1 and w.last != "drop":
        if w.last == "shift" and n >= W:
            tail = list(buf)
        else:
            # The first window start not yet emitted; it holds every uncovered frame (fewer than W).
            next_start = 0 if covered_to < 0 else covered_to - W + 1 + S
            if next_start < n:
                tail = list(buf)[-(n - next_start):]
    if ready is not None:
        yield make(ready, index, tail is None)
        index += 1
    if tail is not None:
        yield make(tail, index, True)


def sample(path: str | os.PathLike, sampling: Sampling, *, segment: Segment | None = None,
           backend: str = "pyav", short_side: int | None = None, threads: int = 1,
           span: DecodedSpan | None = None) -> Iterator[tuple[StepInfo, np.ndarray]]:
    """Stream the sampled steps of a clip: ``(StepInfo, uint8 frames [T, H, W, 3])``.

    ``path`` is a clip file (decoded whole) or, with ``segment``, a whole movie cut at the segment.
    T is 1 for :class:`EveryKth`/:class:`Uniform` and W for :class:`Windows`. Raises
    :class:`VideoError` (naming the file) when the file cannot be decoded or holds no frame.
    ``span``: filled in with what was decoded; the clip is then decoded to its end even where the
    sampler needs no more frames (uniform sampling stops half a slice early), so that its length is known.
    """
    path = Path(path)
    decoded = span if span is not None else DecodedSpan()
    frames = iter_frames(path, segment=segment, backend=backend, short_side=short_side, threads=threads,
                         span=decoded)
    got = False
    for step in _sample_frames(path, frames, sampling, segment, backend, decoded):
        got = True
        yield step
    if span is not None:
        for _ in frames:
            pass
    if not got:
        where = "" if segment is None else f" in [{segment.start:.3f}, {segment.end}) s"
        if isinstance(sampling, FpsFilter) and decoded.frames:
            raise VideoError(f"{path}: {decoded.duration:.3f} s of video{where}, under half a period at "
                             f"{sampling.fps:g} frames/s: FFmpeg's fps filter outputs no frame of it")
        raise VideoError(f"{path}: no video frames{where} (empty or undecodable clip)")


def _sample_frames(path: Path, frames, sampling: Sampling, segment: Segment | None, backend: str,
                   span: DecodedSpan):
    if isinstance(sampling, FpsFilter):
        fps = sampling.fps
        yield from _steps_timed((n / fps, t, img) for n, t, img in _fps_filter(frames, fps, span))
    elif isinstance(sampling, EveryKth):
        k = sampling.k
        picked = (f for i, f in enumerate(frames) if i % k == 0)
        yield from _steps_single(picked)
    elif isinstance(sampling, Uniform):
        if segment is not None and segment.end is not None:
            duration = segment.end - segment.start
        else:
            info = probe(path, backend=backend)
            duration = _stream_duration(path, backend, info)
            if segment is not None:
                duration -= segment.start
        n = sampling.n
        targets = ((i + 0.5) * duration / n for i in range(n))
        yield from _steps_single(_nearest(frames, targets, True))
    elif isinstance(sampling, Windows):
        if sampling.fps is not None:
            period = 1.0 / sampling.fps
            # Resample on the clip's time line from its first frame, up to the end of the last frame.
            first = next(frames, None)
            if first is None:
                return
            t0 = first[0]
            chained = _prepend(first, frames)
            targets = (t0 + j * period for j in _count())
            resampled = _nearest_with_target(chained, targets)
            yield from _window_steps(resampled, sampling)
        else:
            yield from _window_steps(frames, sampling)
    else:
        raise TypeError(f"unknown sampling {sampling!r}")


def _prepend(first, rest):
    yield first
    yield from rest


def _count():
    j = 0
    while True:
        yield j
        j += 1


def _nearest_with_target(frames, targets):
    """Like :func:`_nearest` but each step takes its target time (the resampled time line)."""
    targets = iter(targets)

    def tracked():
        for t in targets:
            tracked.current = t
            yield t

    tracked.current = math.nan
    for (_, img) in _nearest(frames, tracked(), False):
        yield tracked.current, img


# ---------------------------------------------------------------------------------------------------


def write_synthetic_video(path: str | os.PathLike, num_frames: int, *, fps: int | Fraction = 25,
                          size: tuple[int, int] = (64, 48), codec: str = "ffv1",
                          start_frames: int = 0, start_time: Fraction | None = None) -> Path:
    """Write a test video whose frame i is uniform-coloured with red = i % 256, green = i // 256 % 256.

    ``codec`` ``ffv1`` (in .mkv/.avi) is lossless, so a decoder's frames can be identified exactly;
    ``mpeg4``/``libx264`` give realistic lossy files for benchmarks (then the colours are only close).
    ``fps`` may be a fraction (``Fraction(30000, 1001)``, NTSC's 29.97).
    ``start_frames`` shifts the first presentation time to ``start_frames / fps`` (a start offset);
    ``start_time`` (seconds, exclusive with it) to any time, such as the 0.54 s of ``cityCC0.mpg``: the
    stream then counts in 1/90,000 s, which AVI cannot store (its time base is the frame period).
    The file is written under a temporary name and renamed into place.
    """
    import av

    if start_time is not None and start_frames:
        raise ValueError("give start_frames or start_time, not both")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    w, h = size
    rate = Fraction(fps)
    tb = 1 / rate if start_time is None else Fraction(1, 90_000)
    first = start_frames / rate if start_time is None else Fraction(start_time)
    container = av.open(str(tmp), "w")
    try:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "bgr0" if codec == "ffv1" else "yuv420p"
        stream.time_base = tb
        img = np.zeros((h, w, 3), np.uint8)
        # A moving gradient in blue keeps lossy encoders honest about motion.
        ramp = (np.arange(w, dtype=np.int64)[None, :] + np.arange(h, dtype=np.int64)[:, None])
        for i in range(num_frames):
            img[..., 0] = i % 256
            img[..., 1] = (i // 256) % 256
            img[..., 2] = ((ramp + 4 * i) % 256).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts, frame.time_base = round((first + i / rate) / tb), tb
            for pkt in stream.encode(frame):
                container.mux(pkt)
        for pkt in stream.encode():
            container.mux(pkt)
    finally:
        container.close()
    os.replace(tmp, path)
    return path
