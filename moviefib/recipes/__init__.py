"""Training recipes shipped inside the package, found by name (as open_clip's ``model_configs``).

Each ``<name>.toml`` here is one recipe: the paper's five baselines, the references (majority,
context lookup, MiniLM) and those added since. ``moviefib train NAME`` and ``load_config(NAME)`` read
them from wherever the package is installed (a zip archive too); a path to a ``.toml`` file works too.

Which one a string means is decided by its form, never by the files of the current folder: text with
a folder separator or a ``.toml`` suffix (any case) is a path; any other text is a packaged recipe's
name, even when a file of that name is in the current folder (``./NAME`` trains that file).
"""

from __future__ import annotations

import os
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

SUFFIX = ".toml"


class UnknownRecipeError(ValueError):
    """A recipe name that is neither a packaged recipe nor an existing ``.toml`` file."""


def _folder() -> Traversable:
    return resources.files(__name__)


def list_recipes() -> list[str]:
    """The names of the packaged recipes, sorted."""
    return sorted(p.name[: -len(SUFFIX)] for p in _folder().iterdir() if p.name.endswith(SUFFIX))


def recipe_path(name: str) -> Traversable:
    """The file of the packaged recipe ``name``; :class:`UnknownRecipeError` lists the valid names.

    A :class:`~pathlib.Path` when the package is installed as files; inside a zip archive, the
    archive's member (a :class:`~importlib.resources.abc.Traversable`: ``read_text``, ``is_file``,
    no file of its own on disk). A name is matched exactly against :func:`list_recipes`, not looked
    up on disk: ``TEXT_ONLY`` is not ``text_only`` on a case-insensitive file system either, and a
    name too long for a file name is just unknown."""
    if name not in list_recipes():
        raise UnknownRecipeError(f"unknown recipe {name!r}; packaged recipes: {', '.join(list_recipes())} "
                                 f"(or give the path of a {SUFFIX} file){_local_file_hint(name)}")
    return _folder() / f"{name}{SUFFIX}"


def _local_file_hint(name: str) -> str:
    """A name that is also a file of the current folder: say how to train that file instead."""
    here = bool(name) and os.path.isfile(name)  # False, not an error, for a NUL byte or a name too long
    return f"; a file {name!r} is in the current folder: give it as ./{name} to train it" if here else ""


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


def _is_path(text: str) -> bool:
    """Whether ``text`` is a path (a folder separator or a ``.toml`` suffix, any case) rather than a name."""
    return text.lower().endswith(SUFFIX) or "/" in text or os.sep in text


def resolve_recipe(name_or_path: str | os.PathLike | Traversable) -> Traversable:
    """A recipe's file from its name or its path (see the module's docstring for which is which).

    A path is returned as a :class:`~pathlib.Path` once the system can look it up: a missing one (or
    one below a file) is :class:`UnknownRecipeError` naming it, as is one the system refuses to look
    up (a name too long, a loop of links); a folder or a file that is not TOML is left for the reader
    to refuse. A packaged recipe's entry (:func:`recipe_path`) is returned as it is."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return name_or_path  # a packaged recipe's entry inside a zip archive, from recipe_path
    text = os.fspath(name_or_path)
    if isinstance(name_or_path, os.PathLike) or _is_path(text):
        return _existing(Path(text))
    return recipe_path(text)


def _existing(path: Path) -> Path:
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        named = path.name[: -len(SUFFIX)] if path.name.lower().endswith(SUFFIX) else None
        hint = f" (the packaged recipe is named {named!r})" if named in list_recipes() else ""
        raise UnknownRecipeError(f"{path}: no such recipe{hint}") from None
    except ValueError:  # an embedded NUL byte
        raise UnknownRecipeError(f"{str(path)!r}: no such recipe (a NUL byte in the path)") from None
    except OSError as exc:
        raise UnknownRecipeError(f"{path}: recipe cannot be read ({exc.strerror})") from None
    return path
