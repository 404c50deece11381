"""A non-editable install, used as a user would: a wheel of the checkout, installed without its
dependencies into a folder of its own, run from a folder outside the checkout.

The dependencies (torch, pyarrow...) come from the test's own environment through PYTHONPATH, but
``moviefib`` itself from the installed copy (asserted), so only what the wheel carries is there: the
recipes must be package data, found by name, for ``moviefib train text_only`` to work.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Overrides of the install's training run: one epoch of a small model (dropout, batch_norm and the
# rest stay the recipe's, so the saved config shows whether the recipe was read).
TRAIN_SETTINGS = ["train.epochs=1", "train.threads=1", "model.emb_dim=16", "model.hidden=16"]

pytestmark = pytest.mark.slow


def _parse(value: str):
    return tomllib.loads(f"v = {value}")["v"]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The folder the wheel was installed into (``--target``: the package and ``bin/moviefib``)."""
    work = tmp_path_factory.mktemp("install")
    # Built from a copy: pip builds in the source tree, and build/ or *.egg-info in the checkout would
    # be shared with anything else running there.
    src = work / "src"
    src.mkdir()
    shutil.copy2(ROOT / "pyproject.toml", src)
    shutil.copy2(ROOT / "README.md", src)
    shutil.copytree(ROOT / "moviefib", src / "moviefib", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(work / "wheel"),
                    str(src)], check=True, capture_output=True, timeout=300)
    wheels = list((work / "wheel").glob("moviefib-*.whl"))
    assert len(wheels) == 1, wheels
    site = work / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheels[0])],
                   check=True, capture_output=True, timeout=300)
    return site


def _run(site: Path, cwd: Path, *argv: str) -> subprocess.CompletedProcess:
    """The installed ``moviefib`` script, from ``cwd``, with the package from ``site`` first on the path."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([str(site / "bin" / "moviefib"), *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture()
def outside(tmp_path) -> Path:
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    assert ROOT not in cwd.parents
    return cwd


def test_the_installed_copy_is_the_one_imported(installed, outside):
    env = {**os.environ, "PYTHONPATH": str(installed)}
    where = subprocess.run([sys.executable, "-c", "import moviefib; print(moviefib.__file__)"], cwd=outside,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(installed), where


def test_recipes_list_and_show_from_outside_the_checkout(installed, outside):
    from moviefib.recipes import list_recipes, recipe_summary

    listed = _run(installed, outside, "recipes", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [f"{n:{max(map(len, list_recipes()))}s}  {recipe_summary(n)}"
                                          for n in list_recipes()]
    shown = _run(installed, outside, "recipes", "show", "text_only")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout == (installed / "moviefib" / "recipes" / "text_only.toml").read_text(encoding="utf-8")
    assert shown.stdout == (ROOT / "moviefib" / "recipes" / "text_only.toml").read_text(encoding="utf-8")


def _check_saved_config(run: Path, recipe: dict, overrides: dict[str, object]) -> None:
    """The run's saved config holds every key of ``recipe`` with its value, except those overridden."""
    saved = json.loads((run / "metrics.json").read_text())["config"]
    for section, values in recipe.items():
        for key, value in values.items():
            if f"{section}.{key}" not in overrides:
                assert saved[section][key] == value, (section, key)
    for dotted, value in overrides.items():
        section, key = dotted.split(".", 1)
        assert saved[section][key] == value, dotted


def _train(site: Path, cwd: Path, recipe: str) -> tuple[Path, dict[str, object]]:
    """``moviefib train RECIPE`` on the toy dataset, one epoch; (the run folder, the overrides given)."""
    from test_train import write_toy

    toy = write_toy(cwd / "toy")
    run = cwd / "run"
    proc = _run(site, cwd, "train", recipe, "--dataset", str(toy / "dataset"), "--out", str(run), "--device", "cpu",
                "--no-progress", *(a for s in TRAIN_SETTINGS for a in ("--set", s)))
    assert proc.returncode == 0, proc.stderr
    overrides = {"data.dataset": str(toy / "dataset"), "train.out_dir": str(run), "train.device": "cpu",
                 "train.progress": False}
    return run, {**overrides, **{s.split("=")[0]: _parse(s.split("=")[1]) for s in TRAIN_SETTINGS}}


def test_train_by_name_from_outside_the_checkout(installed, outside):
    pytest.importorskip("torch")
    run, overrides = _train(installed, outside, "text_only")
    recipe = tomllib.loads((installed / "moviefib" / "recipes" / "text_only.toml").read_text(encoding="utf-8"))
    assert recipe["model"]["dropout"] == 0.5 and "batch_norm" in recipe["model"]  # what the check covers
    _check_saved_config(run, recipe, overrides)


def test_train_from_a_recipe_path_from_outside_the_checkout(installed, outside):
    pytest.importorskip("torch")
    mine = outside / "mine.toml"  # a user's copy of a packaged recipe, edited
    mine.write_text(_run(installed, outside, "recipes", "show", "text_only").stdout.replace(
        "dropout = 0.5", "dropout = 0.25"), encoding="utf-8")
    run, overrides = _train(installed, outside, "mine.toml")
    recipe = tomllib.loads(mine.read_text(encoding="utf-8"))
    assert recipe["model"]["dropout"] == 0.25
    _check_saved_config(run, recipe, overrides)
