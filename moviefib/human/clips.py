"""Browser-playable clips: each source video is transcoded once with PyAV to a muted WebM/VP9 file.

Browsers cannot play the AVI files of LSMDC, so the page gets a WebM (VP9, no audio track: a muted
clip may autoplay) at most :data:`MAX_HEIGHT` pixels high, cached under a name derived from the
source's path, size and modification time (an edited source is transcoded again).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from fractions import Fraction
from pathlib import Path

from ..fileio import atomic_output
from ..formats import ClipId

log = logging.getLogger(__name__)

MAX_HEIGHT = 360
# Bumped when the encoding settings change, so that old cache entries are not served.
_ENCODING_VERSION = "vp9-1"
_VIDEO_EXTENSIONS = (".avi", ".mp4", ".webm", ".mkv", ".mov", ".mpg")


class ClipError(RuntimeError):
    """A clip that is missing or cannot be decoded (names the clip and the file)."""


def clip_source(clip_id: str, video_root: str | os.PathLike) -> Path:
    """The source video of a clip.

    An LSMDC clip id maps to ``<video_root>/<movie>/<clip_id>.avi``; any other id (a generic corpus)
    to the first existing ``<video_root>/<clip_id>.<ext>`` among common video extensions.
    """
    try:
        return ClipId.parse(clip_id).video_path(video_root)
    except ValueError:
        pass
    root = Path(video_root)
    for ext in _VIDEO_EXTENSIONS:
        p = root / f"{clip_id}{ext}"
        if p.is_file():
            return p
    return root / f"{clip_id}{_VIDEO_EXTENSIONS[0]}"


def transcode(src: str | os.PathLike, dst: str | os.PathLike, *, max_height: int = MAX_HEIGHT) -> int:
    """Transcode the first video stream of ``src`` to a muted WebM/VP9 file ``dst`` (atomically).

    Returns the number of frames written. Raises :class:`ClipError` when ``src`` cannot be decoded or
    holds no frame.
    """
    import av

    src, dst = Path(src), Path(dst)
    try:
        with atomic_output(dst, suffix=".webm") as tmp, av.open(str(src)) as inp, \
                av.open(str(tmp), "w", format="webm") as out:
            return _encode_vp9(inp, out, src, max_height)
    except ClipError:
        raise
    except Exception as exc:
        raise ClipError(f"{src}: cannot transcode: {exc}") from exc


def _encode_vp9(inp, out, src: Path, max_height: int) -> int:
    """Encode the first video stream of the open container ``inp`` into ``out``; the frame count."""
    if not inp.streams.video:
        raise ClipError(f"{src}: no video stream")
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
        raise ClipError(f"{src}: no decodable video frame")
    out.mux(vout.encode(None))
    return frames


class ClipCache:
    """Transcodes clips on demand or ahead of time, each clip once.

    A lock per clip (not one for all): a request for the clip on screen must never wait behind the
    prefetch of another one.
    """

    def __init__(self, video_root: str | os.PathLike, cache_dir: str | os.PathLike):
        self.video_root = Path(video_root)
        self.cache_dir = Path(cache_dir)
        self._locks: dict[Path, threading.Lock] = {}
        self._pending: set[str] = set()
        self._meta = threading.Lock()  # guards the two above

    def source(self, clip_id: str) -> Path:
        return clip_source(clip_id, self.video_root)

    def cache_path(self, clip_id: str) -> Path:
        """Where the clip's WebM is (or will be) cached; :class:`ClipError` when it has no source."""
        src = self.source(clip_id)
        if not src.is_file():
            raise ClipError(f"clip {clip_id}: no video file {src}")
        st = src.stat()
        key = f"{src.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\0{_ENCODING_VERSION}"
        return self.cache_dir / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.webm"

    def get(self, clip_id: str) -> Path:
        """The WebM file of a clip, transcoding it first when it is not cached."""
        src = self.source(clip_id)
        dst = self.cache_path(clip_id)
        if dst.is_file():
            return dst
        with self._meta:
            lock = self._locks.setdefault(dst, threading.Lock())
        with lock:
            if not dst.is_file():  # another request may have made it while this one waited
                try:
                    n = transcode(src, dst)
                except OSError as exc:
                    raise ClipError(f"clip {clip_id}: cannot write to the cache {self.cache_dir}: "
                                    f"{exc.strerror or exc}") from exc
                log.info("transcoded clip %s (%d frames) -> %s", clip_id, n, dst)
        return dst

    def prefetch(self, clip_id: str) -> None:
        """Transcode a clip in the background (the next question's), so that it plays without delay."""
        with self._meta:
            if clip_id in self._pending:
                return
            self._pending.add(clip_id)

        def work() -> None:
            try:
                self.get(clip_id)
            except ClipError as exc:
                log.error("%s", exc)  # the page will get the same error when it asks for the clip
            finally:
                with self._meta:
                    self._pending.discard(clip_id)

        threading.Thread(target=work, name=f"prefetch {clip_id}", daemon=True).start()
