"""The model registry: each model registered by name with the record of its settings.

As timm declares a model's metadata where it registers the model, ``@register_model(name,
settings=S)`` names the frozen dataclass ``S`` (a :class:`ModelSettings`) that lists what a recipe's
``[model]`` section may set for it, each field with its default and its rule
(:func:`moviefib.training.rules.setting`). The model's constructor takes the trainer's values
(:data:`TRAINER_SETTINGS`) and ``settings=S(...)``; its defaults live in ``S`` only. A model registered
with ``reads_answers=True`` (one that scores the answers' own words, as a masked LM does) is also given
``answers``: the answer vocabulary's words, in class order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..training.rules import SettingError, build_record, record_dict, record_keys

# What the trainer passes to every model: a recipe does not set these.
TRAINER_SETTINGS = ("n_answers", "vocab_size", "video_dims", "answers")


class ModelUnavailableError(RuntimeError):
    """A model's package or weights are not installed (an optional extra): a resource, not bad input."""


@dataclass(frozen=True)
class ModelSettings:
    """A model's settings: what a recipe may set besides ``name``. This base has none (count models)."""

    def check_available(self) -> None:
        """Refuse, before any data is read, what these settings name that cannot be had here (a package,
        a folder): :class:`ModelUnavailableError` or :class:`SettingError`. The base names nothing."""


@dataclass(frozen=True)
class RegisteredModel:
    """One entry of the registry.

    Attributes:
        name: what recipes call it.
        factory: the model class, called as ``factory(n_answers=..., vocab_size=..., video_dims=...,
            settings=settings(...))``.
        settings: its settings record class.
        reads_answers: the factory takes ``answers`` (the answer words, in class order).
    """

    name: str
    factory: type
    settings: type[ModelSettings]
    reads_answers: bool = False


_REGISTRY: dict[str, RegisteredModel] = {}


def register_model(name: str, *, settings: type[ModelSettings] = ModelSettings, reads_answers: bool = False):
    """Class decorator: make a model creatable by ``name``, with settings record ``settings``;
    ``reads_answers``: its factory also takes ``answers``."""
    if not (isinstance(settings, type) and issubclass(settings, ModelSettings)
            and dataclasses.is_dataclass(settings) and settings.__dataclass_params__.frozen):
        raise TypeError(f"model {name!r}: settings must be a frozen dataclass deriving from ModelSettings")

    def deco(cls):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = RegisteredModel(name, cls, settings, reads_answers)
        cls.model_name = name
        return cls

    return deco


def available_models() -> list[str]:
    return sorted(_REGISTRY)


def registered(name: str) -> RegisteredModel:
    """The registry entry of ``name``; ValueError listing the available ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (available: {', '.join(available_models())})") from None


def model_streams(name: str) -> tuple[str, ...]:
    """The feature streams a model reads, without building it."""
    return tuple(registered(name).factory.streams)


def model_settings(name: str) -> dict[str, object]:
    """The settings a recipe may give model ``name``, with their defaults."""
    return record_dict(registered(name).settings())


def make_settings(name: str, values: Mapping[str, Any]) -> ModelSettings:
    """Model ``name``'s settings record from ``values``; :class:`SettingError` naming the key and what it
    takes for a setting the model does not take or a value of the wrong type or range."""
    cls = registered(name).settings
    known = record_keys(cls)
    for key in values:
        if key in TRAINER_SETTINGS:
            raise SettingError(f"model.{key} is set by the trainer, not by a recipe", key)
        if key not in known:
            raise SettingError(f"model.{key}: {name} has no such setting (have: {', '.join(known) or 'none'})", key)
    return build_record(cls, values, section="model")


def check_settings(name: str, settings: Mapping[str, Any]) -> None:
    """Refuse (:class:`SettingError`) what :func:`make_settings` refuses."""
    make_settings(name, settings)


def create_model(name: str, **cfg):
    """Build model ``name``. ``cfg`` holds the trainer's values (``n_answers``, ``vocab_size``,
    ``video_dims``, ``answers``) and the model's settings; unknown keys raise TypeError naming them.
    ``answers`` reaches only a model registered with ``reads_answers`` (the others ignore it). ``cfg``
    (less an ignored ``answers``) is kept as ``model.model_config`` so a checkpoint can rebuild the model."""
    entry = registered(name)
    if not entry.reads_answers:
        cfg.pop("answers", None)
    elif "answers" not in cfg:
        raise TypeError(f"model {name!r} scores the answer words: create_model needs answers=")
    else:
        cfg["answers"] = [str(a) for a in cfg["answers"]]
        if len(cfg["answers"]) != cfg.get("n_answers"):
            raise ValueError(f"model {name!r}: {len(cfg['answers'])} answers for n_answers={cfg.get('n_answers')}")
    trainer = {k: v for k, v in cfg.items() if k in TRAINER_SETTINGS}
    settings = entry.settings(**{k: v for k, v in cfg.items() if k not in TRAINER_SETTINGS})
    model = entry.factory(**trainer, settings=settings)
    model.model_config = dict(cfg)
    return model
