"""The MovieFIB baselines, selectable by name.

``create_model(name, **cfg)`` builds one; ``available_models()`` lists the names. Neural models are
``torch.nn.Module``\\ s whose ``forward(batch)`` returns logits ``[B, n_answers]``; count-based
reference models (``majority``, ``context_lookup``) have ``fit`` / ``predict`` instead. Every model has
``streams``: the feature streams it reads (``"2d"``, ``"3d"``), in the order their steps are
concatenated; a recipe maps each stream to a feature preset.

Importing this package imports torch.
"""

from __future__ import annotations

from typing import Callable

_REGISTRY: dict[str, Callable] = {}


def register_model(name: str):
    """Class decorator: make a model creatable by ``name``."""

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = cls
        cls.model_name = name
        return cls

    return deco


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def model_streams(name: str) -> tuple[str, ...]:
    """The feature streams a model reads, without building it."""
    return tuple(_lookup(name).streams)


def _lookup(name: str):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(available_models())})") from None


def create_model(name: str, **cfg):
    """Build model ``name``. ``cfg`` holds its settings (``n_answers``, ``vocab_size``, ``video_dims``...);
    unknown keys raise TypeError naming them. The settings are kept as ``model.model_config`` so a
    checkpoint can rebuild the model."""
    cls = _lookup(name)
    model = cls(**cfg)
    model.model_config = dict(cfg)
    return model


# Registration happens on import; minilm imports transformers only when built.
from . import baselines, reference, minilm  # noqa: E402,F401
