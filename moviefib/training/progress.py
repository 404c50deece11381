"""What a caller is told while a run trains: callbacks, so that the library draws nothing by itself.

:func:`moviefib.training.run.train` calls a :class:`TrainProgress` at the start of each epoch, after
each batch and at the end of each epoch. The base class does nothing; :class:`ProgressBar` draws a
tqdm bar per epoch and is what ``train.progress = true`` asks for (``moviefib train`` does, unless
``--no-progress``). A caller may pass its own (to log, to stop a notebook's spinner, to test).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class RunningFigures:
    """The epoch's figures so far. Not frozen: one per epoch, added to after every batch, on the model's
    device (reading a sum each batch would stall a GPU: :attr:`loss` and :attr:`accuracy` read them).

    Attributes:
        loss_sum: summed loss of the questions seen (a 0-d tensor). n_correct: those answered right
            (a 0-d tensor). n_seen: questions seen. n_non_finite: batches whose loss was NaN or inf.
    """

    loss_sum: torch.Tensor
    n_correct: torch.Tensor
    n_seen: int = 0
    n_non_finite: int | torch.Tensor = 0

    def add(self, loss, logits, target, *, non_finite=None) -> None:
        """One batch; ``non_finite``: a 0-d bool tensor, whether its loss was NaN or inf (though it had
        answers to learn)."""
        if non_finite is not None:
            self.n_non_finite = self.n_non_finite + non_finite.long()
        self.loss_sum += loss.detach() * len(target)
        self.n_correct += (logits.detach().argmax(1) == target).sum()
        self.n_seen += len(target)

    @property
    def loss(self) -> float:
        return float(self.loss_sum) / max(1, self.n_seen)

    @property
    def accuracy(self) -> float:
        return int(self.n_correct) / max(1, self.n_seen)


class TrainProgress:
    """Callbacks of a training run; each does nothing here. Under torchrun only rank 0 is given one."""

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        """Epoch ``epoch`` (1-based) of ``epochs`` begins; it will run ``batches`` batches."""

    def batch_done(self, batch: int, figures: RunningFigures) -> None:
        """Batch ``batch`` (1-based) of the epoch is done; ``figures`` sums the epoch so far."""

    def epoch_done(self, row: dict) -> None:
        """The epoch is validated: ``row`` is its line of ``metrics.json``'s history."""


class ProgressBar(TrainProgress):
    """A tqdm bar per epoch, with the running loss and accuracy every ``every`` batches."""

    def __init__(self, *, every: int = 50):
        self.every = every
        self._bar = None

    def epoch_started(self, epoch: int, epochs: int, batches: int) -> None:
        from tqdm.auto import tqdm

        self._bar = tqdm(total=batches, desc=f"epoch {epoch}/{epochs}", leave=False)

    def batch_done(self, batch: int, figures: RunningFigures) -> None:
        self._bar.update(1)
        if (batch - 1) % self.every == 0:
            self._bar.set_postfix(loss=f"{figures.loss:.3f}", acc=f"{figures.accuracy:.3f}")

    def epoch_done(self, row: dict) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
