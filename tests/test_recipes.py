"""Recipes as package data (moviefib.recipes): found by name, listed and shown by ``moviefib recipes``.

The install itself (a wheel, used from outside the checkout) is tested in test_install.py.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
import zipfile
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
    with pytest.raises(UnknownRecipeError, match="packaged recipes: " + re.escape(", ".join(list_recipes()))):
        recipe_path(bad)


def test_a_path_is_taken_as_a_path_and_a_name_as_a_packaged_recipe(tmp_path):
    mine = tmp_path / "mine.toml"
    mine.write_text("[model]\nname = 'majority'\n")
    assert resolve_recipe(mine) == mine and resolve_recipe(str(mine)) == mine
    assert resolve_recipe("text_only") == FOLDER / "text_only.toml"
    (tmp_path / "folder.toml").mkdir()  # a path that is there: what it holds is for its reader to check
    assert resolve_recipe(tmp_path / "folder.toml") == tmp_path / "folder.toml"
    with pytest.raises(UnknownRecipeError, match=r"^runs/text_only.toml: no such recipe"):  # a path, not a name
        resolve_recipe("runs/text_only.toml")


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


# ------------------------------------------------------------------------- hostile names and paths

LONG = "a" * 300  # longer than a file name may be (255 bytes): the system refuses to look it up


@pytest.mark.parametrize("bad", [LONG, "TEXT_ONLY", "text_only ", "a\x00b", ".", "..", "__init__", "__pycache__"])
def test_a_name_is_matched_against_the_list_not_looked_up_on_disk(bad):
    with pytest.raises(UnknownRecipeError, match="packaged recipes: " + re.escape(", ".join(list_recipes()))):
        recipe_path(bad)


def test_cli_show_of_a_name_too_long_for_a_file_is_one_line(capsys):
    assert main(["recipes", "show", LONG]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unknown recipe 'aaa" in err and "Traceback" not in err


def test_which_one_wins_is_decided_by_the_form_of_the_text_not_by_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "text_only").write_text("[model]\nname = 'majority'\n")
    (tmp_path / "mine.TOML").write_text("[model]\nname = 'majority'\n")
    assert resolve_recipe("text_only") == FOLDER / "text_only.toml"  # a name, even beside a file of that name
    assert resolve_recipe("./text_only") == Path("./text_only")
    assert resolve_recipe("mine.TOML") == Path("mine.TOML")  # the suffix in any case makes a path


def test_an_unknown_name_that_is_a_file_here_says_how_to_give_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myrecipe").write_text("[model]\nname = 'majority'\n")
    with pytest.raises(UnknownRecipeError, match=r"give it as \./myrecipe"):
        resolve_recipe("myrecipe")
    with pytest.raises(UnknownRecipeError) as refused:
        resolve_recipe("other")
    assert "current folder" not in str(refused.value)


def test_a_missing_toml_named_after_a_packaged_recipe_names_the_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UnknownRecipeError, match=r"text_only.toml: no such recipe \(the packaged recipe is "
                                                 r"named 'text_only'\)"):
        resolve_recipe("text_only.toml")


def _loop(tmp_path: Path) -> Path:
    (tmp_path / "a.toml").symlink_to(tmp_path / "b.toml")
    (tmp_path / "b.toml").symlink_to(tmp_path / "a.toml")
    return tmp_path / "a.toml"


@pytest.mark.parametrize("make, reason", [
    (lambda tmp: _loop(tmp), "recipe cannot be read (Too many levels of symbolic links)"),
    (lambda tmp: tmp / f"{LONG}.toml", "recipe cannot be read (File name too long)"),
    (lambda tmp: (tmp / "file").touch() or tmp / "file" / "x.toml", "no such recipe"),
])
def test_a_path_the_system_cannot_look_up_is_refused_naming_it(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(UnknownRecipeError, match=re.escape(f"{path}: {reason}")):
        resolve_recipe(str(path))


def test_cli_train_of_a_path_the_system_cannot_look_up_is_one_line(tmp_path, capsys):
    pytest.importorskip("torch")
    loop = _loop(tmp_path)
    assert main(["train", str(loop), "--dataset", str(tmp_path), "--out", str(tmp_path / "run")]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"{loop}: recipe cannot be read" in err, err


ZIPPED = """
import sys, moviefib
from moviefib.recipes import list_recipes, recipe_summary, recipe_text, resolve_recipe
from moviefib.training.config import load_config
assert ".zip" in moviefib.__file__, moviefib.__file__
print(recipe_summary("text_3d"))
print(resolve_recipe("text_only").read_text(encoding="utf-8") == recipe_text("text_only"))
print(load_config("text_only").model.name)
"""


def test_recipes_are_read_from_a_zip_archive_of_the_package(tmp_path):
    """A zip-safe layout: importlib.resources gives archive members, not files (no Path(str(entry)))."""
    archive = tmp_path / "moviefib.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted((ROOT / "moviefib").rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                zipped.write(path, path.relative_to(ROOT).as_posix())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(archive), *sys.path[1:]])}
    done = subprocess.run([sys.executable, "-c", ZIPPED], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [recipe_summary("text_3d"), "True", "text_only"]
