"""Answers from a trained checkpoint, and ``train --score``: train, then predict the validation split
with the best model and score it with the evaluator (one library call; the CLI prints the result)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..devices import resolve_device
from ..distributed import distributed_env
from ..fileio import atomic_write
from .checkpoints import checkpoint_config, load_checkpoint
from .config import ConfigError, TrainingConfig, as_config, check_device
from .inputs import question_view, read_split
from .loop import predict_indices
from .progress import TrainProgress
from .run import TrainResult, train

if TYPE_CHECKING:
    from ..evaluate import Evaluation


def _checkpoint_stores(ckpt: dict, presets: Mapping[str, str], features_dir):
    """The stores of the streams a checkpoint was trained on, each checked to hold features of the size
    the model reads."""
    from ..data import open_stream_stores

    streams = tuple(ckpt["features"])
    if features_dir is not None:
        stores = open_stream_stores(streams, presets, features_dir)
    else:
        stores = open_stream_stores(streams, {s: ckpt["features"][s]["path"] for s in streams}, None)
    for s, st in stores.items():
        if st.dim != ckpt["features"][s]["dim"]:
            raise ConfigError(f"{st.path}: {s} features are {st.dim}-d, the model was trained on "
                              f"{ckpt['features'][s]['dim']}-d")
    return stores


def predict(checkpoint: str | os.PathLike, dataset: str | os.PathLike, split: str, *,
            features_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
            missing: str = "error", num_workers: int = 0, progress: bool = False) -> dict[str, str]:
    """``{question_id: answer}`` for every question of ``split`` (blind splits included).

    Feature stores are those the checkpoint was trained with, looked up in ``features_dir`` when given
    (the same preset names), else at their recorded paths. With ``missing="skip"`` questions whose
    clip lacks features get no answer. ``progress``: a bar (the library draws none unless asked). The
    split's features are held resident within the run's ``data.memory_budget`` (as in training).
    """
    from ..data import FIBDataset
    from .resident import make_resident

    check_device(device)
    dev = resolve_device(device)
    model, ckpt = load_checkpoint(checkpoint, device=dev)
    config = checkpoint_config(checkpoint, ckpt)
    answer_vocab = ckpt["answer_vocab"]
    stores = _checkpoint_stores(ckpt, config.features.presets(), features_dir)
    ds = FIBDataset(question_view(read_split(dataset, split), answer_vocab), ckpt["word_vocab"], stores=stores,
                    max_steps=config.data.max_steps, train=False, missing=missing)
    make_resident([ds], stores, budget_gib=config.data.memory_budget, device=dev)
    pred = predict_indices(model, ds, batch_size=batch_size, device=dev, workers=num_workers,
                           amp=config.train.amp, progress=progress)
    return {ds.item(i).question_id: answer_vocab[p] for i, p in enumerate(pred)}


def write_predictions(answers: dict[str, str], out: str | os.PathLike) -> None:
    """Write ``answers`` as a submission in the evaluator's format (TSV, or JSON for a ``.json`` path)."""
    from ..evaluate.submission import write_submission

    write_submission(out, answers)


class ScoringError(ValueError):
    """The best model's validation predictions could not be scored by the evaluator."""


@dataclass(frozen=True)
class ScoredRun:
    """A run trained and scored (``moviefib train --score``).

    Attributes:
        result: what training produced.
        predictions: the validation submission written (``<out>/<val split>_predictions.tsv``).
        evaluation_file: the evaluator's report (``<out>/<val split>_evaluation.json``).
        evaluation: the evaluator's result (:class:`moviefib.evaluate.Evaluation`), or None on the
            processes of a torchrun other than rank 0, which do not score.
    """

    result: TrainResult
    predictions: Path
    evaluation_file: Path
    evaluation: Evaluation | None


def _score_files(config: TrainingConfig, result: TrainResult) -> tuple[Path, Path]:
    split = config.data.val_split
    return result.out_dir / f"{split}_predictions.tsv", result.out_dir / f"{split}_evaluation.json"


def score_run(config: TrainingConfig, result: TrainResult) -> ScoredRun:
    """Predict ``config``'s validation split with the run's best checkpoint and score it; the report is
    written next to the checkpoint."""
    from ..evaluate import EvaluationError, evaluate
    from ..evaluate.report import metrics_json

    d = config.data
    sub, report = _score_files(config, result)
    try:
        write_predictions(predict(result.best_checkpoint, d.dataset, d.val_split, features_dir=config.features.dir,
                                  device=config.train.device, missing=d.missing, progress=config.train.progress),
                          sub)
        evaluation = evaluate(d.dataset, sub, split=d.val_split, bootstrap=0, allow_missing=d.missing == "skip")
    except EvaluationError as exc:
        raise ScoringError(f"scoring {sub}: {exc}") from None
    atomic_write(report, metrics_json(evaluation))
    return ScoredRun(result, sub, report, evaluation)


def train_and_score(config: TrainingConfig | Mapping, *, progress: TrainProgress | None = None) -> ScoredRun:
    """:func:`train`, then :func:`score_run` on rank 0 (the only process that scores under torchrun)."""
    config = as_config(config)
    result = train(config, progress=progress)
    if not distributed_env().is_main:
        return ScoredRun(result, *_score_files(config, result), None)
    return score_run(config, result)
