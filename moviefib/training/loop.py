"""The steps of neural training: the optimiser set-up, one epoch, validation, and prediction.

An :class:`Engine` holds what every step uses (the model, its DDP wrapper, optimizer, gradient
scaler, loss, collate function, device). :func:`train_epoch` runs one epoch over a
:class:`SharedPermutation` of the training set and returns its :class:`EpochFigures` summed over every
process; :func:`validate` recalibrates recurrent batch norm and scores the validation set with
:func:`moviefib.evaluate.metrics.index_accuracy`. :func:`batches` gives the batches of either data
path: the resident one (:mod:`moviefib.training.resident`) or a DataLoader over the stores.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..distributed import DistributedEnv
from .checkpoints import is_neural
from .config import ConfigError, TrainSection
from .ddp import parallel_model, per_rank_batch, sum_over_processes
from .progress import RunningFigures, TrainProgress
from .schedule import param_groups, schedule_step

if TYPE_CHECKING:
    from ..data import Collator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SharedPermutation:
    """The training order of one epoch: a permutation every process draws alike from ``seed``, of
    which process ``rank`` of ``world`` takes every ``world``-th question (a DataLoader sampler).

    Taken strided, the per-process batches ``i`` of all processes together hold exactly the questions
    of batch ``i`` of a single process reading the whole permutation with the global batch size: so
    torchrun and one process make the same steps. Under torchrun the last ``n % world`` questions of
    the permutation are left out (other ones each epoch), so that every process makes as many steps.
    """

    n: int
    seed: int
    rank: int = 0
    world: int = 1

    def _order(self) -> list[int]:
        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed))
        return perm[: self.n - self.n % self.world][self.rank::self.world].tolist()

    def __iter__(self):
        return iter(self._order())

    def __len__(self) -> int:
        return self.n // self.world


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def to_device(batch: dict, device) -> dict:
    """The batch on ``device``; float16 video (as stored, and as both data paths keep it, half the bytes
    to move) becomes float32 there."""
    out = {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}
    if "video" in out and out["video"].dtype == torch.float16:
        out["video"] = out["video"].float()
    return out


def autocast(device, amp: bool):
    # float16, not bfloat16: cuDNN runs LSTMs in bfloat16 only from cuDNN 9.13 on.
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def make_loader(dataset, *, order, batch_size: int, workers: int, collate, seed: int, device=None):
    """The lazy path: a DataLoader reading ``dataset``'s questions in ``order`` (a sampler), with the
    training draws of ``seed``. Its own generator: without one, each iteration draws its workers' base
    seed from torch's global generator, which shifted the model's dropout masks against the resident
    path's (the same batches, another training)."""
    return torch.utils.data.DataLoader(
        dataset.reseeded(seed), batch_size=batch_size, sampler=order, num_workers=workers, collate_fn=collate,
        drop_last=False, pin_memory=device is not None and device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None, generator=torch.Generator().manual_seed(seed))


def batches(dataset, *, order, batch_size: int, workers: int, collate: Collator, seed: int, device,
            recycle: bool = False):
    """The batches of ``dataset``'s questions in ``order`` (``seed``: the training draws of stride and
    start): from its resident copy when it has one (not for a model that tokenises raw words), else
    through a DataLoader. Both paths give the same batches. ``recycle``: the consumer is done with
    each batch before it asks for the next (the resident path may then reuse its buffers)."""
    resident = dataset.resident if collate.tokenize is None else None
    if resident is not None:
        return resident.batches(order, batch_size=batch_size, seed=seed, device=device, recycle=recycle)
    return make_loader(dataset, order=order, batch_size=batch_size, workers=workers, collate=collate, seed=seed,
                       device=device)


def predict_indices(model, dataset, *, batch_size: int = 256, device=None, workers: int = 0,
                    amp: bool = False, progress: bool = False) -> list[int]:
    """The predicted answer index of every sample of ``dataset``, in order (``progress``: a bar)."""
    from tqdm.auto import tqdm

    from ..data import Collator

    if not is_neural(model):
        return model.predict([dataset.item(i) for i in range(len(dataset))])
    device = device or next(model.parameters()).device
    loader = batches(dataset, order=range(len(dataset)), batch_size=batch_size, workers=workers,
                     collate=Collator(getattr(model, "tokenize", None)), seed=dataset.draw_seed, device=device,
                     recycle=True)
    model.eval()
    out: list[int] = []
    with torch.inference_mode(), autocast(device, amp):
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False,
                          total=-(-len(dataset) // batch_size)):
            out.extend(model(to_device(batch, device)).argmax(1).tolist())
    return out


def gold_indices(dataset) -> list[int]:
    """The true answer index of every sample (-1: outside the answer vocabulary)."""
    return [dataset.item(i).answer_index for i in range(len(dataset))]


@dataclass(frozen=True)
class Engine:
    """What the training steps share.

    Attributes:
        model: the model. net: what the step calls (``model``, or its DDP wrapper under torchrun).
        optimizer: Adam over two groups (the layers the model adds from scratch, its ``head_prefixes``, at
            ``train.head_lr``: the classifier, a masked LM's video projection; the rest at ``train.lr``).
        scaler: the float16 gradient scaler (disabled off CUDA or without ``train.amp``).
        loss: cross entropy ignoring out-of-vocabulary answers (-1).
        collate: the batch builder (with the model's tokenizer, if it has one).
        device: where the model runs. env: this process's place in the launch.
    """

    model: torch.nn.Module
    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss: torch.nn.Module
    collate: Collator
    device: torch.device
    env: DistributedEnv
    amp: bool


def make_engine(model, cfg: TrainSection, *, env: DistributedEnv, device: torch.device) -> Engine:
    """The model on ``device`` (wrapped for DDP under torchrun) with its optimizer and scaler."""
    from ..data import Collator

    model.to(device)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    prefixes = tuple(getattr(model, "head_prefixes", ("classifier.",)))
    head = [p for n, p in named if n.startswith(prefixes)]
    rest = [p for n, p in named if not n.startswith(prefixes)]
    optimizer = torch.optim.Adam(param_groups(cfg, rest=rest, head=head),  # lr after train.lr_scaling
                                 betas=(0.9, cfg.adam_beta2), weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.amp and device.type == "cuda")
    return Engine(model, parallel_model(model, env, device), optimizer, scaler,
                  torch.nn.CrossEntropyLoss(ignore_index=-1), Collator(getattr(model, "tokenize", None)),
                  device, env, cfg.amp)


class DivergedError(ConfigError):
    """The training loss was NaN or inf: the settings (a rate too high, no clipping) diverged."""


@dataclass(frozen=True)
class EpochFigures:
    """One epoch's training figures over every process: mean loss, accuracy, questions, seconds,
    batches, and those of them whose loss was NaN or inf."""

    loss: float
    accuracy: float
    n_seen: int
    seconds: float
    n_batches: int = 0
    n_non_finite: int = 0

    def check_finite(self, epoch: int) -> None:
        """Raise :class:`DivergedError` when a batch of epoch ``epoch`` (1-based) had a NaN or inf loss."""
        if self.n_non_finite:
            raise DivergedError(f"epoch {epoch}: the training loss was NaN or inf in {self.n_non_finite} of "
                                f"{self.n_batches} batches: training diverged (lower train.lr, or set "
                                f"train.clip_grad); nothing of this epoch was saved")


def _step(engine: Engine, batch: dict, clip_grad: float, figures: RunningFigures) -> None:
    batch = to_device(batch, engine.device)
    target = batch["answer"]
    with autocast(engine.device, engine.amp):
        logits = engine.net(batch)
    raw = engine.loss(logits.float(), target)
    # A batch of only out-of-vocabulary answers has no loss (NaN): it adds no gradient. Any other
    # NaN or inf is counted, and the epoch refused (DivergedError), not trained on as if it were 0.
    loss = torch.nan_to_num(raw, nan=0.0)
    non_finite = ~torch.isfinite(raw) & (target != engine.loss.ignore_index).any()
    engine.optimizer.zero_grad(set_to_none=True)
    engine.scaler.scale(loss).backward()
    if clip_grad:
        engine.scaler.unscale_(engine.optimizer)
        torch.nn.utils.clip_grad_norm_(engine.model.parameters(), clip_grad)
    engine.scaler.step(engine.optimizer)
    engine.scaler.update()
    figures.add(loss, logits, target, non_finite=non_finite)


def epoch_seed(cfg: TrainSection, epoch: int) -> int:
    """Each epoch reseeds, so a resumed run follows the same path as an uninterrupted one."""
    return cfg.seed * 1000 + epoch


def train_epoch(engine: Engine, dataset, cfg: TrainSection, *, epoch: int, workers: int,
                progress: TrainProgress) -> EpochFigures:
    """One epoch (0-based ``epoch``) of optimisation over this process's share of ``dataset``."""
    env, seed = engine.env, epoch_seed(cfg, epoch)
    seed_everything(seed)
    order = SharedPermutation(len(dataset), seed=seed, rank=env.rank, world=env.world)
    per_rank = per_rank_batch(cfg.batch_size, env.world)
    loader = batches(dataset, order=order, batch_size=per_rank, workers=workers, collate=engine.collate, seed=seed,
                     device=engine.device, recycle=True)
    n_batches = -(-len(order) // per_rank)
    total = min(n_batches, cfg.max_batches) if cfg.max_batches > 0 else n_batches
    engine.net.train()
    t0 = time.perf_counter()
    figures = RunningFigures(torch.zeros((), device=engine.device),
                             torch.zeros((), dtype=torch.long, device=engine.device))
    progress.epoch_started(epoch + 1, cfg.epochs, total)
    for b, batch in enumerate(itertools.islice(loader, total)):
        schedule_step(engine.optimizer, cfg, step=epoch * total + b, steps_per_epoch=total)  # warm-up, decay
        _step(engine, batch, cfg.clip_grad, figures)
        progress.batch_done(b + 1, figures)
    # The epoch's figures over every process's share.
    loss_sum, n_correct, n_seen, n_non_finite = sum_over_processes(
        [float(figures.loss_sum), float(figures.n_correct), float(figures.n_seen), float(figures.n_non_finite)],
        env, engine.device)
    n_seen = int(n_seen)
    return EpochFigures(loss_sum / max(1, n_seen), n_correct / max(1, n_seen), n_seen, time.perf_counter() - t0,
                        n_batches=total * env.world, n_non_finite=int(n_non_finite))


def _calibrate(engine: Engine, dataset, cfg: TrainSection, *, seed: int, workers: int) -> None:
    """Recurrent batch norm: statistics of the epoch's final weights, from training batches."""
    from ..models.lstm import batch_norm_layers, recalibrate_batch_norm

    n = cfg.bn_calibration_batches
    if n <= 0 or not batch_norm_layers(engine.model):  # checked first: iterating a loader starts its workers
        return
    seed += 500_000
    loader = batches(dataset, order=SharedPermutation(len(dataset), seed=seed), batch_size=cfg.batch_size,
                     workers=workers, collate=engine.collate, seed=seed, device=engine.device, recycle=True)
    with autocast(engine.device, engine.amp):
        used = recalibrate_batch_norm(engine.model, (to_device(b, engine.device)
                                                     for b in itertools.islice(loader, n)))
    if used:
        log.debug("batch-norm statistics recalibrated on %d training batches", used)


def validate(engine: Engine, train_set, val_set, cfg: TrainSection, *, epoch: int, workers: int) -> float:
    """Validation accuracy after epoch ``epoch`` (0-based) of the model as it is now."""
    from ..evaluate.metrics import index_accuracy

    _calibrate(engine, train_set, cfg, seed=epoch_seed(cfg, epoch), workers=workers)
    predicted = predict_indices(engine.model, val_set, batch_size=cfg.eval_batch_size, device=engine.device,
                                workers=workers, amp=engine.amp)
    return index_accuracy(predicted, gold_indices(val_set))
