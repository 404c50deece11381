"""Whole feature streams dropped from training samples (``stream_dropout``), shared by the models that
read several streams (2D and 3D) concatenated per step."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def drop_streams(video: torch.Tensor, stream_dims: Sequence[int], p: float) -> torch.Tensor:
    """``video`` ``[B, T, D]`` (streams of ``stream_dims`` sizes concatenated along D) with each stream of a
    sample zeroed (its training mean, when standardised) with probability ``p``, never all streams of one
    sample. With 2D and 3D features concatenated a model otherwise leans on whichever stream fits the
    training set first (measured on the demo: the 2D+3D LSTM answered motion questions worse than the
    3D-only one)."""
    keep = torch.rand(video.shape[0], len(stream_dims), device=video.device) >= p
    none = ~keep.any(1)
    if none.any():
        keep[none, torch.randint(len(stream_dims), (int(none.sum()),), device=video.device)] = True
    sizes = torch.tensor(list(stream_dims), device=video.device)
    mask = torch.repeat_interleave(keep, sizes, dim=1).to(video.dtype)  # [B, D]
    return video * mask.unsqueeze(1)
