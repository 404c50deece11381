"""What a run reads: the train and val question tables, the vocabularies built from them, the feature
stores of the model's streams, and the datasets joining them (the data step of :func:`train`)."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import ConfigError, TrainingConfig

if TYPE_CHECKING:
    from ..data import FIBDataset, WordVocab

# The columns training and prediction read from a question table.
QUESTION_COLUMNS = ("question_id", "clip_id", "question", "answer")


def read_split(dataset: str | os.PathLike, split: str):
    """One split's question table; a torn or foreign Parquet file (unreadable, or without the question
    columns) is a :class:`DatasetError` naming it, not pyarrow's error without the file name."""
    import pyarrow as pa

    from ..dataset import DATA_DIR, DatasetError, read_table

    path = Path(dataset) / DATA_DIR / f"{split}.parquet"
    try:
        table = read_table(dataset, split)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in QUESTION_COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: not a question table (lacks column(s) {', '.join(missing)})")
    return table


def question_view(table, answer_vocab):
    """The questions of ``table`` as model inputs, answers as indices of ``answer_vocab`` (-1 outside it)."""
    from ..dataset import QuestionView

    return QuestionView(table, {a: i for i, a in enumerate(answer_vocab)})


def _answers_of(table) -> list[str]:
    return [a for a in table.column("answer").to_pylist() if a is not None]


def _read_tables(config: TrainingConfig) -> dict:
    d = config.data
    if not d.dataset:
        raise ConfigError("no dataset given (data.dataset)")
    return {"train": read_split(d.dataset, d.train_split), "val": read_split(d.dataset, d.val_split)}


def prepare_splits(config: TrainingConfig, tables: Mapping | None = None):
    """``(answer vocabulary, word vocabulary, train view, val view)`` of a config.

    ``tables`` (``{"train": pyarrow.Table, "val": ...}``) replaces reading ``data.dataset``.
    """
    from ..data import WordVocab, build_answer_vocab

    d = config.data
    tables = _read_tables(config) if tables is None else tables
    counts = Counter(_answers_of(tables["train"]))
    if not counts:
        raise ConfigError(f"training split {d.train_split!r} has no answers (a blind split cannot train)")
    if not _answers_of(tables["val"]):
        raise ConfigError(f"validation split {d.val_split!r} has no answers (a blind split cannot validate)")
    answer_vocab = build_answer_vocab(counts, preset=d.answer_vocab, k=d.top_k, min_count=d.min_count)
    train_view = question_view(tables["train"], answer_vocab)
    val_view = question_view(tables["val"], answer_vocab)
    words = WordVocab.build(train_view, min_count=d.word_min_count, lowercase=d.lowercase)
    return answer_vocab, words, train_view, val_view


@dataclass(frozen=True)
class RunData:
    """The inputs of one run.

    Attributes:
        answer_vocab: the output classes (most frequent training answer first).
        words: the input vocabulary.
        stores: stream -> feature store, in the model's order (empty for text models).
        train: the training dataset (random step sampling). val: the validation dataset.
        data_path: where the features are held for batches (``"cpu"``, ``"cuda"``: the resident path,
            see :mod:`moviefib.training.resident`) or ``"lazy"`` (read from the stores by a DataLoader).
    """

    answer_vocab: list[str]
    words: WordVocab
    stores: dict
    train: FIBDataset
    val: FIBDataset
    data_path: str = "lazy"

    def val_oov_rate(self) -> float:
        """The share of validation questions whose answer is outside the answer vocabulary."""
        return sum(self.val.item(i).answer_index < 0 for i in range(len(self.val))) / max(1, len(self.val))

    def summary(self) -> dict:
        """What ``metrics.json`` records of the inputs."""
        from .checkpoints import stream_provenance

        return {"n_train": len(self.train), "n_val": len(self.val), "skipped_train": self.train.skipped,
                "skipped_val": self.val.skipped, "answer_vocab_size": len(self.answer_vocab),
                "word_vocab_size": len(self.words), "val_oov_rate": self.val_oov_rate(),
                "features": stream_provenance(self.stores), "data_path": self.data_path}


def planned_device(name: str):
    """The kind of device ``train.device`` will give (``cuda`` only where CUDA is present: a wrong name
    is the training step's to refuse, and count models, which use none, never see it)."""
    import torch

    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def prepare_data(config: TrainingConfig, tables: Mapping | None = None) -> RunData:
    """The data step: splits, vocabularies, the model's feature stores (checked against their presets)
    and the datasets; questions whose clip lacks features fail or are skipped (``data.missing``). The
    datasets' features are held resident when they fit ``data.memory_budget``."""
    from ..data import FIBDataset, open_stream_stores
    from ..models import model_streams
    from .resident import make_resident

    answer_vocab, words, train_view, val_view = prepare_splits(config, tables)
    stores = open_stream_stores(model_streams(config.model.name), config.features.presets(), config.features.dir)
    common = dict(stores=stores, max_steps=config.data.max_steps, missing=config.data.missing)
    train, val = FIBDataset(train_view, words, train=True, **common), FIBDataset(val_view, words, train=False, **common)
    where = make_resident([train, val], stores, budget_gib=config.data.memory_budget,
                          device=planned_device(config.train.device))
    return RunData(answer_vocab, words, stores, train, val, where or "lazy")
