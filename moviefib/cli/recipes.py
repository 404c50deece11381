"""``moviefib recipes list`` and ``moviefib recipes show NAME``: the training recipes shipped in the package."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_INVALID, EXIT_OK, EXIT_USAGE, CLIError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "recipes", help="list and show the packaged training recipes",
        description="The training recipes shipped inside the package (moviefib/recipes/<name>.toml): "
                    "`moviefib train NAME` trains one from any folder; `show` prints one to copy and edit.")
    sub = parser.add_subparsers(dest="recipes_command", metavar="ACTION")
    parser.set_defaults(func=lambda args: _usage(parser))
    lst = sub.add_parser("list", help="the recipes' names, each with what it trains")
    lst.set_defaults(func=_list)
    show = sub.add_parser("show", help="print the recipe NAME (TOML)")
    show.add_argument("name", metavar="NAME")
    show.set_defaults(func=_show)


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _list(args) -> int:
    from ..recipes import list_recipes, recipe_summary

    names = list_recipes()
    width = max(map(len, names), default=0)
    for name in names:
        print(f"{name:{width}s}  {recipe_summary(name)}")
    return EXIT_OK


def _show(args) -> int:
    from ..recipes import UnknownRecipeError, list_recipes, recipe_text

    try:
        text = recipe_text(args.name)
    except UnknownRecipeError:  # its message offers a .toml path, which `show` does not take
        raise CLIError(f"unknown recipe {args.name!r}; packaged recipes: {', '.join(list_recipes())}",
                       EXIT_INVALID) from None
    sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK
