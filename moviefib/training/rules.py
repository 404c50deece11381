"""What one setting takes, declared beside it: the rule carried by each field of a settings record.

The sections of a training config (:mod:`moviefib.training.config`) and each model's settings
(:mod:`moviefib.models`) are frozen dataclasses whose fields are made by :func:`setting`: a default
and a :class:`Rule`. :func:`build_record` turns a table of values (from a recipe, overrides or a saved
config) into such a record, refusing a value of the wrong type or range with :class:`SettingError`
naming the key and the values allowed; :func:`record_dict` is the inverse. Stdlib only: the models'
records are checked before torch is needed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

RULE, KEY = "moviefib.rule", "moviefib.key"  # field metadata: the rule, and the key when not the field name
KINDS = ("int", "number", "bool", "str")


class SettingError(ValueError):
    """A setting whose value cannot be used, or that the record does not take; ``key`` names it."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


@dataclass(frozen=True)
class Rule:
    """What one setting takes.

    Attributes:
        kind: ``int``, ``number`` (int or float; kept as float), ``bool`` or ``str``.
        minimum: the smallest value allowed (numbers), or None.
        positive: the value must be above ``minimum`` (a learning rate of 0 is not one).
        maximum: the largest value allowed (numbers), or None.
        open_maximum: ``maximum`` itself is not allowed (a dropout probability of 1 drops everything).
        choices: the only strings allowed.
        optional: None is allowed (a path not given; the step that needs it says so).
        words: the allowed values in words, when the generated phrase would not say it best.
        check: a further check of an accepted value: ``value -> None`` or ``"<value repr>: expected ..."``.
    """

    kind: str
    minimum: float | None = None
    positive: bool = False
    maximum: float | None = None
    open_maximum: bool = False
    choices: tuple[str, ...] = ()
    optional: bool = False
    words: str = ""
    check: Callable[[Any], str | None] | None = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"rule kind {self.kind!r} is not one of {', '.join(KINDS)}")

    def allowed(self) -> str:
        """The allowed values, in words, for an error message."""
        if self.words:
            return self.words
        if self.choices:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a non-empty string"
        noun = "an integer" if self.kind == "int" else "a number"
        if self.minimum is None:
            return noun
        most = f" and {'<' if self.open_maximum else '<='} {self.maximum:g}" if self.maximum is not None else ""
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
        return self._in_range(value)

    def _in_range(self, value) -> bool:
        if self.maximum is not None and (value >= self.maximum if self.open_maximum else value > self.maximum):
            return False
        if self.minimum is None:
            return True
        return value > self.minimum if self.positive else value >= self.minimum

    def problem(self, key: str, value) -> str | None:
        """``"<key> = <value>: expected ..."`` when ``value`` is not allowed, else None."""
        if not self.accepts(value):
            return f"{key} = {value!r}: expected {self.allowed()}"
        found = self.check(value) if self.check is not None and value is not None else None
        return f"{key} = {found}" if found else None

    def convert(self, value):
        """The value as the record keeps it: numbers as floats (``lr = 1`` is 1.0)."""
        return float(value) if self.kind == "number" and value is not None else value


# The rules most settings share.
SIZE = Rule("int", minimum=1)
COUNT = Rule("int", minimum=0)
FLAG = Rule("bool")
NUMBER = Rule("number")
TEXT = Rule("str")
OPTIONAL_TEXT = Rule("str", optional=True)
PROBABILITY = Rule("number", minimum=0, maximum=1, open_maximum=True, words="a probability in [0, 1)")


def setting(default, rule: Rule, *, key: str | None = None):
    """A field of a settings record: its default and its rule; ``key`` when the recipe's key is no
    Python name (``[features] 2d``)."""
    if rule.problem("default", default):
        raise ValueError(f"default {default!r} breaks its own rule ({rule.allowed()})")
    metadata = {RULE: rule} if key is None else {RULE: rule, KEY: key}
    return dataclasses.field(default=default, metadata=metadata)


def _fields(cls) -> dict[str, dataclasses.Field]:
    """Key -> field of a settings record class."""
    return {f.metadata.get(KEY, f.name): f for f in dataclasses.fields(cls)}


def record_keys(cls) -> tuple[str, ...]:
    """The keys a settings record class takes, in declaration order."""
    return tuple(_fields(cls))


def rule_of(cls, key: str) -> Rule:
    return _fields(cls)[key].metadata[RULE]


def build_record(cls, values: Mapping[str, Any], *, section: str):
    """A ``cls`` record from ``values`` (key -> value; absent keys take their defaults), each value
    checked by its rule: :class:`SettingError` naming ``section.key`` and the allowed values. Keys the
    record does not take are the caller's to refuse first (its message names where they came from)."""
    fields = _fields(cls)
    kwargs = {}
    for key, value in values.items():
        rule = fields[key].metadata[RULE]
        problem = rule.problem(f"{section}.{key}", value)
        if problem:
            raise SettingError(problem, key)
        kwargs[fields[key].name] = rule.convert(value)
    return cls(**kwargs)


def record_dict(record) -> dict[str, Any]:
    """Key -> value of a settings record (what :func:`build_record` reads back)."""
    return {key: getattr(record, f.name) for key, f in _fields(type(record)).items()}
