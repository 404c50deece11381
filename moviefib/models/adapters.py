"""Bottleneck adapters inside a Hugging Face encoder, placed as FrozenBiLM places them.

FrozenBiLM (Yang et al. 2022) adds one adapter after the attention-output dense layer and one after
the feed-forward-output dense layer of every transformer layer, before that block's dropout and
residual LayerNorm: ``LayerNorm(x + dropout(adapter(dense(h))))``. Here the Hugging Face modules are
left as they are: each adapter is attached as a submodule named ``adapter`` of the block's output
module (so its keys read ``...layer.<i>.attention.output.adapter.down.weight`` and
``...layer.<i>.output.adapter.up.bias``, FrozenBiLM's own names) and applied by a forward hook on that
block's ``dense`` layer. Any encoder whose layers have the BERT layout (``attention.output.dense``
and ``output.dense``: BERT, RoBERTa, ELECTRA, DeBERTa and DeBERTa-V2, ...) takes them.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

# Standard deviation of the down-projection's initial weights (FrozenBiLM's adapters start near
# 1e-3); the up-projection starts at zero, so that an adapter starts as the identity.
_DOWN_INIT_STD = 1e-3


class Adapter(nn.Module):
    """``x + up(dropout(relu(down(x))))`` with ``down`` to ``width // factor`` units; starts as the
    identity (``up`` is zero), so the model with adapters is the unmodified LM until trained."""

    def __init__(self, *, width: int, factor: int, dropout: float):
        super().__init__()
        self.down = nn.Linear(width, width // factor)
        self.act = nn.ReLU()
        self.dropout = nn.Dropout(dropout)
        self.up = nn.Linear(width // factor, width)
        nn.init.normal_(self.down.weight, std=_DOWN_INIT_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.up(self.dropout(self.act(self.down(x))))


def _apply_adapter(adapter: Adapter, module: nn.Module, args, output: torch.Tensor) -> torch.Tensor:
    """Forward hook of a block's ``dense`` layer: its output through the block's adapter. (A partial
    over the adapter, not a closure: copies and pickles of the model then keep their own adapter.)"""
    return adapter(output)


def adapter_sites(model: nn.Module) -> list[tuple[nn.Module, nn.Module]]:
    """The (attention output, feed-forward output) modules of every layer with the BERT layout, in
    order: modules with ``attention.output.dense`` and ``output.dense`` linear layers."""
    sites = []
    for module in model.modules():
        attention_out = getattr(getattr(module, "attention", None), "output", None)
        ff_out = getattr(module, "output", None)
        if isinstance(getattr(attention_out, "dense", None), nn.Linear) and \
                isinstance(getattr(ff_out, "dense", None), nn.Linear):
            sites.append((attention_out, ff_out))
    return sites


def add_adapters(model: nn.Module, *, factor: int, dropout: float) -> list[Adapter]:
    """Attach an :class:`Adapter` after the attention-output and the feed-forward-output dense layer
    of every layer of ``model``; returns them (empty when no layer has the BERT layout)."""
    adapters = []
    for sites in adapter_sites(model):
        for block in sites:
            adapter = Adapter(width=block.dense.out_features, factor=factor, dropout=dropout)
            block.adapter = adapter
            block.dense.register_forward_hook(functools.partial(_apply_adapter, adapter))
            adapters.append(adapter)
    return adapters
