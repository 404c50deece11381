"""TensorFlow-style 'SAME' padding, shared by the ports of TensorFlow models (I3D, EfficientNet-Lite)."""

from __future__ import annotations

import math


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Padding (before, after) of TF 'SAME': output ceil(size/stride), the odd pixel goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def is_symmetric(kernel, stride) -> bool:
    """Whether 'SAME' pads both sides alike whatever the input size (stride 1, odd kernel): then a
    layer's own padding does it without the copy ``F.pad`` makes."""
    return all(s == 1 and k % 2 == 1 for k, s in zip(kernel, stride))


def pad_same(x, kernel, stride, value: float = 0.0):
    """Pad the spatial (and temporal) dims of ``x`` [B, C, ...] the way TF 'SAME' does."""
    import torch.nn.functional as F

    pads: list[int] = []
    for size, k, s in zip(reversed(x.shape[2:]), reversed(tuple(kernel)), reversed(tuple(stride))):
        pads.extend(same_padding(size, k, s))
    if not any(pads):
        return x
    return F.pad(x, pads, value=value)
