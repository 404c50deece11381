"""Browser-playable clips: each source video is transcoded once with PyAV to a muted WebM/VP9 file.

Browsers cannot play the AVI files of LSMDC, so the page gets a WebM (VP9, no audio track: a muted
clip may autoplay) at most :data:`MAX_HEIGHT` pixels high, cached under a name derived from the
source's path, size and modification time (an edited source is transcoded again).

Only whole clips are served: the length decoded while transcoding is judged against the clip's expected
length (the dataset's extracted start/end, else its LSMDC clip id) by
:func:`moviefib.integrity.judge_length`, the rule extraction applies. A clip clearly short, a still
image under a video name, or a file that does not decode is refused (:class:`ClipRefused`) and never
cached. Clip ids never lead outside the video root.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..fileio import PathEscapeError, atomic_output, contained_path
from ..formats import ClipId, id_problem
from ..integrity import DurationTolerance, LengthVerdict, judge_length
from ..video import VideoError, header_duration, probe

log = logging.getLogger(__name__)

MAX_HEIGHT = 360
# Bumped when the encoding settings change, so that old cache entries are not served ("vp9-2": entries
# from before the duration check may hold partial clips).
_ENCODING_VERSION = "vp9-2"
_VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".mpg")


class ClipError(RuntimeError):
    """A clip that cannot be served (names the clip and the file)."""


class ClipRefused(ClipError):
    """The clip's file is missing, does not decode, is a still image or is clearly short: its question
    cannot be asked in video mode."""


class ClipCacheError(ClipError):
    """The clip cache cannot be written (a problem of this machine, not of the clip)."""


def clip_source(clip_id: str, video_root: str | os.PathLike) -> Path:
    """The source video of a clip.

    An LSMDC clip id maps to ``<video_root>/<movie>/<clip_id>.avi``; any other id (a generic corpus)
    to the first existing ``<video_root>/<clip_id>.<ext>`` among common video extensions. An id that
    would lead outside ``video_root`` (``..``, an absolute path, NUL) raises :class:`ClipRefused`.
    """
    problem = id_problem(clip_id, allow_slash=True) if isinstance(clip_id, str) else "clip id is not text"
    if problem:
        raise ClipRefused(f"clip {clip_id!r}: {problem}")
    try:
        movie = ClipId.parse(clip_id).movie
    except ValueError:
        movie = None
    try:
        if movie is not None:
            return contained_path(video_root, f"{movie}/{clip_id}.avi")
        candidates = [contained_path(video_root, f"{clip_id}{ext}") for ext in _VIDEO_EXTENSIONS]
    except PathEscapeError as exc:
        raise ClipRefused(f"clip {clip_id!r}: {exc}") from None
    return next((p for p in candidates if p.is_file()), candidates[0])


def expected_seconds(clip_id: str, clip_seconds: float | None) -> tuple[float | None, str | None]:
    """A clip's expected length and where it comes from: the dataset's times, else its LSMDC clip id."""
    if clip_seconds is not None:
        return clip_seconds, "dataset's extracted start/end"
    try:
        parsed = ClipId.parse(clip_id)
    except ValueError:
        return None, None  # a generic corpus without times: nothing to compare with
    return parsed.end - parsed.start, "clip id"


@dataclass(frozen=True)
class Transcoded:
    """A clip written to the cache.

    Attributes:
        frames: frames written.
        check: the verdict on its decoded length (``ok`` or ``warn``; ``short`` is never written).
    """

    frames: int
    check: LengthVerdict


def transcode(src: str | os.PathLike, dst: str | os.PathLike, *, expected: float | None = None,
              source: str | None = None, tolerance: DurationTolerance = DurationTolerance(),
              max_height: int = MAX_HEIGHT) -> Transcoded:
    """Transcode the first video stream of ``src`` to a muted WebM/VP9 file ``dst`` (atomically).

    ``expected`` (seconds, from ``source``) is the length the clip should have. Raises
    :class:`ClipRefused` when ``src`` cannot be decoded, is a still image or decodes clearly shorter
    than ``expected``; ``dst`` is then left untouched. Errors writing ``dst`` are ``OSError``.
    """
    import av

    src, dst = Path(src), Path(dst)
    try:
        header = header_duration(probe(src))  # also refuses a still image, as extraction does
    except VideoError as exc:
        raise ClipRefused(str(exc)) from None
    try:
        with atomic_output(dst, suffix=".webm") as tmp, av.open(str(src)) as inp, \
                av.open(str(tmp), "w", format="webm") as out:
            frames, seconds = _encode_vp9(inp, out, src, max_height)
            # Extraction's own rule: the expected length, else a cut container's header.
            check = judge_length(src, seconds, expected=expected, source=source, header=header,
                                 whole_file=True, tolerance=tolerance)
            if check.status == "short":
                raise ClipRefused(check.reason)  # leaving the block drops the temp file
    except av.FFmpegError as exc:
        raise ClipRefused(f"{src}: cannot transcode: {exc}") from exc
    return Transcoded(frames, check)


def _encode_vp9(inp, out, src: Path, max_height: int) -> tuple[int, float]:
    """Encode the first video stream of the open container ``inp`` into ``out``.

    Returns the frame count and the seconds they last at the stream's rate, which is how long the
    WebM written plays (its time stamps are frame indices at that rate).
    """
    if not inp.streams.video:
        raise ClipRefused(f"{src}: no video stream")
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    rate = vin.average_rate or vin.guessed_rate or Fraction(25)
    vout = None
    frames = 0
    for frame in inp.decode(vin):
        if vout is None:
            h = min(max_height, frame.height)
            w = round(frame.width * h / frame.height)
            # 4:2:0 chroma needs even sizes.
            w, h = max(2, w - w % 2), max(2, h - h % 2)
            vout = out.add_stream("libvpx-vp9", rate=rate)
            vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
            # Real-time speed settings: a clip must be ready about as fast as it plays.
            vout.options = {"deadline": "realtime", "cpu-used": "8", "crf": "33", "b": "0", "row-mt": "1"}
            vout.codec_context.time_base = 1 / Fraction(rate)
        img = frame.reformat(width=vout.width, height=vout.height, format="yuv420p")
        # Frame index as time stamp: AVI time stamps are often missing or irregular.
        img.pts, img.time_base = frames, vout.codec_context.time_base
        out.mux(vout.encode(img))
        frames += 1
    if vout is None:
        raise ClipRefused(f"{src}: no decodable video frame")
    if frames < 2:
        raise ClipRefused(f"{src}: a single frame, not a clip")
    out.mux(vout.encode(None))
    return frames, float(frames / Fraction(rate))


class ClipCache:
    """Transcodes clips on demand or ahead of time, each clip once.

    A lock per clip (not one for all): a request for the clip on screen must never wait behind the
    prefetch of another one. A refused clip is remembered (per version of its file), not retried on
    every request.
    """

    def __init__(self, video_root: str | os.PathLike, cache_dir: str | os.PathLike, *,
                 tolerance: DurationTolerance = DurationTolerance()):
        self.video_root = Path(video_root)
        self.cache_dir = Path(cache_dir)
        self.tolerance = tolerance
        self._locks: dict[Path, threading.Lock] = {}
        self._refused: dict[Path, ClipRefused] = {}
        self._pending: set[str] = set()
        self._meta = threading.Lock()  # guards the three above

    def source(self, clip_id: str) -> Path:
        return clip_source(clip_id, self.video_root)

    def cache_path(self, clip_id: str) -> Path:
        """Where the clip's WebM is (or will be) cached; :class:`ClipRefused` when it has no source."""
        src = self.source(clip_id)
        if not src.is_file():
            raise ClipRefused(f"clip {clip_id}: no video file {src}")
        st = src.stat()
        key = f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{_ENCODING_VERSION}"
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.webm"

    def get(self, clip_id: str, *, clip_seconds: float | None = None) -> Path:
        """The WebM file of a whole clip, transcoding it first when it is not cached.

        ``clip_seconds`` is the length the dataset gives the clip (None: take it from an LSMDC clip id).
        Raises :class:`ClipRefused` for a clip that cannot be served, :class:`ClipCacheError` when the
        cache cannot be written.
        """
        src = self.source(clip_id)
        dst = self.cache_path(clip_id)
        if dst.is_file():
            return dst
        with self._meta:
            lock = self._locks.setdefault(dst, threading.Lock())
        with lock:
            # Another request may have made (or refused) it while this one waited.
            if not dst.is_file():
                self._transcode(clip_id, src, dst, clip_seconds)
        return dst

    def _transcode(self, clip_id: str, src: Path, dst: Path, clip_seconds: float | None) -> None:
        with self._meta:
            refused = self._refused.get(dst)
        if refused is not None:
            raise refused
        expected, source = expected_seconds(clip_id, clip_seconds)
        try:
            done = transcode(src, dst, expected=expected, source=source, tolerance=self.tolerance)
        except ClipRefused as exc:
            refused = ClipRefused(f"clip {clip_id}: {exc}")
            with self._meta:
                self._refused[dst] = refused
            raise refused from None
        except OSError as exc:
            raise ClipCacheError(f"clip {clip_id}: cannot write to the cache {self.cache_dir}: "
                                 f"{exc.strerror or exc}") from exc
        if done.check.status == "warn":
            log.warning("clip %s: %s; served", clip_id, done.check.reason)
        log.debug("transcoded clip %s (%d frames) -> %s", clip_id, done.frames, dst)

    def prefetch(self, clip_id: str, *, clip_seconds: float | None = None) -> None:
        """Transcode a clip in the background (the next question's), so that it plays without delay."""
        with self._meta:
            if clip_id in self._pending:
                return
            self._pending.add(clip_id)

        def work() -> None:
            try:
                self.get(clip_id, clip_seconds=clip_seconds)
            except ClipError as exc:
                log.error("%s", exc)  # the page will get the same error when it asks for the clip
            finally:
                with self._meta:
                    self._pending.discard(clip_id)

        threading.Thread(target=work, name=f"prefetch {clip_id}", daemon=True).start()


def prepare_clips(cache: ClipCache, clips: dict[str, float | None], *,
                  progress: Callable[[], None] | None = None) -> dict[str, ClipRefused]:
    """Transcode ahead of time every clip of ``clips`` (clip id -> the dataset's length, or None).

    Returns the refusals by clip id, in order; ``progress`` is called after each clip. A cache that
    cannot be written stops at once (:class:`ClipCacheError`): every later clip would fail the same way.
    """
    refused = {}
    for clip_id, seconds in clips.items():
        try:
            cache.get(clip_id, clip_seconds=seconds)
        except ClipRefused as exc:
            refused[clip_id] = exc
        if progress is not None:
            progress()
    return refused
