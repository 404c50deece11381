"""The frames of a question's clip as a model sees them: sampled by time, scaled, JPEG data URLs.

Frames come from :func:`moviefib.video.sample` with :class:`~moviefib.video.Uniform` (N frames, those
nearest the centres of N equal slices of the clip: a clip file decoded whole, or a movie cut at the
question's extracted start/end), the project's sampler, so the frames a model saw can be reproduced
from the settings file. Each is scaled down (aspect kept, bicubic) so that its longer side is at most
``max_side`` pixels (never scaled up), encoded as a baseline JPEG of ``quality`` and given as a
``data:image/jpeg;base64,...`` URL, which every OpenAI-compatible server accepts for ``image_url``.

Needs the ``vlm`` extra (``av`` and ``pillow``).
"""

from __future__ import annotations

import base64
import io
from dataclasses import dataclass

import numpy as np

from ..video import DecodedSpan, Segment, Uniform, sample, sampling_to_dict

MAX_FRAMES = 256
MIN_SIDE, MAX_SIDE = 16, 4096


@dataclass(frozen=True)
class FrameSpec:
    """How frames are sampled and encoded.

    Attributes:
        n: frames per question (uniform in time over the clip).
        max_side: the longer side of a frame at most, in pixels (larger frames are scaled down).
        quality: JPEG quality, 1-95 (above 95 Pillow's quantisation only grows the files).
        backend: the decoder (``pyav`` or ``torchcodec``).
    """

    n: int = 8
    max_side: int = 512
    quality: int = 85
    backend: str = "pyav"

    def __post_init__(self):
        if not 1 <= self.n <= MAX_FRAMES:
            raise ValueError(f"frames per question must be 1 to {MAX_FRAMES}, not {self.n}")
        if not MIN_SIDE <= self.max_side <= MAX_SIDE:
            raise ValueError(f"frame size must be {MIN_SIDE} to {MAX_SIDE} pixels, not {self.max_side}")
        if not 1 <= self.quality <= 95:
            raise ValueError(f"JPEG quality must be 1 to 95, not {self.quality}")

    @property
    def sampling(self) -> Uniform:
        return Uniform(self.n)

    def to_dict(self) -> dict:
        return {"n": self.n, "max_side": self.max_side, "quality": self.quality, "decoder": self.backend,
                "sampling": sampling_to_dict(self.sampling), "format": "JPEG data URL"}


@dataclass(frozen=True)
class ClipFrames:
    """The encoded frames of one clip.

    Attributes:
        urls: ``data:image/jpeg;base64,...`` URLs, in time order.
        times: each frame's time, seconds from the clip start.
        size: (width, height) of the encoded frames.
    """

    urls: tuple[str, ...]
    times: tuple[float, ...]
    size: tuple[int, int]


def clip_frames(path: str, spec: FrameSpec, *, segment: Segment | None = None,
                span: DecodedSpan | None = None) -> ClipFrames:
    """Sample and encode the frames of the clip at ``path`` (cut at ``segment`` when given).

    ``span`` is filled in with what was decoded (the clip is then decoded to its end), for the length
    check. Raises :class:`~moviefib.video.VideoError` (naming the file) when it cannot be decoded.
    """
    urls, times, size = [], [], (0, 0)
    for step, frames in sample(path, spec.sampling, segment=segment, backend=spec.backend, span=span):
        url, size = jpeg_data_url(frames[0], max_side=spec.max_side, quality=spec.quality)
        urls.append(url)
        times.append(round(step.time, 3))
    return ClipFrames(tuple(urls), tuple(times), size)


def scaled_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most ``max_side``, aspect kept (never scaled up)."""
    longer = max(width, height)
    if longer <= max_side:
        return width, height
    scale = max_side / longer
    return max(1, round(width * scale)), max(1, round(height * scale))


def jpeg_data_url(img: np.ndarray, *, max_side: int, quality: int) -> tuple[str, tuple[int, int]]:
    """An RGB uint8 ``[H, W, 3]`` frame as a JPEG data URL, and the size it was encoded at."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img), "RGB")
    size = scaled_size(im.width, im.height, max_side)
    if size != (im.width, im.height):
        im = im.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), size
