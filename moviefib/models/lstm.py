"""The recurrent encoders of the MovieFIB baselines (paper settings: embedding 512, hidden 320).

* :class:`SeqLSTM`: one LSTM layer over padded sequences returning each sequence's final state.
  Plain mode runs ``nn.LSTM`` on packed sequences (cuDNN on GPU); ``batch_norm=True`` runs the
  recurrent batch normalisation of Cooijmans et al. (2017), as the original MovieFIB code did: the
  input-to-hidden and hidden-to-hidden products and the cell are normalised with statistics kept per
  time step, gamma initialised to 0.1. It is a Python loop over time steps, hence much slower.
* Zoneout (Krueger et al. 2016, ``zoneout_cell`` / ``zoneout_hidden``): while training, each unit of
  the cell (hidden) state keeps its previous value with that probability, drawn per unit and step; at
  evaluation it takes the expectation, ``p * previous + (1 - p) * new``. cuDNN's fused LSTM cannot do
  it, so plain mode runs the same Python loop over time steps (with ``nn.LSTM``'s weights) when either
  is above 0; at 0 both modes are exactly what they were without it.
* :class:`TextEncoder`: the words before the blank, read forwards, and the words after it, read
  backwards from the end of the sentence, each by its own LSTM; the two final states concatenated.
* :class:`VideoEncoder`: an LSTM over at most ``max_steps`` feature vectors, optionally started from a
  given state (early fusion).

The forget-gate bias is initialised to 1 in both modes.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

# Time steps with their own batch-norm statistics; later steps reuse the last ones.
BN_MAX_STEPS = 64
# Fewest valid rows for which a step is normalised with its batch statistics (see MaskedStepBatchNorm).
BN_MIN_ROWS = 8


class MaskedStepBatchNorm(nn.Module):
    """Batch normalisation with one set of running statistics per time step, ignoring padded rows.

    The affine parameters are shared over time (as in recurrent batch normalisation); padded rows
    (``mask == 0``) take no part in the batch statistics.

    Sentences differ in length, so late steps hold few valid rows: normalising two rows by their own
    mean and variance maps them to about +-1 whatever they contain, which erased the words next to the
    blank of long sentences (text_only reached 3.6 % instead of 12 % after two epochs on real data). A
    step with fewer than ``min_rows`` valid rows is therefore normalised with the running statistics,
    which every step with at least two rows still updates.
    """

    def __init__(self, dim: int, *, gamma: float = 0.1, affine_bias: bool = True, max_steps: int = BN_MAX_STEPS,
                 momentum: float = 0.1, eps: float = 1e-3, min_rows: int = BN_MIN_ROWS):
        super().__init__()
        self.weight = nn.Parameter(torch.full((dim,), float(gamma)))
        self.bias = nn.Parameter(torch.zeros(dim)) if affine_bias else None
        self.register_buffer("running_mean", torch.zeros(max_steps, dim))
        self.register_buffer("running_var", torch.ones(max_steps, dim))
        self.momentum, self.eps, self.max_steps, self.min_rows = momentum, eps, max_steps, min_rows
        self._sums: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None  # set while calibrating

    def start_calibration(self) -> None:
        """Sum batch statistics from now on, instead of updating the running averages."""
        self._sums = (torch.zeros_like(self.running_mean), torch.zeros_like(self.running_var),
                      torch.zeros(self.max_steps, 1, device=self.running_mean.device))

    def finish_calibration(self) -> None:
        """Running statistics := the row-weighted averages of the summed batch statistics (steps never
        seen, e.g. when no batch came, keep theirs)."""
        mean_sum, var_sum, rows = self._sums
        self._sums = None
        seen = rows[:, 0] > 0
        self.running_mean[seen] = mean_sum[seen] / rows[seen]
        self.running_var[seen] = var_sum[seen] / rows[seen]

    def forward(self, x: torch.Tensor, t: int, mask: torch.Tensor, rows: int) -> torch.Tensor:
        """Normalise step ``t`` of ``x [B, D]``; ``rows`` = ``mask.sum()``, given as an int so the loop
        over time needs no device synchronisation per step."""
        step = min(t, self.max_steps - 1)
        m = mask.to(x.dtype).unsqueeze(1)
        n = float(rows)
        batch_rows = rows if self.training else 0  # rows whose statistics this step may use
        if batch_rows > 1:
            mean = (x * m).sum(0) / n
            var = (((x - mean) ** 2) * m).sum(0) / n
            with torch.no_grad():
                unbiased = var.detach().float() * n / (n - 1)
                if self._sums is not None:
                    # The variance this step is normalised with in training: its own (biased) one on
                    # enough rows, else the running (unbiased) estimate.
                    used = var.detach().float() if batch_rows >= self.min_rows else unbiased
                    self._sums[0][step] += mean.detach().float() * n
                    self._sums[1][step] += used * n
                    self._sums[2][step] += n
                else:
                    self.running_mean[step].lerp_(mean.detach().float(), self.momentum)
                    self.running_var[step].lerp_(unbiased, self.momentum)
        if batch_rows < self.min_rows:
            mean, var = self.running_mean[step].to(x.dtype), self.running_var[step].to(x.dtype)
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y if self.bias is None else y + self.bias


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, batches: Iterable) -> int:
    """Replace the running statistics of every :class:`MaskedStepBatchNorm` of ``model`` by their
    average over ``batches`` (inputs for ``model(batch)``), run in training mode as during training;
    returns the number of batches used (0: the model has no such layer, nothing run).

    The statistics are those of the weights as they are now, which the running averages, made while
    the weights moved, are not (Wu and Johnson, "Rethinking 'Batch' in BatchNorm", 2021).
    """
    layers = batch_norm_layers(model)
    if not layers:
        return 0
    was_training = model.training
    model.train()
    for layer in layers:
        layer.start_calibration()
    n = 0
    try:
        for batch in batches:
            model(batch)
            n += 1
    finally:
        for layer in layers:
            layer.finish_calibration()
        model.train(was_training)
    return n


def batch_norm_layers(model: nn.Module) -> list[MaskedStepBatchNorm]:
    """The recurrent batch-norm layers of ``model`` (none unless built with ``batch_norm=True``)."""
    return [m for m in model.modules() if isinstance(m, MaskedStepBatchNorm)]


class SeqLSTM(nn.Module):
    """One LSTM layer over padded batches ``x [B, T, D]`` with lengths ``[B]`` (each >= 1).

    ``forward`` returns the final ``(h, c)`` of each sequence, both ``[B, hidden]``.
    """

    def __init__(self, input_dim: int, hidden: int, *, batch_norm: bool = False, bn_gamma: float = 0.1,
                 zoneout_cell: float = 0.0, zoneout_hidden: float = 0.0):
        super().__init__()
        for name, p in (("zoneout_cell", zoneout_cell), ("zoneout_hidden", zoneout_hidden)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {p}")
        self.input_dim, self.hidden, self.batch_norm = input_dim, hidden, batch_norm
        self.zoneout_cell, self.zoneout_hidden = float(zoneout_cell), float(zoneout_hidden)
        if batch_norm:
            self.w_ih = nn.Linear(input_dim, 4 * hidden, bias=False)
            self.w_hh = nn.Linear(hidden, 4 * hidden, bias=False)
            self.bias = nn.Parameter(torch.zeros(4 * hidden))
            nn.init.orthogonal_(self.w_hh.weight)
            # Gate order i, f, g, o as in nn.LSTM.
            with torch.no_grad():
                self.bias[hidden:2 * hidden].fill_(1.0)
            self.bn_ih = MaskedStepBatchNorm(4 * hidden, gamma=bn_gamma, affine_bias=False)
            self.bn_hh = MaskedStepBatchNorm(4 * hidden, gamma=bn_gamma, affine_bias=False)
            self.bn_c = MaskedStepBatchNorm(hidden, gamma=bn_gamma)
        else:
            self.lstm = nn.LSTM(input_dim, hidden, batch_first=True)
            with torch.no_grad():
                # nn.LSTM adds two bias vectors: forget bias 1 in total.
                self.lstm.bias_ih_l0[hidden:2 * hidden].fill_(1.0)
                self.lstm.bias_hh_l0[hidden:2 * hidden].fill_(0.0)

    @property
    def zoneout(self) -> bool:
        return self.zoneout_cell > 0 or self.zoneout_hidden > 0

    def forward(self, x: torch.Tensor, lengths: torch.Tensor,
                state: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.batch_norm:
            return self._step_loop(self.w_ih(x), lengths, self._initial(x, state), self._bn_cell)
        if self.zoneout:
            lstm = self.lstm
            wx = nn.functional.linear(x, lstm.weight_ih_l0, lstm.bias_ih_l0 + lstm.bias_hh_l0)
            return self._step_loop(wx, lengths, self._initial(x, state), self._plain_cell)
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        if state is not None:
            state = (state[0].unsqueeze(0).contiguous(), state[1].unsqueeze(0).contiguous())
        _, (h, c) = self.lstm(packed, state)
        return h[0], c[0]

    def _bn_cell(self, wx_t, h, c, t: int, m, n: int):
        """One step of the batch-normalised LSTM: ``(h_new, c_new)``."""
        gates = self.bn_ih(wx_t, t, m, n) + self.bn_hh(self.w_hh(h), t, m, n) + self.bias
        i, f, g, o = gates.chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(self.bn_c(c_new, t, m, n)), c_new

    def _plain_cell(self, wx_t, h, c, t: int, m, n: int):
        """One step of ``nn.LSTM``'s cell (both biases already in ``wx_t``): ``(h_new, c_new)``."""
        i, f, g, o = (wx_t + nn.functional.linear(h, self.lstm.weight_hh_l0)).chunk(4, dim=1)
        c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_new), c_new

    def _zone(self, previous: torch.Tensor, new: torch.Tensor, p: float) -> torch.Tensor:
        """Zoneout of one state: each unit keeps ``previous`` with probability ``p`` (training), or
        the expectation of that (evaluation)."""
        if p == 0:
            return new
        if self.training:
            return torch.where(torch.rand_like(new) < p, previous, new)
        return p * previous + (1 - p) * new

    def _initial(self, x: torch.Tensor, state):
        """The initial ``(h, c)``: zeros of ``x``'s dtype (not the products', float16 under autocast)."""
        if state is not None:
            return state
        return x.new_zeros(x.shape[0], self.hidden), x.new_zeros(x.shape[0], self.hidden)

    def _step_loop(self, wx, lengths, state, cell):
        """The LSTM as a Python loop over time steps from ``state``, given the input products
        ``wx [B, T, 4H]``; a sequence's padded steps keep its state."""
        h, c = state
        t_max = wx.shape[1]
        steps = torch.arange(t_max, device=wx.device)
        valid = steps.unsqueeze(0) < lengths.to(wx.device).unsqueeze(1)  # [B, T]
        rows = valid.sum(0).tolist()  # ints, so the batch norm's steps need no device sync
        for t in range(t_max):
            m = valid[:, t]
            h_new, c_new = cell(wx[:, t], h, c, t, m, rows[t])
            h_new = self._zone(h, h_new, self.zoneout_hidden)
            c_new = self._zone(c, c_new, self.zoneout_cell)
            keep = m.unsqueeze(1)
            h = torch.where(keep, h_new, h)
            c = torch.where(keep, c_new, c)
        return h, c


class TextEncoder(nn.Module):
    """Question encoder: ``[h_left; h_right]`` (``2 * hidden``).

    Inputs are word ids padded with 0; ``right`` must already be reversed (read from the sentence end
    towards the blank) and both sides start with a boundary token, so no side is ever empty.
    """

    def __init__(self, vocab_size: int, *, emb_dim: int = 512, hidden: int = 320, batch_norm: bool = False,
                 bn_gamma: float = 0.1, emb_dropout: float = 0.0, zoneout_cell: float = 0.0,
                 zoneout_hidden: float = 0.0):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, emb_dim, padding_idx=0)
        self.emb_dropout = nn.Dropout(emb_dropout)
        lstm = {"batch_norm": batch_norm, "bn_gamma": bn_gamma, "zoneout_cell": zoneout_cell,
                "zoneout_hidden": zoneout_hidden}
        self.left = SeqLSTM(emb_dim, hidden, **lstm)
        self.right = SeqLSTM(emb_dim, hidden, **lstm)
        self.out_dim = 2 * hidden

    def forward(self, left, left_len, right, right_len) -> torch.Tensor:
        hl, _ = self.left(self.emb_dropout(self.embed(left)), left_len)
        hr, _ = self.right(self.emb_dropout(self.embed(right)), right_len)
        return torch.cat([hl, hr], dim=1)


class VideoEncoder(nn.Module):
    """An LSTM over feature steps ``[B, S, D]``; returns the final hidden state ``[B, hidden]``."""

    def __init__(self, input_dim: int, *, hidden: int = 320, batch_norm: bool = False, bn_gamma: float = 0.1,
                 input_dropout: float = 0.0, zoneout_cell: float = 0.0, zoneout_hidden: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(input_dropout)
        self.lstm = SeqLSTM(input_dim, hidden, batch_norm=batch_norm, bn_gamma=bn_gamma, zoneout_cell=zoneout_cell,
                            zoneout_hidden=zoneout_hidden)
        self.out_dim = hidden

    def forward(self, video, video_len, state=None) -> torch.Tensor:
        h, _ = self.lstm(self.dropout(video), video_len, state)
        return h
