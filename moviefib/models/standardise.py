"""Per-dimension standardisation of video features with training-set statistics, shared by the models
that offer it (``standardise_video``): the statistics live in the model's ``video_mean`` / ``video_std``
buffers, so a checkpoint carries them."""

from __future__ import annotations

import torch


class VideoStatistics:
    """Mixin of a model with a ``standardises_video`` property and, when it is true, ``video_mean`` and
    ``video_std`` buffers of the video feature size."""

    def set_video_statistics(self, mean, std, *, floor: float = 1e-2) -> None:
        """Per-dimension mean and standard deviation used by ``standardise_video``; a spread below
        ``floor`` (a dimension that barely varies in training) is raised to it, so it cannot blow up."""
        if not self.standardises_video:
            raise ValueError(f"{self.model_name} does not standardise video features")
        mean = torch.as_tensor(mean, dtype=torch.float32)
        std = torch.as_tensor(std, dtype=torch.float32).clamp_min(floor)
        if mean.shape != self.video_mean.shape or std.shape != self.video_std.shape:
            raise ValueError(f"video statistics of size {tuple(mean.shape)}, the model reads "
                             f"{tuple(self.video_mean.shape)}")
        self.video_mean.copy_(mean)
        self.video_std.copy_(std)
