"""The MovieFIB baselines, selectable by name.

``create_model(name, **cfg)`` builds one; ``available_models()`` lists the names. Neural models are
``torch.nn.Module``\\ s whose ``forward(batch)`` returns logits ``[B, n_answers]``; count-based
reference models (``majority``, ``context_lookup``) have ``fit`` / ``predict`` instead. Every model has
``streams``: the feature streams it reads (``"2d"``, ``"3d"``), in the order their steps are
concatenated; a recipe maps each stream to a feature preset. Each is registered (in
:mod:`moviefib.models.registry`) with the record of its settings, declared beside it.

Importing this package imports torch.
"""

from __future__ import annotations

# Registration happens when the model modules are imported; minilm imports transformers only when built.
from . import baselines, bilm, minilm, reference  # noqa: F401
from .registry import (
    TRAINER_SETTINGS,
    ModelSettings,
    ModelUnavailableError,
    RegisteredModel,
    SettingError,
    available_models,
    check_settings,
    create_model,
    make_settings,
    model_settings,
    model_streams,
    register_model,
    registered,
)

__all__ = ["TRAINER_SETTINGS", "ModelSettings", "ModelUnavailableError", "RegisteredModel", "SettingError",
           "available_models", "check_settings", "create_model", "make_settings", "model_settings",
           "model_streams", "register_model", "registered"]
