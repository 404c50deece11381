"""TensorBoard event files of a run (``train.log_dir``), besides ``metrics.json``.

One scalar per figure of each epoch's line of the history (:data:`SCALARS`), at step = the epoch
(1-based), flushed after every epoch so a running TensorBoard shows it. Written with torch's
``SummaryWriter``, which needs the ``tensorboard`` package (the ``tensorboard`` extra): a run asking
for logs without it (or with one that does not import) is refused before any work
(:func:`check_available`), as is a ``log_dir`` that cannot be a folder of files (a file, a named
pipe, a path below a file, a place that cannot be written): :func:`prepare_log_dir`. A relative
``log_dir`` is relative to the current folder (as ``train.out_dir``). A resumed run appends a new
event file to the same folder, dropping any events past the epoch it resumes after.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from ..models.registry import ModelUnavailableError
from .config import ConfigError

EXTRA = "tensorboard"
# metrics.json history key -> TensorBoard tag.
SCALARS = (("train_loss", "train/loss"), ("train_acc", "train/accuracy"), ("val_acc", "val/accuracy"),
           ("lr", "train/lr"), ("seconds", "train/seconds"))


class TensorBoardUnavailableError(ModelUnavailableError):
    """``train.log_dir`` is set but the tensorboard package is not installed: an optional extra missing
    (exit 5 from ``moviefib train``, as a model's missing extra)."""


def check_available(log_dir: str | None) -> None:
    """Refuse a ``log_dir`` this install cannot write: no tensorboard package, or one whose writer does
    not import (a broken install would otherwise fail after the data is read)."""
    if not log_dir:
        return
    if importlib.util.find_spec("tensorboard") is None:
        raise TensorBoardUnavailableError(
            f"train.log_dir = {log_dir!r}: TensorBoard logs need the tensorboard package, which this install "
            f"lacks: pip install 'moviefib[{EXTRA}]'")
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError as exc:
        raise TensorBoardUnavailableError(
            f"train.log_dir = {log_dir!r}: TensorBoard's writer does not import ({exc}): reinstall "
            f"'moviefib[{EXTRA}]'") from None


def prepare_log_dir(log_dir: str | None) -> None:
    """Create ``log_dir`` and make sure files can be written in it, before any work (SummaryWriter
    would raise a bare FileExistsError after the data is read)."""
    if not log_dir:
        return
    from ..fileio import folder_problem

    problem = folder_problem(log_dir)
    if problem:
        raise ConfigError(f"train.log_dir = {log_dir!r}: {problem}")


@dataclass(frozen=True)
class EpochLog:
    """Where a run's epochs are logged for TensorBoard; ``writer`` is None without ``train.log_dir``
    (and on every process but rank 0), and then nothing is written."""

    writer: Any = None

    def write(self, row: dict) -> None:
        """Log one epoch's line of ``metrics.json``'s history."""
        if self.writer is None:
            return
        for key, tag in SCALARS:
            if row.get(key) is not None:
                self.writer.add_scalar(tag, row[key], global_step=row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def open_epoch_log(log_dir: str | None, *, epochs_done: int, enabled: bool = True) -> EpochLog:
    """The run's :class:`EpochLog`; ``epochs_done``: epochs of a resumed run, whose later events an
    interrupted run may have left are dropped."""
    if not log_dir or not enabled:
        return EpochLog()
    check_available(log_dir)
    from torch.utils.tensorboard import SummaryWriter

    return EpochLog(SummaryWriter(log_dir, purge_step=epochs_done + 1 if epochs_done else None))
