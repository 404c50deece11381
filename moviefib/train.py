"""Training, checkpoints and prediction for the baselines.

A run is described by a config: a dict of four sections (``model``, ``data``, ``features``,
``train``), read from a recipe TOML (``baselines/<name>.toml``) over :data:`DEFAULTS`, with
``section.key=value`` overrides. :func:`train` writes to ``train.out_dir``:

* ``best.pt``: the best model on validation accuracy, with its config, both vocabularies and the
  provenance of the features it read (all a later ``predict`` needs);
* ``last.pt``: the state after the last finished epoch (optimizer, history, early-stopping counter),
  what ``train.resume`` continues from;
* ``metrics.json``: per-epoch loss, accuracy, speed, and the best validation accuracy (what
  ``scripts/results_table.py`` reads).

Accuracy is top-1 exact match over every question of the split: an answer outside the answer
vocabulary is always an error. Files are written to a temporary name and renamed into place.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pickle
import random
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .devices import device_problem, resolve_device
from .fileio import atomic_output, atomic_write

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "moviefib-checkpoint"
CHECKPOINT_VERSION = 1

DEFAULTS: dict[str, dict] = {
    # Besides ``name``, model keys are the chosen model's settings (emb_dim, hidden, dropout...).
    "model": {"name": "text_only"},
    "data": {
        "dataset": None,          # dataset folder (moviefib build)
        "train_split": "train",
        "val_split": "val",
        "answer_vocab": "topk",   # "paper" (> min_count occurrences) or "topk"
        "top_k": 1000,
        "min_count": 50,
        "word_min_count": 1,
        "lowercase": True,
        "max_steps": 15,
        "missing": "error",       # or "skip": drop (and count) questions whose clip has no features
        "num_workers": 0,
    },
    # Stream -> feature preset name (or a .h5 path); stores are <dir>/<preset>.h5.
    "features": {"dir": None, "2d": "paper_2d", "3d": "paper_3d"},
    "train": {
        "out_dir": None,
        "device": "auto",         # auto, cpu, cuda, cuda:1...
        "amp": True,              # float16 autocast + gradient scaling on GPU (ignored on CPU)
        "seed": 0,
        "batch_size": 24,
        "eval_batch_size": 256,
        "lr": 2e-4,
        "head_lr": None,          # learning rate of the classifier, when it differs (MiniLM)
        "weight_decay": 0.0,
        "clip_grad": 10.0,
        "epochs": 50,
        "patience": 5,            # epochs without a better val accuracy before stopping
        "max_batches": 0,         # batches per epoch, 0 = all (benchmarks, smoke runs)
        "resume": None,           # a last.pt to continue from
        "progress": True,
        "threads": 0,             # CPU threads for torch, 0 = torch's default (1 is faster on a busy machine)
        "bn_calibration_batches": 100,  # recurrent batch norm: training batches that set its statistics
                                        # before each validation (0 = keep the running averages)
    },
}


class ConfigError(ValueError):
    """A recipe or an override that cannot be used."""


class OverrideError(ConfigError):
    """A ``section.key=value`` override that is malformed: no ``=``, an unknown key, a broken TOML value.

    Attributes:
        assignment: the override as given.
        reason: why it cannot be applied.
    """

    def __init__(self, assignment: str, reason: str):
        super().__init__(f"override {assignment!r}: {reason}")
        self.assignment = assignment
        self.reason = reason


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, a directory, torn, foreign or inconsistent."""


# ----------------------------------------------------------------------------------------------- config

@dataclass(frozen=True)
class _Rule:
    """What one recipe key takes.

    Attributes:
        kind: ``int``, ``number`` (int or float), ``bool`` or ``str``.
        minimum: the smallest value allowed (numbers).
        positive: the value must be above ``minimum`` (a learning rate of 0 is not one).
        choices: the only strings allowed.
        optional: absent (None) is allowed here; the step that needs it says so.
        maximum: the largest value allowed (numbers), or None.
    """

    kind: str
    minimum: float | None = None
    positive: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    maximum: float | None = None

    def allowed(self) -> str:
        """The allowed values, in words, for an error message."""
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a non-empty string"
        noun = "an integer" if self.kind == "int" else "a number"
        if self.minimum is None:
            return noun
        most = f" and <= {self.maximum:g}" if self.maximum is not None else ""
        return f"{noun} {'>' if self.positive else '>='} {self.minimum:g}{most}"

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "str":
            return isinstance(value, str) and bool(value) and (not self.choices or value in self.choices)
        # TOML booleans are not numbers, and a float is not a count.
        wanted = int if self.kind == "int" else (int, float)
        if isinstance(value, bool) or not isinstance(value, wanted) or not math.isfinite(value):
            return False
        if self.maximum is not None and value > self.maximum:
            return False
        if self.minimum is None:
            return True
        return value > self.minimum if self.positive else value >= self.minimum


# No optimiser learns at a higher rate, and 1e300 overflowed Adam's float32 state (a torch traceback).
MAX_LR = 1000.0
# torch.device also takes other names; these are the ones training supports.
MISSING_POLICIES = ("error", "skip")


def _rules() -> dict[str, dict[str, _Rule]]:
    """The rule of every key of the data, features and train sections (model keys: the model's own)."""
    from .data import ANSWER_PRESETS

    count, size, path = _Rule("int", minimum=0), _Rule("int", minimum=1), _Rule("str", optional=True)
    return {
        "data": {"dataset": path, "train_split": _Rule("str"), "val_split": _Rule("str"),
                 "answer_vocab": _Rule("str", choices=ANSWER_PRESETS), "top_k": size, "min_count": count,
                 "word_min_count": size, "lowercase": _Rule("bool"), "max_steps": size,
                 "missing": _Rule("str", choices=MISSING_POLICIES), "num_workers": count},
        "features": {"dir": path, "2d": _Rule("str"), "3d": _Rule("str")},
        "train": {"out_dir": path, "device": _Rule("str"), "amp": _Rule("bool"), "seed": count,
                  "batch_size": size, "eval_batch_size": size,
                  "lr": _Rule("number", minimum=0, positive=True, maximum=MAX_LR),
                  "head_lr": _Rule("number", minimum=0, positive=True, optional=True, maximum=MAX_LR),
                  "weight_decay": _Rule("number", minimum=0), "clip_grad": _Rule("number", minimum=0),
                  "epochs": size, "patience": size, "max_batches": count, "resume": path,
                  "progress": _Rule("bool"), "threads": count, "bn_calibration_batches": count},
    }


def check_device(name: str, origin: str = "device") -> None:
    """Refuse a device name training does not know (before torch.device's own RuntimeError)."""
    problem = device_problem(name)
    if problem:
        raise ConfigError(f"{origin} = {problem}")


def _check_value(section: str, key: str, value, rule: _Rule, origin: str) -> None:
    if not rule.accepts(value):
        raise ConfigError(f"{origin}: {section}.{key} = {value!r}: expected {rule.allowed()}")
    if section == "train" and key == "device":
        check_device(value, f"{origin}: train.device")


def _check_model(settings: dict, origin: dict) -> None:
    from .models import SettingError, available_models, check_settings

    name = settings.get("name")
    where = origin.get(("model", "name"), "config")
    if name not in available_models():
        raise ConfigError(f"{where}: model.name = {name!r}: expected one of {', '.join(available_models())}")
    try:
        check_settings(name, {k: v for k, v in settings.items() if k != "name"})
    except SettingError as exc:
        raise ConfigError(f"{origin.get(('model', exc.key), where)}: {exc}") from None


def validate_config(config: dict, origin: dict | None = None) -> None:
    """Refuse (:class:`ConfigError` naming the key, its source and the allowed values) a config with a
    value of the wrong type or range, an unknown model, answer vocabulary preset or model setting.

    ``origin`` maps ``(section, key)`` to where the value came from (a recipe path, an override).
    """
    origin = origin or {}
    for section, rules in _rules().items():
        for key, rule in rules.items():
            _check_value(section, key, config[section][key], rule, origin.get((section, key), "config"))
    _check_model(config["model"], origin)


# A value opening like a TOML string, array or table is meant as TOML: when it does not parse, it is a
# typo (a missing quote or bracket), not a bare string.
_TOML_OPENERS = ('"', "'", "[", "{")


def _parse_value(assignment: str, text: str):
    if not text:
        raise OverrideError(assignment, "empty value (give a TOML value, e.g. train.lr=1e-3)")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text.startswith(_TOML_OPENERS):
            raise OverrideError(assignment, f"not a TOML value ({exc})") from None
        return text  # a bare word: a string


def apply_override(config: dict, assignment: str) -> tuple[str, str]:
    """Apply ``section.key=value`` (value in TOML syntax, or a bare string) to ``config`` in place;
    returns ``(section, key)``. Values are checked by :func:`validate_config`."""
    key, sep, value = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise OverrideError(assignment, "expected section.key=value (e.g. train.lr=1e-3)")
    if section not in config:
        raise OverrideError(assignment, f"unknown section {section!r} (have: {', '.join(config)})")
    if section != "model" and name not in config[section]:
        raise OverrideError(assignment, f"unknown key {section}.{name} (have: {', '.join(config[section])})")
    config[section][name] = _parse_value(assignment, value.strip())
    return section, name


def _read_recipe(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a recipe (give a recipe's name or its .toml file)")
    try:
        # utf-8-sig: a byte-order mark (Windows editors add one) is dropped, not "Invalid statement".
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe") from None
    except PermissionError:
        raise ConfigError(f"{path}: recipe not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML recipe (not UTF-8 text: invalid byte at offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> dict:
    """:data:`DEFAULTS`, updated by the recipe ``path`` (a packaged recipe's name, see
    :mod:`moviefib.recipes`, or a TOML file) and then by ``overrides``, checked by :func:`validate_config`
    before anything runs."""
    from .recipes import UnknownRecipeError, resolve_recipe

    config = copy.deepcopy(DEFAULTS)
    origin: dict[tuple[str, str], str] = {}
    if path is not None:
        try:
            path = resolve_recipe(path)
        except UnknownRecipeError as exc:
            raise ConfigError(str(exc)) from None
        for section, values in _read_recipe(path).items():
            if section not in config:
                raise ConfigError(f"{path}: unknown section [{section}] (have: {', '.join(config)})")
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section} = {values!r}: expected a [{section}] table of keys")
            for k, v in values.items():
                if section != "model" and k not in config[section]:
                    raise ConfigError(f"{path}: unknown key {section}.{k} (have: {', '.join(config[section])})")
                config[section][k] = v
                origin[section, k] = str(path)
    for o in overrides:
        origin[apply_override(config, o)] = f"override {o!r}"
    validate_config(config, origin)
    return config


# ----------------------------------------------------------------------------------------------- helpers

def _atomic_save(obj, path: Path) -> None:
    import torch

    with atomic_output(path) as tmp:
        torch.save(obj, tmp)


def _atomic_json(obj, path: Path) -> None:
    atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def prepare_out_dir(out: Path) -> None:
    """Create the run folder and make sure files can be written in it, before any work is done: an
    output that cannot be written should not be found out after the first epoch."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder (train.out_dir is the run folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as exc:
        raise ConfigError(f"{out}: cannot write the run folder ({exc.strerror or exc})") from None


def _per_rank_batch(batch_size: int, world: int) -> int:
    """Under torchrun ``train.batch_size`` is the global batch, split evenly over the processes, so a
    run's optimisation does not depend on how many processes share it."""
    if batch_size % world:
        raise ConfigError(f"train.batch_size = {batch_size} is split over {world} processes: "
                          f"give a multiple of {world}")
    return batch_size // world


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
        import torch

        perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed))
        return perm[: self.n - self.n % self.world][self.rank::self.world].tolist()

    def __iter__(self):
        return iter(self._order())

    def __len__(self) -> int:
        return self.n // self.world


def seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}


def is_neural(model) -> bool:
    return not hasattr(model, "fit")


@dataclass(frozen=True)
class Split:
    """A split's questions ready for a model.

    Attributes:
        items: the questions (``QuestionItem`` sequence).
        name: the split name (for messages).
    """

    items: Sequence
    name: str


def _view(table, answer_vocab: list[str]):
    from .dataset import QuestionView

    return QuestionView(table, {a: i for i, a in enumerate(answer_vocab)})


def _answers_of(table) -> list[str]:
    return [a for a in table.column("answer").to_pylist() if a is not None]


# ----------------------------------------------------------------------------------------------- model io

def _stream_provenance(stores: dict) -> dict:
    return {s: {"path": str(st.path), "dim": st.dim, "provenance": st.provenance} for s, st in stores.items()}


def build_checkpoint(model, config: dict, answer_vocab: list[str], words, stores: dict, *, epoch: int,
                     val_acc: float | None) -> dict:
    state = model.state_dict()
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model_name": model.model_name, "model_config": model.model_config,
        "state_dict": state, "config": config,
        "answer_vocab": list(answer_vocab),
        "word_vocab": {"words": list(words.words), "lowercase": words.lowercase},
        "features": _stream_provenance(stores),
        "epoch": epoch, "val_acc": val_acc,
    }


# What every checkpoint holds, and what a last.pt adds for resuming.
_CHECKPOINT_KEYS = ("model_name", "model_config", "state_dict", "config", "answer_vocab", "word_vocab", "features")
_RESUME_KEYS = ("optimizer", "history", "epoch", "best_val_acc", "best_epoch", "bad_epochs")


def _check_archive(path: Path) -> None:
    """Refuse what ``torch.load`` would fail on with a message naming neither the file nor the cause:
    a directory, a file that is not a ``torch.save`` zip archive, or one torn (a member fails its CRC)."""
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        with zipfile.ZipFile(path) as zf:
            torn = zf.testzip()
            names = zf.namelist()
    except zipfile.BadZipFile as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (torn, or not written by torch.save: "
                              f"{exc})") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    if torn is not None:
        raise CheckpointError(f"{path}: corrupt checkpoint (part {torn} fails its checksum)")
    if not any(n.endswith("/data.pkl") for n in names):
        raise CheckpointError(f"{path}: a zip archive, but not a checkpoint (no data.pkl inside)")


def read_checkpoint(path: str | os.PathLike, *, device="cpu", resume: bool = False) -> dict:
    """The content of a ``best.pt`` (``resume``: a ``last.pt``, with the optimizer state), checked;
    :class:`CheckpointError` naming the file and why otherwise."""
    import torch

    path = Path(path)
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refuses the objects of a foreign pickle
        raise CheckpointError(f"{path}: not a moviefib checkpoint ({str(exc).splitlines()[0]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a moviefib checkpoint")
    version = ckpt.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version!r} is not one this moviefib reads "
                              f"(up to {CHECKPOINT_VERSION})")
    lacking = [k for k in _CHECKPOINT_KEYS + (_RESUME_KEYS if resume else ()) if k not in ckpt]
    if lacking:
        what = "a last.pt to resume from" if resume else "a checkpoint"
        raise CheckpointError(f"{path}: not {what}: lacks {', '.join(lacking)}"
                              + (" (best.pt cannot be resumed; give the run's last.pt)" if resume else ""))
    odd = [k for k in ("model_config", "state_dict", "config", "word_vocab", "features")
           if not isinstance(ckpt[k], dict)]
    if odd or not isinstance(ckpt["answer_vocab"], list):
        raise CheckpointError(f"{path}: not a moviefib checkpoint ({', '.join(odd) or 'answer_vocab'} malformed)")
    return ckpt


def _check_state(path: Path, model, state: dict) -> None:
    """Refuse a state dict whose entries or shapes differ from the model's (a tampered or mixed file)."""
    want = model.state_dict()
    if set(want) != set(state):
        odd = sorted(set(want) ^ set(state))
        raise CheckpointError(f"{path}: its weights do not fit a {model.model_name} model "
                              f"({len(odd)} entries differ, e.g. {odd[0]})")
    for k, v in want.items():
        if getattr(v, "shape", None) != getattr(state[k], "shape", None):
            raise CheckpointError(f"{path}: weight {k} has shape {tuple(state[k].shape)}, the model's is "
                                  f"{tuple(v.shape)}")


def model_from_checkpoint(path: Path, ckpt: dict):
    """The model a checkpoint describes, with its weights."""
    from .models import TRAINER_SETTINGS, available_models, create_model, model_settings

    name, cfg = ckpt["model_name"], ckpt["model_config"]
    if name not in available_models():
        raise CheckpointError(f"{path}: model {name!r} is not one this moviefib has")
    unknown = sorted(set(cfg) - set(model_settings(name)) - set(TRAINER_SETTINGS))
    if unknown:
        raise CheckpointError(f"{path}: model settings {', '.join(unknown)} are not {name}'s")
    model = create_model(name, **cfg)
    _check_state(path, model, ckpt["state_dict"])
    model.load_state_dict(ckpt["state_dict"])
    return model


def load_checkpoint(path: str | os.PathLike, *, device="cpu"):
    """``(model, checkpoint dict)`` from a ``best.pt``/``last.pt``; the model is in eval mode."""
    from .data import WordVocab

    path = Path(path)
    ckpt = read_checkpoint(path, device=device)
    model = model_from_checkpoint(path, ckpt)
    if is_neural(model):
        model.to(device).eval()
    ckpt["word_vocab"] = WordVocab(tuple(ckpt["word_vocab"]["words"]), ckpt["word_vocab"]["lowercase"])
    return model, ckpt


# ----------------------------------------------------------------------------------------------- loops

def _loader(dataset, *, batch_size: int, shuffle: bool, workers: int, collate, seed: int = 0,
            sampler=None, device=None):
    import torch

    gen = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler,
        num_workers=workers, collate_fn=collate, generator=gen, drop_last=False,
        pin_memory=device is not None and device.type == "cuda", persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None)


def predict_indices(model, dataset, *, batch_size: int = 256, device=None, workers: int = 0,
                    amp: bool = False, progress: bool = False) -> list[int]:
    """The predicted answer index of every sample of ``dataset``, in order (``progress``: a bar)."""
    import torch
    from tqdm.auto import tqdm

    from .data import Collator

    if not is_neural(model):
        return model.predict([dataset.item(i) for i in range(len(dataset))])
    device = device or next(model.parameters()).device
    loader = _loader(dataset, batch_size=batch_size, shuffle=False, workers=workers,
                     collate=Collator(getattr(model, "tokenize", None)), device=device)
    model.eval()
    out: list[int] = []
    with torch.inference_mode(), _autocast(device, amp):
        for batch in tqdm(loader, desc="predict", disable=not progress, leave=False):
            logits = model(_to_device(batch, device))
            out.extend(logits.argmax(1).tolist())
    return out


def accuracy(pred: Sequence[int], dataset) -> float:
    """Top-1 exact match over all samples; out-of-vocabulary answers (index -1) never match."""
    gold = [dataset.item(i).answer_index for i in range(len(dataset))]
    if not gold:
        return float("nan")
    return sum(p == g for p, g in zip(pred, gold)) / len(gold)


def _autocast(device, amp: bool):
    import contextlib

    import torch

    # float16, not bfloat16: cuDNN runs LSTMs in bfloat16 only from cuDNN 9.13 on.
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


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


def _distributed():
    """(rank, world size, local rank) under torchrun, else (0, 1, 0)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


# The columns training and prediction read from a question table.
QUESTION_COLUMNS = ("question_id", "clip_id", "question", "answer")


def read_split(dataset: str | os.PathLike, split: str):
    """One split's question table; a torn or foreign Parquet file (unreadable, or without the question
    columns) is a :class:`DatasetError` naming it, not pyarrow's error without the file name."""
    import pyarrow as pa

    from .dataset import DATA_DIR, DatasetError, read_table

    path = Path(dataset) / DATA_DIR / f"{split}.parquet"
    try:
        table = read_table(dataset, split)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in QUESTION_COLUMNS if c not in table.column_names]
    if missing:
        raise DatasetError(f"{path}: not a question table (lacks column(s) {', '.join(missing)})")
    return table


def prepare_splits(config: dict, tables: dict | None = None):
    """Answer vocabulary, word vocabulary and the train / val question views of a config.

    ``tables`` (``{"train": pyarrow.Table, "val": ...}``) replaces reading ``data.dataset``.
    """
    from .data import WordVocab, build_answer_vocab

    d = config["data"]
    if tables is None:
        if not d["dataset"]:
            raise ConfigError("no dataset given (data.dataset)")
        tables = {"train": read_split(d["dataset"], d["train_split"]), "val": read_split(d["dataset"], d["val_split"])}
    counts: dict[str, int] = {}
    for a in _answers_of(tables["train"]):
        counts[a] = counts.get(a, 0) + 1
    if not counts:
        raise ConfigError(f"training split {d['train_split']!r} has no answers (a blind split cannot train)")
    if not _answers_of(tables["val"]):
        raise ConfigError(f"validation split {d['val_split']!r} has no answers (a blind split cannot validate)")
    answer_vocab = build_answer_vocab(counts, preset=d["answer_vocab"], k=int(d["top_k"]),
                                      min_count=int(d["min_count"]))
    train_view = _view(tables["train"], answer_vocab)
    val_view = _view(tables["val"], answer_vocab)
    words = WordVocab.build(train_view, min_count=int(d["word_min_count"]), lowercase=bool(d["lowercase"]))
    return answer_vocab, words, train_view, val_view


def _calibrate(model, train_ds, cfg_t: dict, *, collate, seed: int, workers: int, device, amp: bool) -> None:
    """Recurrent batch norm: statistics of the epoch's final weights, from training batches."""
    import itertools

    from .models.lstm import batch_norm_layers, recalibrate_batch_norm

    n = int(cfg_t["bn_calibration_batches"])
    if n <= 0 or not batch_norm_layers(model):  # checked first: iterating a loader starts its workers
        return
    loader = _loader(train_ds, batch_size=int(cfg_t["batch_size"]), shuffle=True, workers=workers,
                     collate=collate, seed=seed + 500_000, device=device)
    with _autocast(device, amp):
        used = recalibrate_batch_norm(model, (_to_device(b, device) for b in itertools.islice(loader, n)))
    if used:
        log.debug("batch-norm statistics recalibrated on %d training batches", used)


def train(config: dict, *, tables: dict | None = None) -> TrainResult:
    """Train (or fit, for count models) ``config``'s model; see the module doc for what is written."""
    import torch

    from .data import Collator, FIBDataset, open_stream_stores
    from .models import create_model, model_streams

    validate_config(config)
    cfg_m, cfg_d, cfg_t = config["model"], config["data"], config["train"]
    if not cfg_t["out_dir"]:
        raise ConfigError("no output folder given (train.out_dir)")
    out = Path(cfg_t["out_dir"])
    prepare_out_dir(out)
    rank, world, local_rank = _distributed()
    per_rank_batch = _per_rank_batch(int(cfg_t["batch_size"]), world)
    resume_state = read_checkpoint(cfg_t["resume"], resume=True) if cfg_t["resume"] else None
    seed = int(cfg_t["seed"])
    seed_everything(seed)
    if int(cfg_t["threads"]) > 0:
        torch.set_num_threads(int(cfg_t["threads"]))

    answer_vocab, words, train_view, val_view = prepare_splits(config, tables)
    name = cfg_m["name"]
    stores = open_stream_stores(model_streams(name), config["features"], config["features"]["dir"])
    kw = {k: v for k, v in cfg_m.items() if k != "name"}
    model = create_model(name, n_answers=len(answer_vocab), vocab_size=len(words),
                         video_dims={s: st.dim for s, st in stores.items()}, **kw)
    common = dict(stores=stores, max_steps=int(cfg_d["max_steps"]), missing=cfg_d["missing"])
    train_ds = FIBDataset(train_view, words, train=True, **common)
    val_ds = FIBDataset(val_view, words, train=False, **common)
    if getattr(model, "standardises_video", False) and not cfg_t["resume"]:  # a resumed model has its own
        from .data import video_statistics

        model.set_video_statistics(*video_statistics(train_ds, seed=seed))
    if rank == 0:
        log.info("%s: %d answers (%s), %d words, %d train / %d val questions", name, len(answer_vocab),
                 cfg_d["answer_vocab"], len(words), len(train_ds), len(val_ds))
    base = {"model": name, "config": config, "n_train": len(train_ds), "n_val": len(val_ds),
            "skipped_train": train_ds.skipped, "skipped_val": val_ds.skipped,
            "answer_vocab_size": len(answer_vocab), "word_vocab_size": len(words),
            "val_oov_rate": sum(val_view[i].answer_index < 0 for i in val_ds.indices) / max(1, len(val_ds)),
            "features": _stream_provenance(stores)}

    if not is_neural(model):
        t0 = time.perf_counter()
        model.fit([train_ds.item(i) for i in range(len(train_ds))])
        acc = accuracy(model.predict([val_ds.item(i) for i in range(len(val_ds))]), val_ds)
        ckpt = build_checkpoint(model, config, answer_vocab, words, stores, epoch=1, val_acc=acc)
        _atomic_save(ckpt, out / "best.pt")
        metrics = {**base, "history": [{"epoch": 1, "val_acc": acc, "seconds": time.perf_counter() - t0}],
                   "best_epoch": 1, "best_val_acc": acc, "finished": True}
        _atomic_json(metrics, out / "metrics.json")
        log.info("%s: val accuracy %.4f", name, acc)
        return TrainResult(out, out / "best.pt", 1, acc, 1, metrics)

    device = resolve_device(cfg_t["device"])
    if world > 1:
        import torch.distributed as dist

        if device.type == "cuda":
            device = torch.device("cuda", local_rank)
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    model.to(device)
    net = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier.") and p.requires_grad]
    rest = [p for n, p in model.named_parameters() if not n.startswith("classifier.") and p.requires_grad]
    head_lr = float(cfg_t["head_lr"]) if cfg_t["head_lr"] is not None else float(cfg_t["lr"])
    optim = torch.optim.Adam([{"params": rest, "lr": float(cfg_t["lr"])}, {"params": head, "lr": head_lr}],
                             betas=(0.9, 0.999), weight_decay=float(cfg_t["weight_decay"]))
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
    collate = Collator(getattr(model, "tokenize", None))
    amp = bool(cfg_t["amp"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")

    history: list[dict] = []
    start_epoch, best_acc, best_epoch, bad = 0, -1.0, 0, 0
    if resume_state is not None:
        state = resume_state
        if state["answer_vocab"] != answer_vocab or state["word_vocab"].get("words") != list(words.words):
            raise CheckpointError(f"{cfg_t['resume']}: vocabularies differ from this config's data; cannot resume")
        if state["model_name"] != name:
            raise CheckpointError(f"{cfg_t['resume']}: a {state['model_name']} run; this recipe trains {name}")
        _check_state(Path(cfg_t["resume"]), model, state["state_dict"])
        model.load_state_dict(state["state_dict"])
        optim.load_state_dict(state["optimizer"])
        if state.get("scaler"):  # empty when saved without mixed precision
            scaler.load_state_dict(state["scaler"])
        start_epoch, history = int(state["epoch"]), list(state["history"])
        best_acc, best_epoch, bad = float(state["best_val_acc"]), int(state["best_epoch"]), int(state["bad_epochs"])
        log.info("resumed from %s after epoch %d (best val %.4f)", cfg_t["resume"], start_epoch, best_acc)

    epochs, patience = int(cfg_t["epochs"]), int(cfg_t["patience"])
    max_batches = int(cfg_t["max_batches"])
    workers = int(cfg_d["num_workers"])
    show = bool(cfg_t["progress"]) and rank == 0
    metrics: dict = {}
    for epoch in range(start_epoch, epochs):
        if bad >= patience:
            break
        # Each epoch reseeds, so a resumed run follows the same path as an uninterrupted one.
        seed_everything(seed * 1000 + epoch)
        sampler = SharedPermutation(len(train_ds), seed=seed * 1000 + epoch, rank=rank, world=world)
        loader = _loader(train_ds, batch_size=per_rank_batch, shuffle=True, workers=workers,
                         collate=collate, seed=seed * 1000 + epoch, sampler=sampler, device=device)
        total = min(len(loader), max_batches) if max_batches > 0 else len(loader)
        net.train()
        t0 = time.perf_counter()
        n_seen = 0
        # Summed on the device: reading them every batch would stall a GPU.
        loss_sum = torch.zeros((), device=device)
        n_correct = torch.zeros((), dtype=torch.long, device=device)
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", disable=not show, leave=False)
        for b, batch in enumerate(loader):
            if b >= total:
                break
            batch = _to_device(batch, device)
            target = batch["answer"]
            with _autocast(device, amp):
                logits = net(batch)
            loss = loss_fn(logits.float(), target)
            # A batch of only out-of-vocabulary answers has no loss (NaN): it adds no gradient.
            loss = torch.nan_to_num(loss, nan=0.0)
            optim.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg_t["clip_grad"]:
                scaler.unscale_(optim)
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(cfg_t["clip_grad"]))
            scaler.step(optim)
            scaler.update()
            loss_sum += loss.detach() * len(target)
            n_seen += len(target)
            n_correct += (logits.detach().argmax(1) == target).sum()
            bar.update(1)
            if show and b % 50 == 0:
                bar.set_postfix(loss=f"{float(loss_sum) / max(1, n_seen):.3f}",
                                acc=f"{int(n_correct) / max(1, n_seen):.3f}")
        bar.close()
        if world > 1:  # the epoch's figures over every process's share
            import torch.distributed as dist

            totals = torch.stack([loss_sum.double(), n_correct.double(),
                                  torch.tensor(float(n_seen), dtype=torch.float64, device=device)])
            dist.all_reduce(totals)
            loss_sum, n_correct, n_seen = totals[0], totals[1], int(totals[2])
        loss_sum, n_correct = float(loss_sum), int(n_correct)
        secs = time.perf_counter() - t0
        _calibrate(model, train_ds, cfg_t, collate=collate, seed=seed * 1000 + epoch, workers=workers, device=device,
                   amp=amp)
        val_pred = predict_indices(model, val_ds, batch_size=int(cfg_t["eval_batch_size"]), device=device,
                                   workers=workers, amp=amp)
        val_acc = accuracy(val_pred, val_ds)
        row = {"epoch": epoch + 1, "train_loss": loss_sum / max(1, n_seen), "train_acc": n_correct / max(1, n_seen),
               "val_acc": val_acc, "seconds": secs, "questions_per_s": n_seen / secs if secs else None}
        history.append(row)
        improved = val_acc > best_acc
        if improved:
            best_acc, best_epoch, bad = val_acc, epoch + 1, 0
        else:
            bad += 1
        if rank == 0:
            log.info("epoch %d: loss %.4f train acc %.4f val acc %.4f (%.1f s, %.0f q/s)%s", epoch + 1,
                     row["train_loss"], row["train_acc"], val_acc, secs, row["questions_per_s"] or 0,
                     " best" if improved else "")
            ckpt = build_checkpoint(model, config, answer_vocab, words, stores, epoch=epoch + 1, val_acc=val_acc)
            if improved:
                _atomic_save(ckpt, out / "best.pt")
            ckpt.update(optimizer=optim.state_dict(), scaler=scaler.state_dict(), history=history,
                        best_val_acc=best_acc, best_epoch=best_epoch, bad_epochs=bad)
            _atomic_save(ckpt, out / "last.pt")
            metrics = {**base, "history": history, "best_epoch": best_epoch, "best_val_acc": best_acc,
                       "finished": False}
            _atomic_json(metrics, out / "metrics.json")
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if not history:
        raise ConfigError(f"nothing to train: {start_epoch} of {epochs} epochs already done")
    metrics = {**base, "history": history, "best_epoch": best_epoch, "best_val_acc": best_acc, "finished": True}
    if rank == 0:
        _atomic_json(metrics, out / "metrics.json")
    return TrainResult(out, out / "best.pt", best_epoch, best_acc, len(history), metrics)


def predict(checkpoint: str | os.PathLike, dataset: str | os.PathLike, split: str, *,
            features_dir: str | os.PathLike | None = None, device: str = "auto", batch_size: int = 256,
            missing: str = "error", num_workers: int = 0, progress: bool = False) -> dict[str, str]:
    """``{question_id: answer}`` for every question of ``split`` (blind splits included).

    Feature stores are those the checkpoint was trained with, looked up in ``features_dir`` when given
    (the same preset names), else at their recorded paths. With ``missing="skip"`` questions whose
    clip lacks features get no answer.
    """
    from .data import FIBDataset, open_stream_stores

    check_device(device)
    dev = resolve_device(device)
    model, ckpt = load_checkpoint(checkpoint, device=dev)
    answer_vocab = ckpt["answer_vocab"]
    feats = ckpt["config"]["features"]
    streams = tuple(ckpt["features"])
    if features_dir is not None:
        stores = open_stream_stores(streams, feats, features_dir)
    else:
        stores = open_stream_stores(streams, {s: ckpt["features"][s]["path"] for s in streams}, None)
    for s, st in stores.items():
        if st.dim != ckpt["features"][s]["dim"]:
            raise ConfigError(f"{st.path}: {s} features are {st.dim}-d, the model was trained on "
                              f"{ckpt['features'][s]['dim']}-d")
    view = _view(read_split(dataset, split), answer_vocab)
    ds = FIBDataset(view, ckpt["word_vocab"], stores=stores, max_steps=int(ckpt["config"]["data"]["max_steps"]),
                    train=False, missing=missing)
    pred = predict_indices(model, ds, batch_size=batch_size, device=dev, workers=num_workers,
                           amp=bool(ckpt["config"]["train"]["amp"]), progress=progress)
    return {ds.item(i).question_id: answer_vocab[p] for i, p in enumerate(pred)}


def write_predictions(answers: dict[str, str], out: str | os.PathLike) -> None:
    """Write ``answers`` as a submission in the evaluator's format (TSV, or JSON for a ``.json`` path)."""
    from .evaluate.submission import write_submission

    write_submission(out, answers)

