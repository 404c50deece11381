"""Training recipes shipped inside the package, found by name (as open_clip's ``model_configs``).

Each ``<name>.toml`` here is one recipe: the paper's five baselines, the references (majority,
context lookup, MiniLM) and those added since. ``moviefib train NAME`` and ``load_config(NAME)`` read
them from wherever the package is installed; a path to a ``.toml`` file works too.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

SUFFIX = ".toml"


class UnknownRecipeError(ValueError):
    """A recipe name that is neither a packaged recipe nor an existing ``.toml`` file."""


def _folder():
    return resources.files(__name__)


def list_recipes() -> list[str]:
    """The names of the packaged recipes, sorted."""
    return sorted(p.name[: -len(SUFFIX)] for p in _folder().iterdir() if p.name.endswith(SUFFIX))


def recipe_path(name: str) -> Path:
    """The file of the packaged recipe ``name``; :class:`UnknownRecipeError` lists the valid names."""
    entry = _folder() / f"{name}{SUFFIX}"
    if "/" in name or os.sep in name or not entry.is_file():
        raise UnknownRecipeError(f"unknown recipe {name!r}; packaged recipes: {', '.join(list_recipes())} "
                                 f"(or give the path of a {SUFFIX} file)")
    return Path(str(entry))


def recipe_text(name: str) -> str:
    """The TOML text of the packaged recipe ``name`` (:class:`UnknownRecipeError` for another name)."""
    return recipe_path(name).read_text(encoding="utf-8")


def recipe_summary(name: str) -> str:
    """The first line of the packaged recipe ``name``'s opening comment ("" when it has none): each
    recipe opens with a comment saying what it trains, which ``moviefib recipes list`` shows."""
    for line in recipe_text(name).splitlines():
        if line.strip():
            return line.strip()[1:].strip() if line.lstrip().startswith("#") else ""
    return ""


def resolve_recipe(name_or_path: str | os.PathLike) -> Path:
    """A recipe's file from its name or its path: a path (one with a folder or a ``.toml`` suffix) is
    taken as it is and left for the reader to check; any other string is a packaged recipe's name."""
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith(SUFFIX) or "/" in text or os.sep in text:
        return Path(text)
    return recipe_path(text)
