"""The training config: typed, built and checked once, when it is loaded.

A run is described by four sections: ``[model]`` (``name`` and that model's settings, a record
declared beside the model in :mod:`moviefib.models`), ``[data]``, ``[features]`` and ``[train]``
(:class:`DataSection`, :class:`FeaturesSection`, :class:`TrainSection`). :func:`load_config` reads a
recipe (a packaged recipe's name, see :mod:`moviefib.recipes`, or a TOML file) over the sections'
defaults, then ``section.key=value`` overrides, and builds a :class:`TrainingConfig`: a value of the
wrong type or range, an unknown key, model or model setting is refused there, with
:class:`ConfigError` naming the key, where it came from (the recipe file or the override) and the
values allowed, before anything runs. :meth:`TrainingConfig.to_dict` is the nested dict saved in
``metrics.json`` and checkpoints; :func:`config_from_dict` reads one back (a run saved by an earlier
release too, whose dict may lack keys added since: they take their defaults).

Torch-free, except that checking ``[model]`` imports the model registry.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..devices import device_problem
from .rules import (
    COUNT,
    FLAG,
    OPTIONAL_TEXT,
    SIZE,
    TEXT,
    Rule,
    SettingError,
    build_record,
    record_dict,
    record_keys,
    setting,
)
from .schedule import LR_DECAYS, LR_SCALINGS, effective_lr

if TYPE_CHECKING:
    from ..models.registry import ModelSettings

# No optimiser learns at a higher rate, and 1e300 overflowed Adam's float32 state (a torch traceback).
MAX_LR = 1000.0
MAX_SEED = 2**32 - 1
MISSING_POLICIES = ("error", "skip")
# The answer vocabulary: "paper" = answers seen more than data.min_count times, "topk" = the top_k most frequent.
ANSWER_PRESETS = ("paper", "topk")
DEFAULT_MODEL = "text_only"


class ConfigError(ValueError):
    """A recipe or an override that cannot be used."""


class OverrideError(ConfigError):
    """A ``section.key=value`` override that is malformed: no ``=``, an unknown key, a broken TOML value.

    Attributes:
        assignment: the override as given.
        reason: why it cannot be applied.
    """

    def __init__(self, assignment: str, reason: str):
        super().__init__(f"override {assignment!r}: {reason}")
        self.assignment = assignment
        self.reason = reason


_LR = Rule("number", minimum=0, positive=True, maximum=MAX_LR)


@dataclass(frozen=True)
class DataSection:
    """``[data]``: which questions train and validate, and how answers and words become indices."""

    dataset: str | None = setting(None, OPTIONAL_TEXT)  # dataset folder (moviefib build)
    train_split: str = setting("train", TEXT)
    val_split: str = setting("val", TEXT)
    answer_vocab: str = setting("topk", Rule("str", choices=ANSWER_PRESETS))
    top_k: int = setting(1000, SIZE)
    min_count: int = setting(50, COUNT)
    word_min_count: int = setting(1, SIZE)
    lowercase: bool = setting(True, FLAG)
    max_steps: int = setting(15, SIZE)  # video steps per clip
    missing: str = setting("error", Rule("str", choices=MISSING_POLICIES))  # "skip": drop (and count)
    num_workers: int = setting(0, COUNT)  # DataLoader worker processes
    # GiB of features held in memory (GPU memory on CUDA) for the resident data path; beyond it the
    # lazy path reads HDF5. None: half the GPU's memory, else of the available RAM. 0: always lazy.
    memory_budget: float | None = setting(None, Rule("number", minimum=0, optional=True))


@dataclass(frozen=True)
class FeaturesSection:
    """``[features]``: each stream's feature preset (its store is ``<dir>/<preset>.h5``) or ``.h5`` path."""

    dir: str | None = setting(None, OPTIONAL_TEXT)
    preset_2d: str = setting("paper_2d", TEXT, key="2d")
    preset_3d: str = setting("paper_3d", TEXT, key="3d")

    def presets(self) -> dict[str, str]:
        """Stream -> preset name or store path."""
        return {"2d": self.preset_2d, "3d": self.preset_3d}


@dataclass(frozen=True)
class TrainSection:
    """``[train]``: where the run goes, on what device, and how it optimises."""

    out_dir: str | None = setting(None, OPTIONAL_TEXT)
    device: str = setting("auto", Rule("str", check=device_problem))  # auto, cpu, cuda, cuda:1...
    amp: bool = setting(True, FLAG)  # float16 autocast + gradient scaling on GPU (ignored on CPU)
    # Epoch e reseeds torch with seed * 1000 + e (loop.epoch_seed), which must fit its 64-bit seed: a
    # seed past 2**32 - 1 was a torch traceback in the first epoch.
    seed: int = setting(0, Rule("int", minimum=0, maximum=MAX_SEED, words=f"an integer from 0 to {MAX_SEED}"))
    batch_size: int = setting(24, SIZE)  # the global batch: under torchrun, split over the processes
    eval_batch_size: int = setting(256, SIZE)
    lr: float = setting(2e-4, _LR)
    head_lr: float | None = setting(None, Rule("number", minimum=0, positive=True, optional=True,
                                                maximum=MAX_LR))  # the classifier's, when it differs
    # The batch-size rule (moviefib.training.schedule): lr and head_lr times batch_size / lr_reference_batch
    # ("linear"), its square root ("sqrt"), or as given ("none").
    lr_scaling: str = setting("none", Rule("str", choices=LR_SCALINGS))
    lr_reference_batch: int = setting(24, SIZE)  # the batch train.lr was chosen for (the paper's)
    warmup_epochs: float = setting(0.0, Rule("number", minimum=0))  # linear warm-up; fractions allowed
    lr_decay: str = setting("none", Rule("str", choices=LR_DECAYS))  # "linear": to 0 at the end of train.epochs
    adam_beta2: float = setting(0.999, Rule("number", minimum=0, maximum=1, open_maximum=True))  # FrozenBiLM's: 0.95
    weight_decay: float = setting(0.0, Rule("number", minimum=0))
    clip_grad: float = setting(10.0, Rule("number", minimum=0))  # 0: no clipping
    epochs: int = setting(50, COUNT)  # 0: zero-shot, the untrained (or initialised) model is validated and saved
    patience: int = setting(5, SIZE)  # epochs without a better val accuracy before stopping
    max_batches: int = setting(0, COUNT)  # batches per epoch, 0 = all (benchmarks, smoke runs)
    resume: str | None = setting(None, OPTIONAL_TEXT)  # a last.pt to continue from
    # Weights a fresh run starts from (a resumed one has its own): FrozenBiLM's checkpoint for a bilm
    # model (moviefib.models.frozenbilm_checkpoint), or a moviefib best.pt of the same model and data.
    init_from: str | None = setting(None, OPTIONAL_TEXT)
    progress: bool = setting(False, FLAG)  # progress bars: the caller asks (moviefib train does)
    threads: int = setting(0, COUNT)  # CPU threads for torch, 0 = torch's default
    # Recurrent batch norm: training batches that set its statistics before each validation (0 = keep
    # the running averages).
    bn_calibration_batches: int = setting(100, COUNT)
    log_dir: str | None = setting(None, OPTIONAL_TEXT)  # TensorBoard event files (the tensorboard extra)

    @property
    def classifier_lr(self) -> float:
        return self.lr if self.head_lr is None else self.head_lr


SECTIONS: dict[str, type] = {"data": DataSection, "features": FeaturesSection, "train": TrainSection}
SECTION_NAMES = ("model", *SECTIONS)


@dataclass(frozen=True)
class ModelSection:
    """``[model]``: the registered model ``name`` and its settings record (see :mod:`moviefib.models`)."""

    name: str
    settings: ModelSettings

    def kwargs(self) -> dict[str, Any]:
        """The settings as ``create_model`` keywords."""
        return record_dict(self.settings)


@dataclass(frozen=True)
class TrainingConfig:
    """A whole run's config: every value checked, every key typed."""

    model: ModelSection
    data: DataSection = DataSection()
    features: FeaturesSection = FeaturesSection()
    train: TrainSection = TrainSection()

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The nested dict (sections ``model``, ``data``, ``features``, ``train``) that
        :func:`config_from_dict` reads back; what ``metrics.json`` and checkpoints hold."""
        return {"model": {"name": self.model.name, **self.model.kwargs()}, "data": record_dict(self.data),
                "features": record_dict(self.features), "train": record_dict(self.train)}


# ----------------------------------------------------------------------------------------------- raw layers
# A recipe, overrides or a saved dict are first merged as raw values (section -> key -> value) with
# where each came from; the typed config is built from them once, so the last word on a key wins
# before anything is checked (an override may fix a recipe's value, or change the model).

Raw = dict[str, dict[str, Any]]
Origins = dict[tuple[str, str], str]


def _empty_raw() -> Raw:
    return {section: {} for section in SECTION_NAMES}


def section_keys(section: str) -> tuple[str, ...]:
    return record_keys(SECTIONS[section])


def _merge(raw: Raw, origins: Origins, table: Mapping, where: str) -> None:
    """Add a recipe's (or a saved config's) sections to ``raw``; unknown sections and keys are refused
    here, naming ``where``. Model keys depend on the model: they are checked when the config is built."""
    for section, values in table.items():
        if section not in raw:
            raise ConfigError(f"{where}: unknown section [{section}] (have: {', '.join(SECTION_NAMES)})")
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: {section} = {values!r}: expected a [{section}] table of keys")
        for key, value in values.items():
            if section != "model" and key not in section_keys(section):
                raise ConfigError(f"{where}: unknown key {section}.{key} (have: {', '.join(section_keys(section))})")
            raw[section][key] = value
            origins[section, key] = where


# A value opening like a TOML string, array or table is meant as TOML: when it does not parse, it is a
# typo (a missing quote or bracket), not a bare string.
_TOML_OPENERS = ('"', "'", "[", "{")


def _parse_value(assignment: str, text: str):
    if not text:
        raise OverrideError(assignment, "empty value (give a TOML value, e.g. train.lr=1e-3)")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as exc:
        if text.startswith(_TOML_OPENERS):
            raise OverrideError(assignment, f"not a TOML value ({exc})") from None
        return text  # a bare word: a string


def apply_override(raw: Raw, assignment: str) -> tuple[str, str]:
    """Apply ``section.key=value`` (value in TOML syntax, or a bare string) to the raw sections ``raw``
    in place; returns ``(section, key)``. The value is checked when the config is built."""
    key, sep, value = assignment.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise OverrideError(assignment, "expected section.key=value (e.g. train.lr=1e-3)")
    if section not in raw:
        raise OverrideError(assignment, f"unknown section {section!r} (have: {', '.join(raw)})")
    if section != "model" and name not in section_keys(section):
        raise OverrideError(assignment, f"unknown key {section}.{name} (have: {', '.join(section_keys(section))})")
    raw[section][name] = _parse_value(assignment, value.strip())
    return section, name


def _special_kind(path: Path) -> str | None:
    """What ``path`` is when it is neither a regular file nor a folder (a FIFO would block the read
    for good), else None; a packaged recipe inside an archive is no file system path and is a file."""
    from ..video import special_file_kind

    if not isinstance(path, Path):
        return None
    try:
        return special_file_kind(path.stat().st_mode)
    except FileNotFoundError:
        return None  # said below, as the reader finds it
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None


def _read_recipe(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a recipe (give a recipe's name or its .toml file)")
    kind = _special_kind(path)
    if kind:
        raise ConfigError(f"{path}: {kind}, not a recipe file")
    try:
        # utf-8-sig: a byte-order mark (Windows editors add one) is dropped, not "Invalid statement".
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe") from None
    except PermissionError:
        raise ConfigError(f"{path}: recipe not readable (permission denied)") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a TOML recipe (not UTF-8 text: invalid byte at offset {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None
    except OSError as exc:  # an I/O error, a name too long, a loop of links: the file cannot be read
        raise ConfigError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None


# ----------------------------------------------------------------------------------------------- building

def _build_model(values: Mapping[str, Any], origins: Origins) -> ModelSection:
    from ..models import available_models, make_settings

    name = values.get("name", DEFAULT_MODEL)
    where = origins.get(("model", "name"), "config")
    if name not in available_models():
        raise ConfigError(f"{where}: model.name = {name!r}: expected one of {', '.join(available_models())}")
    try:
        settings = make_settings(name, {k: v for k, v in values.items() if k != "name"})
    except SettingError as exc:
        raise ConfigError(f"{origins.get(('model', exc.key), where)}: {exc}") from None
    return ModelSection(name, settings)


def _build(raw: Raw, origins: Origins) -> TrainingConfig:
    """The typed config of merged raw sections: every value checked, naming its origin."""
    model = _build_model(raw["model"], origins)
    sections = {}
    for section, cls in SECTIONS.items():
        try:
            sections[section] = build_record(cls, raw[section], section=section)
        except SettingError as exc:
            raise ConfigError(f"{origins.get((section, exc.key), 'config')}: {exc}") from None
    _check_effective_lr(sections["train"], origins)
    _check_warmup(sections["train"], origins)
    sections["data"] = _fit_video_slots(model, sections["data"], origins)
    return TrainingConfig(model=model, **sections)


def _check_warmup(cfg: TrainSection, origins: Origins) -> None:
    """A warm-up longer than the run never reaches the rate the run asks for (and one of 1e308 epochs
    overflowed when counted in steps, in the first batch). Zero-shot (``epochs = 0``) takes no step: a
    recipe's warm-up does not keep it from running."""
    if cfg.epochs and cfg.warmup_epochs > cfg.epochs:
        where = origins.get(("train", "warmup_epochs"), "config")
        raise ConfigError(f"{where}: train.warmup_epochs = {cfg.warmup_epochs:g}: expected at most train.epochs "
                          f"({cfg.epochs}): a longer warm-up never reaches the full learning rate")


def _fit_video_slots(model: ModelSection, data: DataSection, origins: Origins) -> DataSection:
    """A model with a fixed number of video slots (``model.max_feats``, the bilm models) refused a longer
    clip only in its first batch: said here, for a model that reads video at all. Where nothing gives
    ``data.max_steps``, it is the model's slots (its default, 15, is the LSTMs')."""
    from ..models.registry import model_streams

    slots = getattr(model.settings, "max_feats", None)
    if slots is None or data.max_steps <= slots or not model_streams(model.name):
        return data
    if ("data", "max_steps") not in origins:
        return replace(data, max_steps=slots)
    # The override that made them clash, if one did: a recipe's own pair is consistent.
    named = [origins[("data", "max_steps")], origins.get(("model", "max_feats"), "")]
    where = next((w for w in named if w.startswith("override")), named[0])
    raise ConfigError(f"{where}: data.max_steps = {data.max_steps}: expected at most model.max_feats ({slots}): "
                      f"{model.name} reads at most {slots} video steps per question")


def _check_effective_lr(cfg: TrainSection, origins: Origins) -> None:
    """The batch-size rule may multiply a valid rate past :data:`MAX_LR` (Adam's float32 state overflows)."""
    rates = effective_lr(cfg)
    if max(rates.lr, rates.head_lr) > MAX_LR:
        where = origins.get(("train", "lr_scaling"), "config")
        raise ConfigError(f"{where}: train.lr_scaling = {cfg.lr_scaling!r} at batch {cfg.batch_size} (reference "
                          f"{cfg.lr_reference_batch}) makes the learning rate {max(rates.lr, rates.head_lr):g}: "
                          f"expected at most {MAX_LR:g} (lower train.lr or train.head_lr)")


def load_config(path: str | os.PathLike | None = None, overrides: Sequence[str] = ()) -> TrainingConfig:
    """The config of recipe ``path`` (a packaged recipe's name or a TOML file; None: the defaults) with
    ``overrides`` (``section.key=value``) applied, checked before anything runs.

    Raises :class:`ConfigError` (a bad recipe or value, naming key, origin and allowed values) or
    :class:`OverrideError` (a malformed override)."""
    from ..recipes import UnknownRecipeError, resolve_recipe

    raw, origins = _empty_raw(), {}
    if path is not None:
        try:
            path = resolve_recipe(path)
        except UnknownRecipeError as exc:
            raise ConfigError(str(exc)) from None
        _merge(raw, origins, _read_recipe(path), str(path))
    for assignment in overrides:
        origins[apply_override(raw, assignment)] = f"override {assignment!r}"
    return _build(raw, origins)


def config_from_dict(config: Mapping, *, origin: str = "config", overrides: Sequence[str] = ()) -> TrainingConfig:
    """The typed config of a nested dict (:meth:`TrainingConfig.to_dict`, a saved run's, or one built
    by hand), with ``overrides`` applied; errors name ``origin``."""
    raw, origins = _empty_raw(), {}
    _merge(raw, origins, config, origin)
    for assignment in overrides:
        origins[apply_override(raw, assignment)] = f"override {assignment!r}"
    return _build(raw, origins)


def as_config(config: TrainingConfig | Mapping) -> TrainingConfig:
    """``config`` as a :class:`TrainingConfig`: a nested dict (the form of earlier releases) is checked."""
    return config if isinstance(config, TrainingConfig) else config_from_dict(config)


def check_device(name: str, origin: str = "device") -> None:
    """Refuse a device name training does not know (before torch.device's own RuntimeError)."""
    problem = device_problem(name)
    if problem:
        raise ConfigError(f"{origin} = {problem}")
