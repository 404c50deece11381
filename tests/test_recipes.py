"""Recipes as package data (moviefib.recipes): found by name, listed and shown by ``moviefib recipes``.

The install itself (a wheel, used from outside the checkout) is tested in test_install.py.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from moviefib.cli import EXIT_INVALID, EXIT_OK, EXIT_USAGE, main
from moviefib.recipes import (
    UnknownRecipeError,
    list_recipes,
    recipe_path,
    recipe_summary,
    recipe_text,
    resolve_recipe,
)

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "moviefib" / "recipes"
# The paper's five baselines and the three references: the demo and the README name these.
SHIPPED = {"majority", "context_lookup", "minilm", "text_only", "text_2d", "text_3d", "text_2d3d",
           "text_2d3d_early"}


def test_every_toml_of_the_folder_is_listed_by_name():
    assert list_recipes() == sorted(p.stem for p in FOLDER.glob("*.toml"))
    assert SHIPPED <= set(list_recipes())


@pytest.mark.parametrize("name", list_recipes())
def test_a_recipe_trains_the_model_it_is_named_after_and_says_what_it_is(name):
    assert recipe_path(name) == FOLDER / f"{name}.toml"
    assert tomllib.loads(recipe_text(name))["model"]["name"] == name
    # the one line `moviefib recipes list` shows: the opening comment, not cut inside a sentence
    summary = recipe_summary(name)
    assert summary and summary.endswith((".", ")")), summary
    assert recipe_text(name).startswith(f"# {summary}\n")


@pytest.mark.parametrize("name", sorted(SHIPPED - {"minilm"}))  # minilm's settings need its extra
def test_every_recipe_is_a_valid_config(name):
    pytest.importorskip("torch")
    from moviefib.train import load_config

    load_config(name)  # validated at load: a recipe with a bad key or value raises here


@pytest.mark.parametrize("bad", ["nope", "text_only.json", "../recipes/text_only", ""])
def test_an_unknown_name_lists_the_packaged_ones(bad):
    with pytest.raises(UnknownRecipeError, match="packaged recipes: context_lookup, majority"):
        recipe_path(bad)


def test_a_path_is_taken_as_a_path_and_a_name_as_a_packaged_recipe(tmp_path):
    mine = tmp_path / "mine.toml"
    assert resolve_recipe(mine) == mine and resolve_recipe(str(mine)) == mine
    assert resolve_recipe("text_only") == FOLDER / "text_only.toml"
    assert resolve_recipe("runs/text_only.toml") == Path("runs/text_only.toml")  # a path, checked by its reader


def test_cli_list_prints_each_name_with_its_summary(capsys):
    assert main(["recipes", "list"]) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list_recipes()
    for line, name in zip(lines, list_recipes()):
        assert line.split(None, 1)[1] == recipe_summary(name)


def test_cli_show_prints_the_recipe_file(capsys):
    assert main(["recipes", "show", "text_2d3d"]) == EXIT_OK
    assert capsys.readouterr().out == (FOLDER / "text_2d3d.toml").read_text(encoding="utf-8")


def test_cli_show_of_an_unknown_name_is_one_line_listing_the_names(capsys):
    assert main(["recipes", "show", "text_4d"]) == EXIT_INVALID
    out, err = capsys.readouterr()
    assert not out and len(err.strip().splitlines()) == 1
    assert "unknown recipe 'text_4d'" in err and ", ".join(list_recipes()) in err and "Traceback" not in err


def test_cli_recipes_without_an_action_is_a_usage_error(capsys):
    assert main(["recipes"]) == EXIT_USAGE
    assert "list" in capsys.readouterr().err


def test_cli_train_of_an_unknown_name_is_one_line_listing_the_names(tmp_path, capsys):
    pytest.importorskip("torch")
    assert main(["train", "text_4d", "--dataset", str(tmp_path), "--out", str(tmp_path / "run")]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown recipe 'text_4d'" in err
    assert ", ".join(list_recipes()) in err
    assert not (tmp_path / "run").exists()
