"""The extractor registry: a name gives a model with its preprocessing, feature size and provenance.

Model families live in their own modules (``models_2d``, ``models_3d``, ``models_i3d``...) and register
factories with :func:`register_extractor`, each with its :class:`ExtractorMeta`: what the extractor
makes (kind, feature size, layer, window, frame rate, input size, weights), declared once, as timm's
pretrained configs are. The factory builds from that record, the presets read their feature size and
decode size from it, and :func:`extractor_meta` answers without building a model. The families are
imported on the first call of :func:`list_extractors`, :func:`extractor_meta` or
:func:`create_extractor` (they import torch), so importing this module does not import torch.

A factory is called as ``factory(weights=..., **options)`` with ``weights`` one of ``"default"``, ``None``
(random init) or a :class:`pathlib.Path`, and returns an :class:`Extractor` on the CPU in eval mode;
:func:`create_extractor` moves it to the requested device.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..video import Sampling

log = logging.getLogger(__name__)

# Modules whose import registers extractors; an optional family whose dependency is missing still
# registers its names, and fails only when created (so `list_extractors` shows what exists).
_FAMILY_MODULES = (
    "moviefib.features.models_2d",
    "moviefib.features.models_3d",
    "moviefib.features.models_i3d",
    "moviefib.features.models_pytorchvideo",
)

_REGISTRY: dict[str, _Registered] = {}
_loaded = False

Weights = Literal["default"] | None | str | os.PathLike


class UnknownExtractorError(KeyError):
    """An extractor name that is not registered; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


# Where an extractor's default weights come from (the part of ExtractorMeta.weights before the colon).
WEIGHTS_SOURCES = ("torchvision", "package-index", "pytorchvideo", "transformers", "file")


@dataclass(frozen=True, kw_only=True)
class ExtractorMeta:
    """What an extractor makes, declared once at its registration and read without building it.

    Values are those of the factory's default options; an option may change some of them (C3D's
    ``layer``, a 3D model's ``window``, CLIP's ``model_name``), and the built :class:`Extractor` then
    says what it is.

    Fields:
        kind: ``"2d"`` (one feature per frame) or ``"3d"`` (one feature per window of frames).
        dim: feature size.
        layer: what the feature is (recorded as the provenance's ``layer``).
        weights: where ``weights="default"`` comes from, ``<source>:<id>`` with source one of
            :data:`WEIGHTS_SOURCES`: ``torchvision:<weights enum name>``, ``package-index:<name in
            moviefib.features.weights.SOURCES>``, ``pytorchvideo:<hub builder>``,
            ``transformers:<model name>``, or ``file:<the file to pass>`` when nothing can be downloaded.
        resize: the preprocessing's resize, a short side (aspect kept) or ``(h, w)``.
        input_size: the centre crop the model sees, a side or ``(h, w)``.
        window: frames per window (1 for 2D).
        fps: frame rate the model was trained at, or None (windows of native frames).
        description: one line for listings.
    """

    kind: Literal["2d", "3d"]
    dim: int
    layer: str
    weights: str
    resize: int | tuple[int, int]
    input_size: int | tuple[int, int]
    window: int = 1
    fps: float | None = None
    description: str = ""

    def __post_init__(self):
        if self.kind not in ("2d", "3d"):
            raise ValueError(f"extractor kind must be '2d' or '3d', not {self.kind!r}")
        if self.dim < 1 or self.window < 1:
            raise ValueError(f"extractor dim and window must be >= 1, not {self.dim} and {self.window}")
        if self.kind == "2d" and (self.window != 1 or self.fps is not None):
            raise ValueError("a 2D extractor has window 1 and no frame rate")
        if self.weights_source not in WEIGHTS_SOURCES or not self.weights_id:
            raise ValueError(f"extractor weights {self.weights!r}: expected <source>:<id> with source one "
                             f"of {', '.join(WEIGHTS_SOURCES)}")

    @property
    def weights_source(self) -> str:
        return self.weights.partition(":")[0]

    @property
    def weights_id(self) -> str:
        return self.weights.partition(":")[2]

    @property
    def decode_short_side(self) -> int:
        """The short side to have the decoder scale frames to: the preprocessing's own, so that it
        then only crops (much cheaper than resizing full frames in torch)."""
        return self.resize if isinstance(self.resize, int) else min(self.resize)

    @property
    def default_sampling(self) -> Sampling:
        """How steps are taken when nothing else says (see :func:`native_sampling`)."""
        return native_sampling(self.kind, window=self.window, fps=self.fps)


def native_sampling(kind: str, *, window: int, fps: float | None) -> Sampling:
    """The one rule for steps taken when nothing else says: every frame for a 2D model, back-to-back
    windows of ``window`` frames at the model's own frame rate ``fps`` for a 3D one (an extractor built
    with options passes its own window and fps, which may differ from its record's)."""
    from ..video import EveryKth, Windows

    return EveryKth(1) if kind == "2d" else Windows(window, fps=fps)


def check_sampling(name: str, kind: str, sampling: Sampling, *, window: int = 1) -> None:
    """ValueError for a sampling extractor ``name`` (of ``kind``, its own window ``window``) cannot read
    whole: a 2D model reads one frame per step, so windows of several frames would be cut to their first;
    a 3D model reads windows, so steps of one frame would each be a clip of one frame (both silently,
    before)."""
    from ..video import Windows, sampling_to_dict

    frames = sampling.window if isinstance(sampling, Windows) else 1
    if kind == "2d" and frames > 1:
        raise ValueError(f"extractor {name!r} is 2D and reads one frame per step; sampling "
                         f"{sampling_to_dict(sampling)} gives windows of {frames} frames: use "
                         f"windows:1,fps=F, every:K, uniform:N or ffmpeg-fps:F")
    if kind == "3d" and frames == 1:
        raise ValueError(f"extractor {name!r} is 3D and reads windows of frames ({window} for its weights); "
                         f"sampling {sampling_to_dict(sampling)} gives one frame per step: use "
                         f"windows:{window}[,fps=F][,stride=S]")


@dataclass(frozen=True)
class _Registered:
    factory: Callable[..., Extractor]
    meta: ExtractorMeta


@dataclass(frozen=True)
class Extractor:
    """A ready-to-run feature extractor.

    Fields:
        name: registry name (``"i3d"``, ``"googlenet"``...).
        kind: ``"2d"`` (one feature per frame) or ``"3d"`` (one feature per window of frames).
        model: ``torch.nn.Module`` in eval mode. Input: float ``[B, 3, H, W]`` (2D) or
            ``[B, 3, T, H, W]`` (3D), as produced by ``preprocess`` and stacked; output ``[B, dim]``.
        preprocess: picklable callable (safe to send to DataLoader workers). Input: uint8 tensor
            ``[T, H, W, 3]`` (RGB frames as decoded). Output: float ``[T, 3, h, w]`` for 2D (one row
            per frame) or ``[3, T, h, w]`` for 3D (one window).
        dim: feature size.
        window: frames per 3D window (1 for 2D models).
        fps: frame rate the model was trained at, if it has one (sample windows at it); else None.
        classify: callable ``features [B, dim] -> logits [B, C]`` (a ``torch.nn.Module``), or None when
            the model has no classifier for these features (random init, or a layer with no head).
        labels: class names of ``classify``'s output, or None.
        provenance: JSON-serialisable dict: extractor, layer, weights id, sha256 (``"random-init"`` when
            not pretrained), normalisation, resize, crop, window, library versions.
    """

    name: str
    kind: Literal["2d", "3d"]
    model: Any
    preprocess: Callable[[Any], Any]
    dim: int
    window: int = 1
    fps: float | None = None
    classify: Any = None
    labels: list[str] | None = None
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.kind not in ("2d", "3d"):
            raise ValueError(f"extractor {self.name!r}: kind must be '2d' or '3d', not {self.kind!r}")
        if self.kind == "2d" and self.window != 1:
            raise ValueError(f"extractor {self.name!r}: a 2D extractor has window 1, not {self.window}")


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shape a feature (for provenance records).

    Read from the installed distributions' metadata, not from imported modules, so the answer does
    not depend on what this process happened to import before (a resumed extraction compares it).
    A library that is not installed is left out.
    """
    import importlib.metadata as md
    import platform

    from .. import __version__

    versions = {"moviefib": __version__, "python": platform.python_version()}
    for dist in ("numpy", "torch", "torchvision", "av"):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions


def register_extractor(name: str, *, meta: ExtractorMeta):
    """Decorator registering ``factory(weights=..., **options) -> Extractor`` under ``name``, with the
    record of what it makes."""
    if not isinstance(meta, ExtractorMeta):
        raise TypeError(f"extractor {name!r}: meta must be an ExtractorMeta, not {type(meta).__name__}")

    def decorate(factory: Callable[..., Extractor]) -> Callable[..., Extractor]:
        known = _REGISTRY.get(name)
        if known is not None and known.factory is not factory:
            raise ValueError(f"extractor {name!r} is already registered by {known.factory.__module__}")
        _REGISTRY[name] = _Registered(factory, meta)
        return factory

    return decorate


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    for module in _FAMILY_MODULES:
        importlib.import_module(module)
    _loaded = True


def list_extractors() -> list[str]:
    """All registered extractor names, sorted."""
    _load_families()
    return sorted(_REGISTRY)


def _registered(name: str) -> _Registered:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownExtractorError(
            f"unknown extractor {name!r}; valid names: {', '.join(sorted(_REGISTRY))}") from None


def extractor_meta(name: str) -> ExtractorMeta:
    """The record of extractor ``name`` (nothing is built); UnknownExtractorError listing the valid
    names otherwise. Imports the model families, hence torch."""
    return _registered(name).meta


def build_extractor(name: str, meta: ExtractorMeta, *, model: Any, preprocess: Any, weights_id: str,
                    digest: str, window: int | None = None, dim: int | None = None,
                    layer: str | None = None, classify: Any = None, labels: list[str] | None = None,
                    versions: dict | None = None, **more_provenance) -> Extractor:
    """The :class:`Extractor` a factory returns, its kind, size, window, frame rate and provenance
    taken from ``meta``; ``window``, ``dim`` and ``layer`` are given when an option changed them.

    The provenance holds extractor, layer, weights, sha256, dim, (3D) window and fps when there is one,
    ``more_provenance``, the preprocessing's description and the library versions (``versions``:
    these plus the family's own library).
    """
    window = meta.window if window is None else window
    dim = meta.dim if dim is None else dim
    provenance = {"extractor": name, "layer": meta.layer if layer is None else layer,
                  "weights": weights_id, "sha256": digest, "dim": dim}
    if meta.kind == "3d":
        provenance["window"] = window
    if meta.fps is not None:
        provenance["fps"] = meta.fps
    provenance.update(more_provenance)
    provenance.update(preprocess.describe())
    provenance["versions"] = library_versions() if versions is None else versions
    return Extractor(name=name, kind=meta.kind, model=model, preprocess=preprocess, dim=dim,
                     window=window, fps=meta.fps, classify=classify, labels=labels, provenance=provenance)


def _normalise_weights(weights: Weights) -> str | None | Path:
    if weights is None or weights == "default":
        return weights
    if isinstance(weights, (str, os.PathLike)):
        path = Path(weights).expanduser()
        if not path.exists():  # a file, or a folder for transformers models
            raise FileNotFoundError(f"weights file not found: {path}")
        return path
    raise TypeError(f"weights must be 'default', None or a path, not {type(weights).__name__}")


# Random initialisation draws from this seed, so every process of a sharded run (and every rerun that
# resumes a store) builds the same network: shards of one store must hold features of one model.
RANDOM_INIT_SEED = 0


def _random_init(name: str, factory: Callable[..., Extractor], options: dict) -> Extractor:
    import torch

    log.warning("extractor %s: random initialisation (no pretrained weights, seed %d)", name, RANDOM_INIT_SEED)
    with torch.random.fork_rng(devices=[]):  # the caller's own random stream is left as it was
        torch.manual_seed(RANDOM_INIT_SEED)
        extractor = factory(weights=None, **options)
    extractor.provenance["random_init_seed"] = RANDOM_INIT_SEED
    return extractor


def create_extractor(name: str, *, weights: Weights = "default", device: str = "cpu",
                     memory_format: Literal["channels_last", "contiguous"] = "channels_last",
                     **options) -> Extractor:
    """Build extractor ``name`` with its preprocessing, in eval mode, on ``device``.

    ``weights``: ``"default"`` (the library's own download, or the moviefib weights cache for weights
    that come from the package index), ``None`` (random init from :data:`RANDOM_INIT_SEED`, recorded as
    such in the provenance), or a
    path to a local weights file. ``options`` are family-specific (e.g. ``layer="fc7"`` for C3D).
    ``memory_format``: "channels_last" (default; faster by measurement, see ``hub.ChannelsLast``) wraps
    the model so it converts its input itself; "contiguous" leaves the model as built.

    Raises :class:`UnknownExtractorError` for an unknown name (listing the valid ones),
    :class:`moviefib.features.weights.WeightsUnavailableError` when default weights cannot be had
    (offline), ``FileNotFoundError`` for a missing weights path, ``ValueError`` for bad options.
    """
    factory = _registered(name).factory
    resolved = _normalise_weights(weights)
    if resolved is None:
        extractor = _random_init(name, factory, options)
    else:
        extractor = factory(weights=resolved, **options)
    if memory_format not in ("channels_last", "contiguous"):
        raise ValueError(f"memory_format must be 'channels_last' or 'contiguous', not {memory_format!r}")
    if memory_format == "channels_last":
        from .hub import ChannelsLast

        extractor = replace(extractor, model=ChannelsLast(extractor.model, 4 if extractor.kind == "2d" else 5))
    extractor.provenance["memory_format"] = memory_format
    extractor.model.eval()
    if device != "cpu":
        extractor.model.to(device)
        if extractor.classify is not None:
            extractor.classify.to(device)
    return extractor
