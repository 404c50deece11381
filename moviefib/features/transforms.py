"""Picklable preprocessing of decoded frames for the extractors (resize, centre crop, normalise).

Decoders give uint8 RGB frames ``[T, H, W, 3]``. Resizing runs on uint8 in the channels-last layout the
frames already have, which torch handles with its fast uint8 kernels (about 1 ms per 720p frame on one
core, against 2-4 ms for float or contiguous NCHW input), and the crop comes before the conversion to
float so that only the kept pixels are converted.

The work is split in two halves so that the extraction pipeline can run them in different places:
:meth:`FramePreprocess.resize_crop` (uint8 in, uint8 out, in the model's layout and channel order) runs in
the decode workers, and :meth:`FramePreprocess.normalise` (uint8 to float, normalised) runs wherever its
input is, e.g. on the GPU after a uint8 transfer, which moves a quarter of the bytes of float32.
Calling the object runs both halves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

_INTERPOLATIONS = ("bilinear", "bicubic")
_CHANNEL_ORDERS = ("rgb", "bgr")
# Position of the channel axis, counted from the end, for one step or a batch of steps:
# 2d [T|B, 3, h, w] -> -3; 3d [(B,) 3, T, h, w] -> -4.
_CHANNEL_AXIS = {"2d": -3, "3d": -4}


@dataclass(frozen=True)
class FramePreprocess:
    """Resize, centre-crop and normalise frames; a frozen dataclass so DataLoader workers can pickle it.

    Fields:
        layout: ``"2d"`` gives ``[T, 3, crop_h, crop_w]`` (one image per frame), ``"3d"`` gives
            ``[3, T, crop_h, crop_w]`` (one window).
        resize: an int resizes the short side to it (aspect kept); ``(h, w)`` resizes to exactly that.
        crop: centre crop size, an int (square) or ``(h, w)``.
        mean, std: per-channel normalisation, in the model's channel order (``channel_order``), applied
            after multiplying by ``scale``: ``(x * scale - mean) / std``.
        scale: ``1/255`` for models fed [0, 1] pixels, ``1.0`` for models fed 0-255 pixels (C3D).
        interpolation: ``"bilinear"`` or ``"bicubic"`` (antialiased, like PIL).
        channel_order: ``"rgb"`` (the decoders' order) or ``"bgr"`` for models trained on OpenCV-decoded
            frames (Caffe's C3D).
    """

    layout: Literal["2d", "3d"]
    resize: int | tuple[int, int]
    crop: int | tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale: float = 1 / 255
    interpolation: str = "bilinear"
    channel_order: Literal["rgb", "bgr"] = "rgb"

    def __post_init__(self):
        if self.layout not in ("2d", "3d"):
            raise ValueError(f"layout must be '2d' or '3d', not {self.layout!r}")
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {_INTERPOLATIONS}, not {self.interpolation!r}")
        if self.channel_order not in _CHANNEL_ORDERS:
            raise ValueError(f"channel_order must be one of {_CHANNEL_ORDERS}, not {self.channel_order!r}")

    @property
    def crop_size(self) -> tuple[int, int]:
        return (self.crop, self.crop) if isinstance(self.crop, int) else tuple(self.crop)

    def describe(self) -> dict:
        """The settings, for an extractor's provenance."""
        resize = (f"short side {self.resize}" if isinstance(self.resize, int)
                  else f"{self.resize[0]}x{self.resize[1]}")
        crop_h, crop_w = self.crop_size
        out = {"resize": f"{resize} ({self.interpolation}, antialias)",
               "crop": f"centre {crop_h}x{crop_w}",
               "normalisation": {"scale": self.scale, "mean": list(self.mean), "std": list(self.std)}}
        if self.channel_order != "rgb":  # left out for RGB so that existing stores keep their provenance
            out["channel_order"] = self.channel_order
        return out

    def resize_crop(self, frames):
        """The worker half: uint8 RGB frames ``[T, H, W, 3]`` -> uint8 ``[T, 3, h, w]`` (2d) or
        ``[3, T, h, w]`` (3d), resized, centre-cropped, in ``channel_order``, contiguous."""
        import torch
        from torchvision.transforms.v2 import functional as F

        if not isinstance(frames, torch.Tensor) or frames.dtype != torch.uint8 or frames.ndim != 4 \
                or frames.shape[-1] != 3:
            shape = tuple(frames.shape) if hasattr(frames, "shape") else type(frames).__name__
            dtype = getattr(frames, "dtype", None)
            raise ValueError(f"expected uint8 RGB frames [T, H, W, 3], got {shape} {dtype}")
        if frames.shape[0] == 0:
            raise ValueError("no frames to preprocess")
        x = frames.permute(0, 3, 1, 2)  # a channels-last view: no copy
        mode = (F.InterpolationMode.BICUBIC if self.interpolation == "bicubic"
                else F.InterpolationMode.BILINEAR)
        size = [self.resize] if isinstance(self.resize, int) else list(self.resize)
        x = F.resize(x, size, interpolation=mode, antialias=True)
        x = F.center_crop(x, list(self.crop_size))
        if self.channel_order == "bgr":
            x = x.flip(1)
        if self.layout == "3d":
            x = x.permute(1, 0, 2, 3)
        return x.contiguous()

    def normalise(self, x):
        """The device half: uint8 output of :meth:`resize_crop` (one step, or a batch of steps stacked
        on a new first axis) -> float32 ``(x * scale - mean) / std`` on ``x``'s device."""
        import torch

        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8:
            raise ValueError(f"normalise takes the uint8 output of resize_crop, got "
                             f"{getattr(x, 'dtype', type(x).__name__)}")
        axis = _CHANNEL_AXIS[self.layout]
        if x.ndim < -axis or x.shape[axis] != 3:
            raise ValueError(f"expected 3 channels at axis {axis} of a {self.layout} step, got shape "
                             f"{tuple(x.shape)}")
        shape = [1] * x.ndim
        shape[axis] = 3
        mean = torch.tensor(self.mean, dtype=torch.float32, device=x.device).view(shape)
        inv_std = 1.0 / torch.tensor(self.std, dtype=torch.float32, device=x.device).view(shape)
        return (x.to(torch.float32) * self.scale - mean) * inv_std

    def __call__(self, frames):
        return self.normalise(self.resize_crop(frames))
