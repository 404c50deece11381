"""The five baselines of the MovieFIB paper (text only; text + 2D; text + 3D; text + 2D + 3D with late
and with early fusion).

Head, as in the paper: ``dropout(0.5)`` over the concatenated encodings, then one linear layer over
the answer vocabulary. With ``standardise_video`` (not in the paper; on by default in the demo) the
video features are standardised per dimension with training-set statistics, kept in the model's
buffers so a checkpoint carries them. Batches are the dicts built by :class:`moviefib.data.Collator`:
``left``, ``left_len``, ``right``, ``right_len`` (word ids; ``right`` reversed) and, for the vision
models, ``video [B, S, D]`` and ``video_len`` (the streams' steps concatenated per step, ``streams``
order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..training.rules import FLAG, NUMBER, PROBABILITY, SIZE, setting
from .lstm import TextEncoder, VideoEncoder
from .registry import ModelSettings, register_model
from .standardise import VideoStatistics
from .streams import drop_streams


@dataclass(frozen=True)
class BaselineSettings(ModelSettings):
    """The settings of the five paper baselines (paper values: embedding 512, hidden 320, dropout 0.5).

    Attributes:
        emb_dim: word embedding size. hidden: LSTM state size (each LSTM).
        dropout: dropout on the head's input.
        batch_norm: recurrent batch normalisation (Cooijmans et al.), as the original code; slower.
        bn_gamma: its initial gain.
        emb_dropout: dropout on the word embeddings. video_dropout: on the video features.
        standardise_video: standardise the video features with training-set statistics (not in the paper).
        stream_dropout: probability of zeroing a whole stream of a training sample (not in the paper).
        zoneout_cell, zoneout_hidden: zoneout (Krueger et al. 2016) of every LSTM's cell and hidden
            state: the probability that a unit keeps its previous value at a training step (not in the
            paper; 0: none, and plain mode keeps the fused LSTM).
    """

    emb_dim: int = setting(512, SIZE)
    hidden: int = setting(320, SIZE)
    dropout: float = setting(0.5, PROBABILITY)
    batch_norm: bool = setting(False, FLAG)
    bn_gamma: float = setting(0.1, NUMBER)
    emb_dropout: float = setting(0.0, PROBABILITY)
    video_dropout: float = setting(0.0, PROBABILITY)
    standardise_video: bool = setting(False, FLAG)
    stream_dropout: float = setting(0.0, PROBABILITY)
    zoneout_cell: float = setting(0.0, PROBABILITY)
    zoneout_hidden: float = setting(0.0, PROBABILITY)


class _Baseline(VideoStatistics, nn.Module):
    streams: tuple[str, ...] = ()
    early_fusion = False

    def __init__(self, *, n_answers: int, vocab_size: int, video_dims: dict[str, int] | None = None,
                 settings: BaselineSettings = BaselineSettings()):
        super().__init__()
        s = settings
        self.standardise_video = bool(s.standardise_video)
        if not 0.0 <= s.stream_dropout < 1.0:
            raise ValueError(f"stream_dropout must be in [0, 1), got {s.stream_dropout}")
        self.stream_dropout = float(s.stream_dropout)
        self.text = TextEncoder(vocab_size, emb_dim=s.emb_dim, hidden=s.hidden, batch_norm=s.batch_norm,
                                bn_gamma=s.bn_gamma, emb_dropout=s.emb_dropout, zoneout_cell=s.zoneout_cell,
                                zoneout_hidden=s.zoneout_hidden)
        head_in = self.text.out_dim
        self.video = None
        if self.streams:
            head_in = self._add_video_path(video_dims or {}, s, head_in)
        self.dropout = nn.Dropout(s.dropout)
        self.classifier = nn.Linear(head_in, n_answers)

    def _add_video_path(self, video_dims: dict[str, int], s: BaselineSettings, head_in: int) -> int:
        """Add the video LSTM over the streams' steps concatenated; returns the head's input size.
        (Modules are added in the order of earlier releases: their optimizer states list them so.)"""
        missing = [name for name in self.streams if name not in video_dims]
        if missing:
            raise ValueError(f"{self.model_name} needs the feature size of stream(s) {', '.join(missing)}")
        self._stream_dims = [video_dims[name] for name in self.streams]
        dim = sum(self._stream_dims)
        if self.standardise_video:
            self.register_buffer("video_mean", torch.zeros(dim))
            self.register_buffer("video_std", torch.ones(dim))
        self.video = VideoEncoder(dim, hidden=s.hidden, batch_norm=s.batch_norm, bn_gamma=s.bn_gamma,
                                  input_dropout=s.video_dropout, zoneout_cell=s.zoneout_cell,
                                  zoneout_hidden=s.zoneout_hidden)
        if not self.early_fusion:
            return head_in + self.video.out_dim
        # The question encoding becomes the video LSTM's initial (h, c).
        self.init_state = nn.Linear(self.text.out_dim, 2 * s.hidden)
        return self.video.out_dim

    @property
    def standardises_video(self) -> bool:
        """Whether the model standardises video features (and so needs :meth:`set_video_statistics`)."""
        return self.standardise_video and self.video is not None

    def forward(self, batch: dict) -> torch.Tensor:
        q = self.text(batch["left"], batch["left_len"], batch["right"], batch["right_len"])
        if self.video is None:
            return self.classifier(self.dropout(q))
        video = batch["video"]
        if self.standardise_video:
            video = (video - self.video_mean) / self.video_std
        if self.training and self.stream_dropout > 0 and len(self.streams) > 1:
            video = drop_streams(video, self._stream_dims, self.stream_dropout)
        if self.early_fusion:
            h0, c0 = torch.tanh(self.init_state(q)).chunk(2, dim=1)
            enc = self.video(video, batch["video_len"], (h0, c0))
        else:
            enc = torch.cat([q, self.video(video, batch["video_len"])], dim=1)
        return self.classifier(self.dropout(enc))


@register_model("text_only", settings=BaselineSettings)
class TextOnly(_Baseline):
    """Question LSTMs only."""


@register_model("text_2d", settings=BaselineSettings)
class Text2D(_Baseline):
    """Question + an LSTM over 2D (frame) features."""

    streams = ("2d",)


@register_model("text_3d", settings=BaselineSettings)
class Text3D(_Baseline):
    """Question + an LSTM over 3D (clip) features."""

    streams = ("3d",)


@register_model("text_2d3d", settings=BaselineSettings)
class Text2D3D(_Baseline):
    """Late fusion: one video LSTM over 2D and 3D steps concatenated, its state joined to the question's."""

    streams = ("2d", "3d")


@register_model("text_2d3d_early", settings=BaselineSettings)
class Text2D3DEarly(_Baseline):
    """Early fusion: the video LSTM starts from the question encoding; its final state alone feeds the head."""

    streams = ("2d", "3d")
    early_fusion = True
