"""The MovieFIB baselines, selectable by name.

``create_model(name, **cfg)`` builds one; ``available_models()`` lists the names. Neural models are
``torch.nn.Module``\\ s whose ``forward(batch)`` returns logits ``[B, n_answers]``; count-based
reference models (``majority``, ``context_lookup``) have ``fit`` / ``predict`` instead. Every model has
``streams``: the feature streams it reads (``"2d"``, ``"3d"``), in the order their steps are
concatenated; a recipe maps each stream to a feature preset.

Importing this package imports torch.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable

_REGISTRY: dict[str, Callable] = {}
# What the trainer passes to every model: a recipe does not set these.
TRAINER_SETTINGS = ("n_answers", "vocab_size", "video_dims")


class ModelUnavailableError(RuntimeError):
    """A model's package or weights are not installed (an optional extra): a resource, not bad input."""


class SettingError(ValueError):
    """A model setting that the model does not take, or a value it cannot use; ``key`` names it."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


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


def model_settings(name: str) -> dict[str, object]:
    """The settings a recipe may give model ``name``, with their defaults (from its constructors)."""
    settings: dict[str, object] = {}
    for klass in _lookup(name).__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        for p in params:
            if p.kind is p.KEYWORD_ONLY and p.name not in TRAINER_SETTINGS:
                settings.setdefault(p.name, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break  # this constructor takes no more than it names
    return settings


def _setting_problem(key: str, value, default) -> str | None:
    """Why ``value`` cannot be setting ``key`` (whose default is ``default``), or None."""
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "expected true or false"
    if default is None or isinstance(default, str):
        return None if isinstance(value, str) and value else "expected a string"
    # TOML booleans are not numbers; the integer settings are all sizes.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "expected an integer >= 1" if isinstance(default, int) else "expected a number"
    if isinstance(default, int):
        return None if isinstance(value, int) and value >= 1 else "expected an integer >= 1"
    if key.endswith("dropout") and not 0 <= value < 1:
        return "expected a probability in [0, 1)"
    return None


def check_settings(name: str, settings: dict) -> None:
    """Refuse, with :class:`SettingError` naming the key and what it takes, a setting that model
    ``name`` does not take or a value of the wrong type or range (before anything is built)."""
    known = model_settings(name)
    for key, value in settings.items():
        if key in TRAINER_SETTINGS:
            raise SettingError(f"model.{key} is set by the trainer, not by a recipe", key)
        if key not in known:
            raise SettingError(f"model.{key}: {name} has no such setting (have: {', '.join(known)})", key)
        problem = _setting_problem(key, value, known[key])
        if problem:
            raise SettingError(f"model.{key} = {value!r}: {problem}", key)


def create_model(name: str, **cfg):
    """Build model ``name``. ``cfg`` holds its settings (``n_answers``, ``vocab_size``, ``video_dims``...);
    unknown keys raise TypeError naming them. The settings are kept as ``model.model_config`` so a
    checkpoint can rebuild the model."""
    cls = _lookup(name)
    model = cls(**cfg)
    model.model_config = dict(cfg)
    return model


# Registration happens on import; minilm imports transformers only when built.
from . import baselines, minilm, reference  # noqa: E402,F401
