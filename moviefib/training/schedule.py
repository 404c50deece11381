"""The learning rate a run optimises with: the batch-size rule, the warm-up and the decay.

Jastrzębski et al. ("Three factors influencing minima in SGD", 2017) found that where SGD ends is
governed by the ratio of learning rate to batch size: growing the batch by k and the learning rate by
k (``train.lr_scaling = "linear"``) keeps that ratio, hence the endpoint. ``"sqrt"`` scales by
sqrt(k) instead, which keeps the variance of the gradient noise per step (the rule often quoted for
Adam). Both are relative to ``train.lr_reference_batch``, the batch the recipe's ``train.lr`` was
chosen for (24, the MovieFIB paper's). Their study is of SGD; the baselines use Adam, whose steps are
normalised by the gradients' scale, so the rule is an option measured here (``baselines/README.md``),
not the default (``"none"``: ``train.lr`` as given).

A large learning rate from the first step can throw a fresh model far off; ``train.warmup_epochs``
(0: none) ramps the rate linearly over that many epochs' steps, step ``s`` at ``(s + 1) / steps`` of
the full rate (Goyal et al., 2017, used it with the linear rule).

``train.lr_decay = "linear"`` then lowers the rate linearly to 0 at the end of ``train.epochs``, step
``s`` of ``N`` (warm-up ``W``) at ``(N - s) / (N - W)``: FrozenBiLM's ``linear_with_warmup``
schedule, which its fine-tuning commands use. The rate of the last epochs is then small, so the
best checkpoint is less a matter of where the noise of a constant rate left the weights. ``"none"``
(the default) holds the full rate after the warm-up.

A run resumed from ``last.pt`` trains at the rates of the config it is resumed with
(:func:`set_rates`: a changed ``train.lr``, ``lr_scaling`` or batch takes effect, as ``metrics.json``
says), its warm-up and decay going on from the step reached (the decay over the ``train.epochs`` of
that config); the optimiser's other state is the saved one.

Torch-free: the optimiser is only handed its parameter groups and has their ``lr`` set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import TrainSection

LR_SCALINGS = ("none", "linear", "sqrt")
LR_DECAYS = ("none", "linear")


@dataclass(frozen=True)
class EffectiveLR:
    """The learning rates a run uses once the batch-size rule is applied.

    Attributes:
        scaling: ``train.lr_scaling``. factor: what ``train.lr`` and ``train.head_lr`` are multiplied by.
        lr: the rate of every parameter but the classifier's. head_lr: the classifier's.
    """

    scaling: str
    factor: float
    lr: float
    head_lr: float

    def as_dict(self) -> dict:
        """What ``metrics.json`` keeps (its ``lr`` entry)."""
        return {"scaling": self.scaling, "factor": self.factor, "lr": self.lr, "head_lr": self.head_lr}


def scale_factor(scaling: str, *, batch: int, reference: int) -> float:
    """The multiplier of the batch-size rule ``scaling`` for ``batch`` against ``reference``."""
    if scaling not in LR_SCALINGS:
        raise ValueError(f"lr scaling {scaling!r}: expected one of {', '.join(LR_SCALINGS)}")
    ratio = batch / reference
    return {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[scaling]


def effective_lr(cfg: TrainSection) -> EffectiveLR:
    """``cfg``'s learning rates after the batch-size rule (the global batch: under torchrun too)."""
    factor = scale_factor(cfg.lr_scaling, batch=cfg.batch_size, reference=cfg.lr_reference_batch)
    return EffectiveLR(cfg.lr_scaling, factor, cfg.lr * factor, cfg.classifier_lr * factor)


def param_groups(cfg: TrainSection, *, rest: list, head: list) -> list[dict]:
    """The optimiser's two groups, in the order :func:`schedule_step` reads: every parameter but the
    classifier's, then the classifier's, each at its effective rate."""
    rates = effective_lr(cfg)
    return [{"params": rest, "lr": rates.lr}, {"params": head, "lr": rates.head_lr}]


def warmup_steps(cfg: TrainSection, steps_per_epoch: int) -> int:
    """Steps of the warm-up (0: none)."""
    return round(cfg.warmup_epochs * steps_per_epoch)


def warmup_factor(step: int, steps: int) -> float:
    """The fraction of the full rate at 0-based ``step`` of a ``steps``-step warm-up (1 after it)."""
    return 1.0 if step >= steps else (step + 1) / steps


def decay_factor(step: int, *, warmup: int, total: int) -> float:
    """The fraction of the full rate at 0-based ``step`` after a ``warmup``-step warm-up, decaying
    linearly to 0 at step ``total`` (the first step past the run); 1 within the warm-up."""
    if step < warmup:
        return 1.0
    return max(0.0, (total - step) / max(1, total - warmup))


def set_rates(optimizer, cfg: TrainSection, *, factor: float = 1.0) -> None:
    """Set :func:`param_groups`' groups to ``cfg``'s effective rates times ``factor``: on resuming,
    the optimiser's saved state carries the saved run's rates, which ``cfg`` may have changed."""
    rates = effective_lr(cfg)
    for group, rate in zip(optimizer.param_groups, (rates.lr, rates.head_lr), strict=True):
        group["lr"] = rate * factor


def schedule_step(optimizer, cfg: TrainSection, *, step: int, steps_per_epoch: int) -> None:
    """Set the rates of :func:`param_groups`' groups for 0-based global ``step`` (warm-up, then decay);
    nothing without either (the rates are those :func:`param_groups` or :func:`set_rates` set)."""
    steps = warmup_steps(cfg, steps_per_epoch)
    factor = warmup_factor(step, steps)
    if cfg.lr_decay == "linear":
        factor *= decay_factor(step, warmup=steps, total=cfg.epochs * steps_per_epoch)
    if steps or cfg.lr_decay != "none":
        set_rates(optimizer, cfg, factor=factor)
