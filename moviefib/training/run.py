"""A training run, as a few named steps: data, model, then per epoch one epoch, validation and the
checkpoint. :func:`train` writes to ``train.out_dir``:

* ``best.pt`` and ``last.pt`` (see :mod:`moviefib.training.checkpoints`);
* ``metrics.json``: per-epoch loss, accuracy, learning rate, speed, and the best validation accuracy
  (what ``scripts/results_table.py`` reads), rewritten after every epoch (``finished`` once done);
  ``lr``: the rates after ``train.lr_scaling`` (:mod:`moviefib.training.schedule`); ``init``: the file
  a fresh run started from (``train.init_from``: path, SHA-256, kind, keys loaded);
* with ``train.log_dir``, the same per-epoch figures as TensorBoard scalars
  (:mod:`moviefib.training.tensorboard`).

Accuracy is top-1 exact match over every question of the split: an answer outside the answer
vocabulary is always an error. Count models (``fit``/``predict``) are fitted once instead of trained.
Under torchrun every process trains its share of each batch and rank 0 writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..distributed import DistributedEnv, distributed_env
from ..fileio import atomic_write
from .checkpoints import CheckpointError, build_checkpoint, is_neural, load_state, read_checkpoint, save_checkpoint
from .config import ConfigError, TrainingConfig, TrainSection, as_config
from .ddp import per_rank_batch, process_group
from .inputs import RunData, prepare_data
from .loop import Engine, EpochFigures, gold_indices, make_engine, seed_everything, train_epoch, validate
from .progress import ProgressBar, TrainProgress
from .schedule import effective_lr, set_rates
from .tensorboard import EpochLog, check_available, open_epoch_log, prepare_log_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes:
        out_dir: the run folder.
        best_checkpoint: path of ``best.pt``.
        best_epoch: the epoch (1-based) of the best validation accuracy.
        best_val_acc: that accuracy, in [0, 1].
        epochs_run: epochs finished (including those before a resume).
        metrics: the content of ``metrics.json``.
    """

    out_dir: Path
    best_checkpoint: Path
    best_epoch: int
    best_val_acc: float
    epochs_run: int
    metrics: dict


@dataclass(frozen=True)
class RunState:
    """Where a run stands after its finished epochs (what ``last.pt`` carries for resuming).

    Attributes:
        history: one row per finished epoch (``metrics.json``'s history).
        best_val_acc: the best validation accuracy so far (-1 before the first epoch).
        best_epoch: its epoch (1-based; 0 before the first).
        bad_epochs: epochs since the last improvement (early stopping at ``train.patience``).
    """

    history: tuple[dict, ...] = ()
    best_val_acc: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0

    @property
    def epochs_done(self) -> int:
        return len(self.history)

    def after(self, row: dict) -> RunState:
        """The state once the epoch of ``row`` is finished."""
        history = (*self.history, row)
        if row["val_acc"] > self.best_val_acc:
            return RunState(history, row["val_acc"], row["epoch"], 0)
        return dataclasses.replace(self, history=history, bad_epochs=self.bad_epochs + 1)

    def metrics(self, summary: dict, *, finished: bool) -> dict:
        return {**summary, "history": list(self.history), "best_epoch": self.best_epoch,
                "best_val_acc": self.best_val_acc, "finished": finished}


def write_json(obj, path: Path) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def prepare_out_dir(out: Path) -> None:
    """Create the run folder and make sure files can be written in it, before any work is done: an
    output that cannot be written should not be found out after the first epoch."""
    from ..fileio import folder_problem

    problem = folder_problem(out)
    if problem:
        raise ConfigError(f"{out}: {problem} (train.out_dir is the run folder)")


# ----------------------------------------------------------------------------------------------- steps

def _set_up(cfg: TrainSection, env: DistributedEnv) -> dict | None:
    """The checks and settings that come before any data is read; returns the last.pt to resume from."""
    if not cfg.out_dir:
        raise ConfigError("no output folder given (train.out_dir)")
    prepare_out_dir(Path(cfg.out_dir))
    check_available(cfg.log_dir)
    if env.is_main:  # rank 0 writes the logs
        prepare_log_dir(cfg.log_dir)
    per_rank_batch(cfg.batch_size, env.world)
    if cfg.resume and cfg.epochs == 0:
        raise ConfigError("train.epochs = 0 (zero-shot) trains nothing: there is nothing to resume (train.resume)")
    resume = read_checkpoint(cfg.resume, resume=True) if cfg.resume else None
    seed_everything(cfg.seed)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    return resume


def build_model(config: TrainingConfig, data: RunData, *, fresh: bool):
    """The model step: ``(model, init)``, ``config``'s model sized for the data. A fresh one standardising
    video takes the training set's statistics, and with ``train.init_from`` starts from that file's weights
    (``init``: where they came from, for metrics.json); a resumed one has its own (``init`` None)."""
    from ..data import video_statistics
    from ..models import create_model

    model = create_model(config.model.name, n_answers=len(data.answer_vocab), vocab_size=len(data.words),
                         video_dims={s: st.dim for s, st in data.stores.items()}, answers=list(data.answer_vocab),
                         **config.model.kwargs())
    if getattr(model, "standardises_video", False) and fresh:
        model.set_video_statistics(*video_statistics(data.train, seed=config.train.seed))
    if not (fresh and config.train.init_from):
        return model, None
    from ..models.frozenbilm_checkpoint import init_from_file

    # After the statistics: a moviefib best.pt brings its own, FrozenBiLM's file none.
    return model, init_from_file(model, config.train.init_from, answers=list(data.answer_vocab),
                                 words=list(data.words.words))


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """The model's parameters, all and those training updates (a frozen LM trains a few)."""
    return {"total": sum(p.numel() for p in model.parameters()),
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad)}


def _fit_counts(model, config: TrainingConfig, data: RunData, out: Path, summary: dict) -> TrainResult:
    """A count model: fitted on the training set once, then validated (one "epoch")."""
    from ..evaluate.metrics import index_accuracy

    t0 = time.perf_counter()
    model.fit([data.train.item(i) for i in range(len(data.train))])
    acc = index_accuracy(model.predict([data.val.item(i) for i in range(len(data.val))]), gold_indices(data.val))
    save_checkpoint(build_checkpoint(model, config, data.answer_vocab, data.words, data.stores, epoch=1, val_acc=acc),
                    out / "best.pt")
    state = RunState(({"epoch": 1, "val_acc": acc, "seconds": time.perf_counter() - t0},), acc, 1)
    metrics = state.metrics(summary, finished=True)
    write_json(metrics, out / "metrics.json")
    log.info("%s: val accuracy %.4f", config.model.name, acc)
    return TrainResult(out, out / "best.pt", 1, acc, 1, metrics)


def _resume(engine: Engine, ckpt: dict, config: TrainingConfig, data: RunData) -> RunState:
    """Continue from a last.pt: its weights, optimizer and scaler state, history and counters, after
    checking that it is a run of this model on these vocabularies."""
    where = config.train.resume
    if ckpt["answer_vocab"] != list(data.answer_vocab) or ckpt["word_vocab"].get("words") != list(data.words.words):
        raise CheckpointError(f"{where}: vocabularies differ from this config's data; cannot resume")
    if ckpt["model_name"] != config.model.name:
        raise CheckpointError(f"{where}: a {ckpt['model_name']} run; this recipe trains {config.model.name}")
    load_state(Path(where), engine.model, ckpt)
    engine.optimizer.load_state_dict(ckpt["optimizer"])
    set_rates(engine.optimizer, config.train)  # this config's rates, not the saved run's (see schedule)
    if ckpt.get("scaler"):  # empty when saved without mixed precision
        engine.scaler.load_state_dict(ckpt["scaler"])
    history = tuple(ckpt["history"])
    if len(history) != int(ckpt["epoch"]):
        raise CheckpointError(f"{where}: its history holds {len(history)} epochs, but it was saved after epoch "
                              f"{int(ckpt['epoch'])}")
    state = RunState(history, float(ckpt["best_val_acc"]), int(ckpt["best_epoch"]), int(ckpt["bad_epochs"]))
    log.info("resumed from %s after epoch %d (best val %.4f)", where, state.epochs_done, state.best_val_acc)
    return state


def _check_zero_shot(config: TrainingConfig, model, init: dict | None) -> None:
    """``train.epochs = 0`` of a model whose untrained answers would be random (its ``zero_shot_problem``,
    e.g. a bilm classifier) and not given trained weights (``train.init_from``): a score of nothing."""
    problem = getattr(model, "zero_shot_problem", None)
    if config.train.epochs == 0 and init is None and problem:
        raise ConfigError(f"train.epochs = 0 (zero-shot): {config.model.name} {problem}; train it (train.epochs "
                          f"> 0) or start from trained weights (train.init_from)")


def _zero_shot(engine: Engine, config: TrainingConfig, data: RunData, *, out: Path, summary: dict) -> RunState:
    """``train.epochs = 0``: the model as built (a masked LM's own head, or weights it was initialised
    from) is validated and saved as best.pt of "epoch 0", without a step of training; ``summary`` gains
    ``zero_shot`` (its accuracy and seconds) and the history stays empty."""
    t0 = time.perf_counter()
    val_acc = validate(engine, data.train, data.val, config.train, epoch=0, workers=config.data.num_workers)
    summary["zero_shot"] = {"val_acc": val_acc, "seconds": time.perf_counter() - t0}
    state = RunState((), val_acc, 0)
    if engine.env.is_main:
        log.info("%s zero-shot: val accuracy %.4f", config.model.name, val_acc)
        save_checkpoint(build_checkpoint(engine.model, config, data.answer_vocab, data.words, data.stores, epoch=0,
                                         val_acc=val_acc), out / "best.pt")
    return state


def _epoch_row(epoch: int, figures: EpochFigures, val_acc: float, lr: float) -> dict:
    """``lr``: the rate of the main parameter group at the epoch's end (after any warm-up)."""
    secs = figures.seconds
    return {"epoch": epoch + 1, "train_loss": figures.loss, "train_acc": figures.accuracy, "val_acc": val_acc,
            "lr": lr, "seconds": secs, "questions_per_s": figures.n_seen / secs if secs else None}


def _save_epoch(engine: Engine, config: TrainingConfig, data: RunData, state: RunState, *, out: Path,
                summary: dict, improved: bool) -> None:
    """The checkpoint step (rank 0): best.pt when the epoch improved, last.pt and metrics.json always."""
    ckpt = build_checkpoint(engine.model, config, data.answer_vocab, data.words, data.stores,
                            epoch=state.epochs_done, val_acc=state.history[-1]["val_acc"])
    if improved:
        save_checkpoint(ckpt, out / "best.pt")
    ckpt.update(optimizer=engine.optimizer.state_dict(), scaler=engine.scaler.state_dict(),
                history=list(state.history), best_val_acc=state.best_val_acc, best_epoch=state.best_epoch,
                bad_epochs=state.bad_epochs)
    save_checkpoint(ckpt, out / "last.pt")
    write_json(state.metrics(summary, finished=False), out / "metrics.json")


def _run_epochs(engine: Engine, config: TrainingConfig, data: RunData, state: RunState, *, out: Path,
                summary: dict, progress: TrainProgress, board: EpochLog) -> RunState:
    """Epochs until ``train.epochs`` or ``train.patience`` epochs without a better val accuracy."""
    cfg, workers = config.train, config.data.num_workers
    for epoch in range(state.epochs_done, cfg.epochs):
        if state.bad_epochs >= cfg.patience:
            break
        figures = train_epoch(engine, data.train, cfg, epoch=epoch, workers=workers, progress=progress)
        figures.check_finite(epoch + 1)  # every process alike: the count is summed over them
        val_acc = validate(engine, data.train, data.val, cfg, epoch=epoch, workers=workers)
        row = _epoch_row(epoch, figures, val_acc, engine.optimizer.param_groups[0]["lr"])
        state = state.after(row)
        improved = state.best_epoch == epoch + 1
        progress.epoch_done(row)
        if engine.env.is_main:
            log.info("epoch %d: loss %.4f train acc %.4f val acc %.4f (%.1f s, %.0f q/s)%s", epoch + 1,
                     row["train_loss"], row["train_acc"], row["val_acc"], row["seconds"],
                     row["questions_per_s"] or 0, " best" if improved else "")
            _save_epoch(engine, config, data, state, out=out, summary=summary, improved=improved)
            board.write(row)
    return state


def _progress_of(config: TrainingConfig, env: DistributedEnv, progress: TrainProgress | None) -> TrainProgress:
    """The caller's callbacks, else a bar when ``train.progress`` asks for one; rank 0 only."""
    if not env.is_main:
        return TrainProgress()
    if progress is not None:
        return progress
    return ProgressBar() if config.train.progress else TrainProgress()


def train(config: TrainingConfig | Mapping, *, tables: Mapping | None = None,
          progress: TrainProgress | None = None) -> TrainResult:
    """Train (or fit, for count models) ``config``'s model; see the module doc for what is written.

    Args:
        config: from :func:`~moviefib.training.config.load_config` (a nested dict is checked first).
        tables: ``{"train": pyarrow.Table, "val": ...}`` instead of reading ``data.dataset``.
        progress: callbacks told of each epoch and batch (default: a bar if ``train.progress``).
    """
    config = as_config(config)
    env = distributed_env()
    resume = _set_up(config.train, env)
    config.model.settings.check_available()  # e.g. a masked LM's folder: before minutes of reading data
    out = Path(config.train.out_dir)
    data = prepare_data(config, tables)
    model, init = build_model(config, data, fresh=resume is None)
    _check_zero_shot(config, model, init)
    rates = effective_lr(config.train)
    summary = {"model": config.model.name, "config": config.to_dict(), "lr": rates.as_dict(), **data.summary()}
    if init is not None:
        summary["init"] = init
    if env.is_main:
        log.info("%s: %d answers (%s), %d words, %d train / %d val questions", config.model.name,
                 len(data.answer_vocab), config.data.answer_vocab, len(data.words), len(data.train), len(data.val))
        log.info("learning rate %g, classifier %g (train.lr_scaling %s: x%.4g at batch %d)", rates.lr,
                 rates.head_lr, rates.scaling, rates.factor, config.train.batch_size)
    if not is_neural(model):
        return _fit_counts(model, config, data, out, summary)
    summary["parameters"] = parameter_counts(model)
    with process_group(env, config.train.device) as device:
        engine = make_engine(model, config.train, env=env, device=device)
        if config.train.epochs == 0:
            state = _zero_shot(engine, config, data, out=out, summary=summary)
            return _finish(config, env, state, summary, out)
        state = _resume(engine, resume, config, data) if resume is not None else RunState()
        board = open_epoch_log(config.train.log_dir, epochs_done=state.epochs_done, enabled=env.is_main)
        try:
            state = _run_epochs(engine, config, data, state, out=out, summary=summary,
                                progress=_progress_of(config, env, progress), board=board)
        finally:
            board.close()
    return _finish(config, env, state, summary, out)


def _finish(config: TrainingConfig, env: DistributedEnv, state: RunState, summary: dict, out: Path) -> TrainResult:
    metrics = state.metrics(summary, finished=True)
    if env.is_main:
        write_json(metrics, out / "metrics.json")
    return TrainResult(out, out / "best.pt", state.best_epoch, state.best_val_acc, state.epochs_done, metrics)
