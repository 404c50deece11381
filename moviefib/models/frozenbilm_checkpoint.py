"""FrozenBiLM's checkpoints (Yang et al. 2022, antoyang/FrozenBiLM) as the initial weights of a bilm model.

What their files hold. ``main.py`` and ``videoqa.py`` save ``{"model": model.state_dict(), "optimizer":
..., "epoch": ..., "args": argparse.Namespace}`` and read only ``checkpoint["model"]``, loaded with
``strict=False`` over the Hugging Face LM they built. Their README: ``frozenbilm.pth`` (WebVid10M
cross-modal training, 3.7 GB) and the BERT ``*_noadapter.pth`` variants hold every weight; the others
(e.g. the LSMDC fine-tuned one, 114 MB) "only contain updated parameters": for DeBERTa-V2-XLarge the 48
adapters, the LayerNorms and ``linear_video``, 29.7 M float32 values or 113 MiB, which fits that size.
The frozen weights then come from the LM (``model.lm``), as in their code.

Their key -> this model's (``<base>``: ``deberta`` or ``bert``; a classifier model's ``lm.`` is the encoder,
so ``<base>.`` is dropped there):

- ``<base>.embeddings.linear_video.{weight,bias}`` ``[E, D]`` ``[E]`` -> ``linear_video.*``;
- ``<base>.*`` (embeddings, layers, adapters ``<base>.encoder.layer.<i>.{attention.output,output}.adapter.
  {down,up}.*``) -> ``lm.<base>.*``;
- the MLM head, ``lm_predictions.lm_head.{dense,LayerNorm}.*`` and ``.bias`` (DeBERTa),
  ``cls.predictions.*`` (BERT) -> ``lm.`` + the same name.

Handled explicitly, and recorded in :class:`Conversion`:

- ``answer_embeddings.weight``, ``answer_bias``: not read; this model recomputes them from the loaded word
  embeddings and head bias for this run's answers (:func:`refresh_answer_embeddings`), as FrozenBiLM's
  ``set_answer_embeddings`` does after loading (their rows are in their answer vocabulary's order anyway);
- ``<base>.embeddings.position_ids``: a buffer of 0..N-1 (Hugging Face recomputes it);
- ``deberta.embeddings.position_embeddings.weight`` where the LM has none (``position_biased_input =
  False``): FrozenBiLM reads it only in its enhanced mask decoder, which this model does not run;
- ``lm_predictions.lm_head.decoder.{weight,bias}``: aliases of the word embeddings and ``lm_head.bias``
  (their ``decoder`` exists "only for compatibility"; their forward never reads it);
- the MLM head when the model has a classifier instead, and ``linear_video`` when it reads no video.

Checked: a key that maps to no weight of the model (another LM, another model) or has another shape is
an error naming it; the adapters and the encoder's LayerNorms are loaded all or none (none: the adapters
stay the identity, which is FrozenBiLM's no-adapter variants, and the LayerNorms the LM's, as
``--freeze_ln``); ``linear_video`` is required when the model reads video (nothing else provides it).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

RECOMPUTED = ("answer_embeddings.weight", "answer_bias")
_HEADS = ("lm_predictions.", "cls.")
_ORIGIN = "train.init_from"


class ConversionError(ValueError):
    """A FrozenBiLM state dict that does not fit the model (the message names the key)."""


@dataclass(frozen=True)
class Conversion:
    """A FrozenBiLM state dict in this model's names.

    Attributes:
        state: this model's key -> the file's tensor.
        ignored: the file's keys not loaded -> why.
        kept: this model's keys the file does not hold (left as built: the LM's, identity adapters...).
        adapters: whether the file held the adapters (else they stay the identity).
    """

    state: dict[str, torch.Tensor]
    ignored: dict[str, str]
    kept: tuple[str, ...]
    adapters: bool


def our_key(key: str, *, base: str, mlm: bool) -> str | None:
    """This model's name for FrozenBiLM's ``key`` (None: not a weight this layout has)."""
    video = f"{base}.embeddings.linear_video."
    if key.startswith(video):
        return "linear_video." + key[len(video):]
    if key.startswith(base + "."):
        return "lm." + (key if mlm else key[len(base) + 1:])
    if key.startswith(_HEADS) and mlm:
        return "lm." + key
    return None


def _ignored(key: str, ours: str | None, *, base: str, mlm: bool, model_keys: Mapping) -> str | None:
    """Why FrozenBiLM's ``key`` is left out on purpose (None: it is not)."""
    if key in RECOMPUTED:
        return ("recomputed for this run's answers from the loaded word embeddings and head bias" if mlm
                else "FrozenBiLM's answer scoring: this model answers with a classifier")
    if ours in model_keys:
        return None
    if key == f"{base}.embeddings.position_ids":
        return "a buffer of positions, recomputed"
    if key == f"{base}.embeddings.position_embeddings.weight":
        return "read only by FrozenBiLM's enhanced mask decoder; this LM has no absolute positions"
    if key.startswith("lm_predictions.lm_head.decoder."):
        return "an alias of the word embeddings / lm_head.bias, never read by FrozenBiLM's forward"
    if key.startswith(_HEADS) and not mlm:
        return "FrozenBiLM's MLM head: this model answers with a classifier"
    if key.startswith(f"{base}.embeddings.linear_video.") and "linear_video.weight" not in model_keys:
        return "this model reads no video"
    return None


def _group_problem(keys: Sequence[str], state: Mapping, what: str) -> str | None:
    """All of ``keys`` in ``state`` or none: a file holding some of them is mixed."""
    held = [k for k in keys if k in state]
    missing = [k for k in keys if k not in state]
    if held and missing:
        return f"holds {len(held)} of the model's {len(keys)} {what} but not {missing[0]}"
    return None


def _completeness_problem(model_keys: Sequence[str], state: Mapping, *, encoder: str) -> str | None:
    """What the weights the file should bring lack (see the module doc)."""
    for key in ("linear_video.weight", "linear_video.bias"):
        if key in model_keys and key not in state:
            return f"lacks {key} (FrozenBiLM's <base>.embeddings.linear_video): the video projection would be random"
    adapters = [k for k in model_keys if ".adapter." in k]
    norms = [k for k in model_keys if k.startswith(encoder) and "LayerNorm" in k and ".adapter." not in k]
    return _group_problem(adapters, state, "adapter weights") or _group_problem(norms, state, "LayerNorm weights")


def _tied_problem(model: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str | None:
    """Two keys of one weight of the model (tied) given different values by the file."""
    first: dict[int, str] = {}
    for key, tensor in model.items():
        if key not in state or tensor.numel() == 0:
            continue
        other = first.setdefault(tensor.data_ptr(), key)
        if other != key and not torch.equal(state[other], state[key]):
            return f"{other} and {key} are one weight in this model, but the file gives them different values"
    return None


def _tensor_problem(value, target: torch.Tensor) -> str | None:
    """Why the file's ``value`` cannot be copied into the model's ``target`` (None: it can):
    ``load_state_dict`` copies an integer or complex tensor into a float weight by casting it, and NaN
    as it is (a zero-shot run then scores garbage without an error)."""
    if not isinstance(value, torch.Tensor):
        return f"holds a {type(value).__name__}, not a tensor"
    if value.layout != torch.strided or value.is_nested or value.device.type != "cpu":
        kind = "nested" if value.is_nested else value.device.type if value.device.type != "cpu" else value.layout
        return f"holds a {kind} tensor, not a dense one with values"
    if target.is_floating_point() and not value.is_floating_point():
        return f"holds {value.dtype} values, not floating point"
    if value.is_floating_point() and not bool(torch.isfinite(value).all()):
        return "holds NaN or infinite values"
    return None


def _mapped(theirs: Mapping, model: Mapping, *, base: str, mlm: bool) -> tuple[dict, dict]:
    """(our key -> tensor, their ignored key -> why); ConversionError for a key that fits nothing."""
    state, ignored = {}, {}
    for key in sorted(theirs):
        value, ours = theirs[key], our_key(key, base=base, mlm=mlm)
        why = _ignored(key, ours, base=base, mlm=mlm, model_keys=model)
        if why is not None:
            ignored[key] = why
            continue
        if ours not in model:
            raise ConversionError(f"key {key} is not a weight of this model (FrozenBiLM's {base} layout expected)")
        problem = _tensor_problem(value, model[ours])
        if problem:
            raise ConversionError(f"key {key} {problem}")
        if tuple(value.shape) != tuple(model[ours].shape):
            raise ConversionError(f"key {key} has shape {tuple(value.shape)}, this model's {ours} is "
                                  f"{tuple(model[ours].shape)}")
        state[ours] = value
    return state, ignored


def convert_state_dict(theirs: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor], *, base: str,
                       mlm: bool) -> Conversion:
    """FrozenBiLM's state dict ``theirs`` in the names of ``model`` (a bilm model's state dict), checked
    (module doc); ``base``: the LM's ``base_model_prefix``, ``mlm``: whether the model scores through the
    LM's head (else its ``lm.`` is the encoder). :class:`ConversionError` names the first bad key."""
    odd = next((k for k in theirs if not isinstance(k, str)), None)
    if odd is not None:
        raise ConversionError(f"key {odd!r} is not a name: not a state dict")
    state, ignored = _mapped(theirs, model, base=base, mlm=mlm)
    if not state:  # an empty "model" (or one of answer rows and buffers): the run would start as built,
        # recorded as initialised (and a zero-shot classifier not refused)
        raise ConversionError(f"holds no weight this model loads ({len(ignored)} key(s), all left out on purpose)")
    encoder = f"lm.{base}." if mlm else "lm."
    problem = _completeness_problem(list(model), state, encoder=encoder) or _tied_problem(model, state)
    if problem:
        raise ConversionError(problem)
    return Conversion(state, ignored, tuple(k for k in model if k not in state),
                      any(".adapter." in k for k in state))


# ----------------------------------------------------------------------------------------------- files

def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _refusal(exc: BaseException) -> str:
    """The useful line of torch's weights-only refusal (its first line is advice to load it unsafely)."""
    from ..fileio import torch_load_problem

    # "Unsupported global: GLOBAL m.C" (a class), "unsupported GLOBAL posix.system whose module ..." (a
    # function of a blocked module).
    found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(exc))
    return f"it pickles {found.group(1)}" if found else torch_load_problem(exc)


def read_init_file(path: Path):
    """The object saved in ``path`` (a torch.save archive), read with ``weights_only``: tensors and plain
    containers, and ``argparse.Namespace`` (the ``args`` FrozenBiLM saves), nothing else."""
    import argparse

    from ..fileio import TORCH_LOAD_ERRORS
    from ..training.checkpoints import CheckpointError, _check_archive

    if not path.exists():
        raise CheckpointError(f"{path}: no such file ({_ORIGIN})")
    try:
        _check_archive(path)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc} ({_ORIGIN})") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            # mmap: a 3.7 GB file is paged in as its tensors are copied into the model, not held twice.
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except TORCH_LOAD_ERRORS as exc:  # a pickle damaged inside an intact archive, a refused global
        raise CheckpointError(f"{path}: not a checkpoint {_ORIGIN} reads ({_refusal(exc)})") from None


def refresh_answer_embeddings(model) -> None:
    """A masked-LM bilm model's answer embeddings and biases recomputed from its (loaded) word-piece
    table and head bias: the means over each answer's pieces (zero biases with ``answer_bias = "zero"``), as
    when it was built."""
    from .bilm import BiLMSettings, HeadParts, answer_pieces, mean_rows

    cfg, default = model.model_config, BiLMSettings()  # model_config holds the settings given, not defaults
    head = HeadParts(model.lm, cfg.get("lm", default.lm))
    pieces = answer_pieces(model.tokenizer, cfg["answers"],
                           max_pieces=cfg.get("max_answer_pieces", default.max_answer_pieces))
    with torch.no_grad():
        model.answer_embeddings.weight.copy_(mean_rows(head.table.detach(), pieces))
        if cfg.get("answer_bias", default.answer_bias) == "mean":  # "zero": FrozenBiLM's forward adds none
            model.answer_bias.copy_(mean_rows(head.bias.detach(), pieces))
        else:
            model.answer_bias.zero_()


def _from_frozenbilm(model, path: Path, theirs) -> dict:
    """Load FrozenBiLM's ``{"model": state dict}`` into a bilm ``model``; the init's record."""
    from ..training.checkpoints import CheckpointError
    from .bilm import BiLM

    if not isinstance(model, BiLM):
        raise CheckpointError(f"{path}: a FrozenBiLM checkpoint initialises a bilm model, not {model.model_name} "
                              f"({_ORIGIN})")
    if model.standardises_video:  # their projection was trained on the features as extracted
        raise CheckpointError(f"{path}: FrozenBiLM's linear_video reads the video features as extracted, and "
                              f"model.standardise_video = true would give it standardised ones ({_ORIGIN})")
    if not isinstance(theirs, Mapping):
        raise CheckpointError(f"{path}: its 'model' entry is a {type(theirs).__name__}, not a state dict ({_ORIGIN})")
    try:
        conv = convert_state_dict(theirs, model.state_dict(), base=model.lm.base_model_prefix, mlm=model.reads_mlm)
    except ConversionError as exc:
        raise CheckpointError(f"{path}: {exc} ({_ORIGIN}, a FrozenBiLM checkpoint)") from None
    model.load_state_dict(conv.state, strict=False)
    if model.reads_mlm:
        refresh_answer_embeddings(model)
    return {"kind": "frozenbilm", "keys_loaded": sorted(conv.state), "ignored": conv.ignored,
            "kept_as_built": len(conv.kept), "adapters": "loaded" if conv.adapters else "identity (none in the file)",
            "recomputed": list(RECOMPUTED) if model.reads_mlm else []}


def _from_moviefib(model, path: Path, ckpt: dict, *, answers: Sequence[str], words: Sequence[str]) -> dict:
    """Load a moviefib ``best.pt`` of the same model, trained on the same vocabularies."""
    from ..training.checkpoints import CheckpointError, _check_content, load_state

    _check_content(path, ckpt, resume=False)
    if ckpt["model_name"] != model.model_name:
        raise CheckpointError(f"{path}: a {ckpt['model_name']} checkpoint; this recipe trains {model.model_name} "
                              f"({_ORIGIN})")
    if ckpt["answer_vocab"] != list(answers) or ckpt["word_vocab"].get("words") != list(words):
        raise CheckpointError(f"{path}: its vocabularies differ from this config's data ({_ORIGIN})")
    load_state(path, model, ckpt)
    return {"kind": "moviefib", "keys_loaded": sorted(ckpt["state_dict"])}


def init_from_file(model, path: str, *, answers: Sequence[str], words: Sequence[str]) -> dict:
    """Start ``model`` from the weights in ``path``: FrozenBiLM's checkpoint (a bilm model) or a moviefib
    ``best.pt`` of the same model. Returns the init's record (path, SHA-256, kind, keys loaded) for
    ``metrics.json``; CheckpointError naming the file and why for anything else."""
    from ..training.checkpoints import CHECKPOINT_FORMAT, CheckpointError, is_neural

    file = Path(path)
    if not is_neural(model):
        raise CheckpointError(f"{file}: {model.model_name} is fitted from counts, it has no weights to start "
                              f"from ({_ORIGIN})")
    content = read_init_file(file)
    if isinstance(content, dict) and content.get("format") == CHECKPOINT_FORMAT:
        record = _from_moviefib(model, file, content, answers=answers, words=words)
    elif isinstance(content, dict) and "model" in content:
        record = _from_frozenbilm(model, file, content["model"])
    else:
        raise CheckpointError(f"{file}: neither FrozenBiLM's checkpoint (a dict with a 'model' state dict) nor a "
                              f"moviefib best.pt ({_ORIGIN})")
    return {"path": str(file), "sha256": file_sha256(file), **record}
