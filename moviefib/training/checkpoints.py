"""Checkpoints: what a run saves after an epoch, and reading it back checked.

* ``best.pt``: the best model on validation accuracy, with its config, both vocabularies and the
  provenance of the features it read (all a later ``predict`` needs);
* ``last.pt``: the same after the last finished epoch plus what resuming needs (optimizer, history,
  early-stopping counter).

Weights a model loads unchanged from files of its own when it is built and never trains (a bilm model's
frozen LM: several GB for DeBERTa-V2-XLarge) are left out while they still equal what was loaded,
recorded by name and SHA-256 (``from_source``); reading the checkpoint builds the model, which loads
them again, and refuses it when they are no longer those (``model.lm`` changed). Version 2 files may
leave weights out; version 1 files hold every weight.

Files are written to a temporary name and renamed into place. A damaged, foreign or inconsistent file
is :class:`CheckpointError` naming it and why, never torch's or pickle's own error.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from ..fileio import TORCH_LOAD_ERRORS, atomic_output, torch_load_problem
from .config import ConfigError, TrainingConfig, config_from_dict

CHECKPOINT_FORMAT = "moviefib-checkpoint"
CHECKPOINT_VERSION = 2

# What every checkpoint holds, and what a last.pt adds for resuming.
_CHECKPOINT_KEYS = ("model_name", "model_config", "state_dict", "config", "answer_vocab", "word_vocab", "features")
_RESUME_KEYS = ("optimizer", "history", "epoch", "best_val_acc", "best_epoch", "bad_epochs")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, a directory, torn, foreign or inconsistent."""


def is_neural(model) -> bool:
    """A torch model (trained by steps), not a count model (``fit`` once)."""
    return not hasattr(model, "fit")


def save_checkpoint(ckpt: dict, path: Path) -> None:
    """``torch.save`` to a temporary name, renamed into place: a reader never sees half a file."""
    with atomic_output(path) as tmp:
        torch.save(ckpt, tmp)


def stream_provenance(stores: Mapping) -> dict:
    """Stream -> the path, feature size and provenance of its store (what predict re-opens and checks)."""
    return {s: {"path": str(st.path), "dim": st.dim, "provenance": st.provenance} for s, st in stores.items()}


def weights_sha256(state: Mapping, keys) -> str:
    """SHA-256 of the named entries of a state dict (name, dtype, shape and bytes, in name order)."""
    digest = hashlib.sha256()
    for key in sorted(keys):
        tensor = state[key].detach().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).cpu().numpy())
    return digest.hexdigest()


def saved_state(model) -> tuple[dict, dict | None]:
    """The state dict a checkpoint keeps, and the record of what it leaves out (None: nothing): the
    weights the model names as loaded from its source (``weights_from_source()``), while they still
    hash as they did when it was built (not, e.g., after ``train.init_from`` replaced them)."""
    state = model.state_dict()
    source = getattr(model, "weights_from_source", None)
    record = source() if callable(source) else None
    if not record or weights_sha256(state, record["keys"]) != record["sha256"]:
        return state, None
    left_out = set(record["keys"])
    return {k: v for k, v in state.items() if k not in left_out}, dict(record, keys=sorted(left_out))


def build_checkpoint(model, config: TrainingConfig, answer_vocab, words, stores: Mapping, *, epoch: int,
                     val_acc: float | None) -> dict:
    """The content of a ``best.pt`` (a ``last.pt`` adds the resume keys to it)."""
    state, from_source = saved_state(model)
    return {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
        "model_name": model.model_name, "model_config": model.model_config,
        "state_dict": state, "from_source": from_source, "config": config.to_dict(),
        "answer_vocab": list(answer_vocab),
        "word_vocab": {"words": list(words.words), "lowercase": words.lowercase},
        "features": stream_provenance(stores),
        "epoch": epoch, "val_acc": val_acc,
    }


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


def _check_content(path: Path, ckpt, *, resume: bool) -> None:
    """Refuse a loaded object that is not a moviefib checkpoint this release reads (or, ``resume``, not
    a last.pt)."""
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


def read_checkpoint(path: str | os.PathLike, *, device="cpu", resume: bool = False) -> dict:
    """The content of a ``best.pt`` (``resume``: a ``last.pt``, with the optimizer state), checked;
    :class:`CheckpointError` naming the file and why otherwise."""
    path = Path(path)
    _check_archive(path)
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except TORCH_LOAD_ERRORS as exc:  # weights_only refuses a foreign pickle's objects; a damaged one
        raise CheckpointError(f"{path}: not a moviefib checkpoint ({torch_load_problem(exc)})") from None
    _check_content(path, ckpt, resume=resume)
    return ckpt


def checkpoint_config(path: str | os.PathLike, ckpt: Mapping) -> TrainingConfig:
    """The typed config a checkpoint was trained with (keys added since its release take their defaults)."""
    try:
        return config_from_dict(ckpt["config"], origin=f"{path} (its config)")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None


def check_state(path: Path, model, state: Mapping) -> None:
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


def _filled_state(path: Path, model, ckpt: Mapping) -> dict:
    """The checkpoint's state dict with the weights it left out taken from ``model`` as built, once they
    hash as they did when the checkpoint was written."""
    state, record = dict(ckpt["state_dict"]), ckpt.get("from_source")
    if record is None:
        return state
    keys = record.get("keys") if isinstance(record, dict) else None
    if not (isinstance(keys, list) and all(isinstance(k, str) for k in keys) and isinstance(record.get("sha256"), str)):
        raise CheckpointError(f"{path}: not a moviefib checkpoint (from_source malformed)")
    own = model.state_dict()
    absent = [k for k in keys if k not in own]
    if absent:
        raise CheckpointError(f"{path}: its weights do not fit a {model.model_name} model (it leaves out "
                              f"{absent[0]}, which the model has not)")
    if _built_sha256(model, own, keys) != record["sha256"]:
        raise CheckpointError(f"{path}: it leaves out the {len(keys)} weights it took unchanged from "
                              f"{record.get('source')!r}, and the model built now loads other ones there (another "
                              f"model.lm, or its files changed): use the LM it was trained with")
    state.update({k: own[k] for k in keys})
    return state


def _built_sha256(model, own: Mapping, keys: list[str]) -> str:
    """SHA-256 of ``model``'s weights ``keys``: the one it recorded when built, for the same keys (every
    reader loads into a model just built, so this saves hashing a frozen LM a second time), else hashed."""
    source = getattr(model, "weights_from_source", None)
    record = source() if callable(source) else None
    if record and sorted(record["keys"]) == keys:
        return record["sha256"]
    return weights_sha256(own, keys)


def load_state(path: Path, model, ckpt: Mapping) -> None:
    """Put a checkpoint's weights into ``model`` (built from the checkpoint's or the run's config): the
    ones it left out filled from the model's own, every entry and shape checked."""
    state = _filled_state(path, model, ckpt)
    check_state(path, model, state)
    model.load_state_dict(state)


def model_from_checkpoint(path: Path, ckpt: Mapping):
    """The model a checkpoint describes, with its weights."""
    from ..models import TRAINER_SETTINGS, available_models, create_model, model_settings

    name, cfg = ckpt["model_name"], ckpt["model_config"]
    if name not in available_models():
        raise CheckpointError(f"{path}: model {name!r} is not one this moviefib has")
    unknown = sorted(set(cfg) - set(model_settings(name)) - set(TRAINER_SETTINGS))
    if unknown:
        raise CheckpointError(f"{path}: model settings {', '.join(unknown)} are not {name}'s")
    model = create_model(name, **cfg)
    load_state(path, model, ckpt)
    return model


def load_checkpoint(path: str | os.PathLike, *, device="cpu"):
    """``(model, checkpoint dict)`` from a ``best.pt``/``last.pt``; the model is in eval mode and the
    dict's ``word_vocab`` a :class:`~moviefib.data.WordVocab`."""
    from ..data import WordVocab

    path = Path(path)
    ckpt = read_checkpoint(path, device=device)
    model = model_from_checkpoint(path, ckpt)
    if is_neural(model):
        model.to(device).eval()
    ckpt["word_vocab"] = WordVocab(tuple(ckpt["word_vocab"]["words"]), ckpt["word_vocab"]["lowercase"])
    return model, ckpt
