"""The typed training config: each section a frozen record, each model's settings declared at its
registration, everything checked once at load (naming key, origin and allowed values), and the nested
dict of metrics.json and checkpoints read back to the same config."""

from __future__ import annotations

import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from moviefib.models import (  # noqa: E402
    TRAINER_SETTINGS,
    ModelSettings,
    available_models,
    model_settings,
    registered,
)
from moviefib.recipes import list_recipes, recipe_path  # noqa: E402
from moviefib.training.config import (  # noqa: E402
    SECTIONS,
    ConfigError,
    OverrideError,
    TrainingConfig,
    config_from_dict,
    load_config,
)
from moviefib.training.rules import KINDS, RULE, Rule, record_dict, record_keys, rule_of  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# A value of the wrong type for each kind of rule (as a --set value).
WRONG = {"int": '"many"', "number": '"fast"', "bool": '"yes"', "str": "3"}


def _section_keys():
    return [(section, key) for section, cls in SECTIONS.items() for key in record_keys(cls)]


def _model_keys():
    return [(name, key) for name in available_models() for key in record_keys(registered(name).settings)]


# ----------------------------------------------------------------------------------------------- sections

@pytest.mark.parametrize("section, cls", SECTIONS.items())
def test_each_section_is_a_frozen_record_of_ruled_fields(section, cls):
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    record = cls()
    for f in dataclasses.fields(cls):
        rule = f.metadata[RULE]
        assert isinstance(rule, Rule) and rule.kind in KINDS, f.name
        assert rule.problem(f.name, getattr(record, f.name)) is None, f.name  # the default keeps its rule
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.__setattr__(dataclasses.fields(cls)[0].name, None)


@pytest.mark.parametrize("section, key", _section_keys(), ids=lambda v: str(v))
def test_a_wrong_type_is_refused_naming_key_origin_and_allowed_values(section, key):
    rule = rule_of(SECTIONS[section], key)
    assignment = f"{section}.{key}={WRONG[rule.kind]}"
    with pytest.raises(ConfigError) as err:
        load_config("text_only", [assignment])
    message = str(err.value)
    assert message.startswith(f"override {assignment!r}: {section}.{key} = "), message
    assert message.endswith(f"expected {rule.allowed()}"), message


def test_a_recipe_value_is_refused_naming_the_recipe_file(tmp_path):
    recipe = tmp_path / "mine.toml"
    recipe.write_text('[model]\nname = "text_2d"\nhidden = 2.5\n[data]\ntop_k = 0\n')
    with pytest.raises(ConfigError, match=r"mine\.toml: model\.hidden = 2\.5: expected an integer >= 1"):
        load_config(recipe)
    with pytest.raises(ConfigError, match=r"mine\.toml: data\.top_k = 0: expected an integer >= 1"):
        load_config(recipe, ["model.hidden=4"])  # an override mends the recipe's value; the next one is named
    assert load_config(recipe, ["model.hidden=4", "data.top_k=3"]).model.settings.hidden == 4


def test_unknown_keys_are_refused_listing_the_known_ones(tmp_path):
    with pytest.raises(OverrideError, match=r"unknown key data\.topk \(have: dataset, train_split"):
        load_config(None, ["data.topk=3"])
    recipe = tmp_path / "r.toml"
    recipe.write_text("[features]\n4d = 'x'\n")
    with pytest.raises(ConfigError, match=r"r\.toml: unknown key features\.4d \(have: dir, 2d, 3d\)"):
        load_config(recipe)


def test_typed_fields_hold_typed_values():
    config = load_config("minilm", ["train.lr=1", "features.2d=my_2d", "data.dataset=folder"])
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)  # a number is kept as a float
    assert config.train.classifier_lr == 1e-3  # the recipe's head_lr
    assert config.features.presets() == {"2d": "my_2d", "3d": "paper_3d"}
    assert config.data.dataset == "folder" and config.model.name == "minilm"
    assert config.model.settings.freeze_embeddings is True  # from the recipe
    assert load_config(None).train.classifier_lr == load_config(None).train.lr


# ----------------------------------------------------------------------------------------------- models

def test_only_a_model_registered_as_reading_answers_gets_the_answer_words():
    from moviefib.models import create_model

    model = create_model("text_only", n_answers=2, vocab_size=5, video_dims={}, answers=["door", "car"], emb_dim=4,
                         hidden=4)
    assert "answers" not in model.model_config  # its checkpoints stay as they were
    assert not registered("text_only").reads_answers


@pytest.mark.parametrize("name", available_models())
def test_each_model_declares_its_settings_at_registration(name):
    entry = registered(name)
    cls = entry.settings
    assert issubclass(cls, ModelSettings) and cls.__dataclass_params__.frozen
    assert model_settings(name) == record_dict(cls())
    for f in dataclasses.fields(cls):
        assert isinstance(f.metadata[RULE], Rule), f.name
    # The constructor takes the trainer's values and the record: the defaults live in the record only;
    # the answer words only when registered as reading them.
    params = inspect.signature(entry.factory).parameters
    trainer = set(TRAINER_SETTINGS) if entry.reads_answers else set(TRAINER_SETTINGS) - {"answers"}
    assert set(params) == {*trainer, "settings"}
    assert all(p.kind is p.KEYWORD_ONLY for p in params.values())
    assert load_config(None, [f"model.name={name}"]).model.settings == cls()


@pytest.mark.parametrize("name, key", _model_keys(), ids=lambda v: str(v))
def test_a_wrong_model_setting_is_refused_naming_key_and_allowed_values(name, key):
    rule = rule_of(registered(name).settings, key)
    assignment = f"model.{key}={WRONG[rule.kind]}"
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"model.name={name}", assignment])
    message = str(err.value)
    assert message.startswith(f"override {assignment!r}: model.{key} = "), message
    assert message.endswith(f"expected {rule.allowed()}"), message


@pytest.mark.parametrize("name", available_models())
def test_a_setting_the_model_lacks_is_refused_listing_its_settings(name):
    have = ", ".join(record_keys(registered(name).settings)) or "none"
    with pytest.raises(ConfigError, match=rf"model\.nope: {name} has no such setting \(have: {have}\)"):
        load_config(None, [f"model.name={name}", "model.nope=1"])


def test_the_model_name_may_change_after_the_recipe():
    # text_2d's recipe sets batch_norm, which minilm does not take: the override's model is checked.
    with pytest.raises(ConfigError, match=r"text_2d\.toml: model\.emb_dim: minilm has no such setting"):
        load_config("text_2d", ["model.name=minilm"])
    assert load_config("text_2d", ["model.name=text_3d"]).model.name == "text_3d"


def test_models_registry_is_its_own_module():
    """models/__init__ defines nothing; no model module imports from the package it is part of."""
    import ast

    init = ast.parse((ROOT / "moviefib" / "models" / "__init__.py").read_text())
    assert not [n for n in init.body if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Assign))
                and not (isinstance(n, ast.Assign) and n.targets[0].id == "__all__")]
    for path in (ROOT / "moviefib" / "models").glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module is not None, f"{path.name} imports from its own package"


# ----------------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("name", list_recipes())
def test_every_recipe_round_trips_through_its_dict(name):
    config = load_config(name)
    saved = json.loads(json.dumps(config.to_dict()))  # as metrics.json and checkpoints hold it
    assert set(saved) == {"model", "data", "features", "train"}
    assert config_from_dict(saved) == config
    assert load_config(recipe_path(name)) == config


def test_a_saved_config_of_an_earlier_release_loads(compat_release):
    saved = json.loads((compat_release / "metrics.json").read_text())["config"]
    config = config_from_dict(saved)
    assert config.model.name == saved["model"]["name"] and config.train.lr == saved["train"]["lr"]
    again = config.to_dict()
    for section, values in saved.items():
        for key, value in values.items():
            assert again[section][key] == value, (section, key)


def test_a_partial_dict_takes_the_defaults_and_is_checked():
    config = config_from_dict({"model": {"name": "text_2d"}, "train": {"epochs": 3}})
    assert config == TrainingConfig(model=load_config(None, ["model.name=text_2d"]).model,
                                    train=dataclasses.replace(load_config(None).train, epochs=3))
    with pytest.raises(ConfigError, match=r"saved\.json: train\.epochs = -1: expected an integer >= 0"):
        config_from_dict({"train": {"epochs": -1}}, origin="saved.json")
    with pytest.raises(ConfigError, match=r"config: unknown section \[optim\]"):
        config_from_dict({"optim": {}})


# ----------------------------------------------------------------------------------------------- imports

_NO_TORCH = """
import sys
sys.modules["torch"] = None  # as in a core-only install
import moviefib.train as T
from moviefib.train import ConfigError, OverrideError, load_config
assert issubclass(OverrideError, ConfigError)
print("ok")
"""


def test_the_public_names_import_without_torch():
    run = subprocess.run([sys.executable, "-c", _NO_TORCH], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr


def test_every_public_name_of_moviefib_train_resolves():
    import moviefib.train as T

    for name in T.__all__:
        assert getattr(T, name) is not None, name
    for name in ("load_config", "train", "predict", "write_predictions", "read_checkpoint", "load_checkpoint",
                 "ConfigError", "OverrideError", "CheckpointError", "TrainResult", "SharedPermutation"):
        assert name in T.__all__
    with pytest.raises(AttributeError, match="Split"):
        T.Split  # noqa: B018  (dead code, gone)
