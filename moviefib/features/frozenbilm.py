"""FrozenBiLM's feature file beside the store: one ``torch.save``d dict of clip id -> features, exported
from a store and imported into one.

**The file** (FrozenBiLM's ``extract/merge_features.py`` writes it, ``datasets/videoqa_dataset.py`` reads
it with ``torch.load`` as ``features[video_id]``): a plain ``dict``; each key the clip id, for LSMDC the
FIB files' first column (their merge takes each per-clip ``<clip>.avi.npy`` file name less its 8-character
suffix), the ids a moviefib store of LSMDC clips is keyed by; each value a float16 tensor ``[T, D]``, one
row per second of the clip, D = 768 for their CLIP ViT-L/14 features (``--features_dim``). The file holds
no timestamps and no provenance. Their dataset reads at most ``max_feats`` = 10 rows of a clip (rows
``floor(j * T / 10)``, j < 10, of a longer one) and pads a shorter one with zeros; a clip missing from
the dict is read as one zero row.

**Export** writes every clip of a store in its order, its rows as stored (float16, contiguous), through
a temporary file renamed into place. **Import** reads the file with ``torch.load(weights_only=True)``
(a pickle of anything but tensors and plain containers is refused, never run) and checks every clip:
a string key that can be a clip id, a floating-point tensor of rank 2, at least one row (``skip_empty``
leaves empty clips out instead, see below), finite values within float16's range, one feature size
for all clips, that of the preset named. The store records the preset, the file it came from and the
timestamp rule:

**Timestamps of an import**: row i is at ``i`` s from the clip start, the time FFmpeg gives output
frame i of its ``fps=1`` filter, which FrozenBiLM's ``extract/video_loader.py`` decodes through, and
the time the ``frozenbilm_clip`` preset stores (:class:`moviefib.video.FpsFilter`): a store imported
from their file and one extracted here from the same clip agree row for row. The frame of row i is the
one on screen at ``i + 0.5`` s (the filter, round=near, keeps the last frame starting before it):
frames 12, 37, 62 of a 25 fps clip, 14, 44, 74 of a 30 fps one, measured with FFmpeg 8 (PyAV's) and
the ``ffmpeg`` 5.1 command; the FFmpeg their runs used is not recorded. (:mod:`moviefib.features.npy`
puts rows of files without timestamps at ``(i + 0.5) * step``, the centres of video_features' steps.)

**Empty clips**: FFmpeg gives ``round(d)`` frames for a clip of d seconds, so none under 0.5 s, and
their extraction then saves a ``[0, 768]`` array. (A clip of one frame, 0.5 to 1.5 s, is not saved at
all: ``extract.py``'s ``squeeze()`` leaves its ``[1, 3, 224, 224]`` with 3 dimensions, which it skips,
so their file lacks the clip, where a store extracted here holds its one row.) A store holds no clip
without steps: such a clip is an error naming it, or, with ``skip_empty``, left out (training then
treats it as any clip without features, as their loader reads it as zero padding).

**How the ``frozenbilm_clip`` preset differs from their extraction** (FFmpeg ``fps=1``, short side scaled
to 224, centre crop 224, CLIP mean/std, OpenAI CLIP's ``encode_image`` in float16 on CUDA, saved float16):

* frames and count: the same. The preset's sampler (``ffmpeg-fps:1``, :class:`moviefib.video.FpsFilter`)
  reproduces the filter, checked frame for frame against FFmpeg at 24, 25, 29.97 and 30 fps, streams
  starting at 0 and at 0.54 s, and lengths from one frame to 4 s (tests/test_video_fps_filter.py). A
  clip cut from a whole movie (a segment) is filtered as the clip of its frames [start, end); FFmpeg's
  own input cut (``-ss S -to E``) gave one more last step in 10 of 18 cuts measured.
* resize: both scale with FFmpeg's bicubic scaler (the preset in the decoder, ``--short-side 224``);
  FFmpeg's long side is truncated (537 for 1920x800) where the decoder rounds it to even (538), and
  torchvision's centre crop rounds its offset where FFmpeg's crop truncates it: under a pixel.
* normalisation: theirs divides by ``std + 1e-8``: a relative difference under 1e-7.
* precision: theirs runs OpenAI's float16 weights; the preset runs transformers' port of the same weights
  in float32 on CPU, float16 autocast on CUDA. Both store float16; neither L2-normalises.
* at most 10 rows: a store holds every row, as their file does; moviefib's training (``max_steps``)
  takes ``round(linspace(0, T - 1, 10))`` at test time, not their ``floor(j * T / 10)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..fileio import TORCH_LOAD_ERRORS, atomic_output, torch_load_problem
from .store import open_store, write_store

# Seconds between rows of FrozenBiLM's features (their extraction's ``framerate=1``).
STEP_SECONDS = 1.0
TIMESTAMP_RULE = ("row i at i s from the clip start: FFmpeg's time for output frame i of its fps=1 filter "
                  "(round=near), which keeps the last frame starting before i + 0.5 s")
_FLOAT16_MAX = float(np.finfo(np.float16).max)


class FrozenBiLMFileError(ValueError):
    """A FrozenBiLM feature file that cannot be read or holds something that is not a clip's features."""


@dataclass(frozen=True, kw_only=True)
class ExportSummary:
    """What :func:`export_frozenbilm` wrote: clips, rows (features) in all, the feature size."""

    clips: int
    rows: int
    dim: int


@dataclass(frozen=True, kw_only=True)
class ImportSummary:
    """What :func:`import_frozenbilm` wrote: clips, the feature size, and the clips left out empty."""

    clips: int
    dim: int
    skipped: tuple[str, ...]


def export_frozenbilm(store_path: str | os.PathLike, out: str | os.PathLike) -> ExportSummary:
    """Write the store's clips as FrozenBiLM's feature file: ``{clip_id: float16 tensor [T, D]}`` saved
    with ``torch.save`` to a temporary file renamed to ``out`` (a failed write leaves ``out`` as it
    was). Raises :class:`~moviefib.features.store.StoreError` for a bad store, OSError when ``out``
    cannot be written."""
    import torch

    features: dict[str, torch.Tensor] = {}
    rows = 0
    with open_store(store_path) as store:
        dim = store.dim
        for clip_id, feats, _ in store.items():
            # Their loader indexes rows and calls .float(): a contiguous float16 tensor per clip, its
            # own storage (a view into one big buffer would tie every clip's memory together).
            features[clip_id] = torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float16))
            rows += len(feats)
    with atomic_output(out) as tmp:
        torch.save(features, tmp)
    return ExportSummary(clips=len(features), rows=rows, dim=dim)


def read_frozenbilm(path: str | os.PathLike) -> dict:
    """The dict a FrozenBiLM feature file holds, loaded with ``weights_only=True`` on the CPU; its
    values are not checked yet (:func:`import_frozenbilm` does). FrozenBiLMFileError naming the file
    when it is not a readable torch file of a non-empty dict."""
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise FrozenBiLMFileError(f"{path}: not a file torch.load reads with weights_only=True "
                                  f"({torch_load_problem(exc)})") from None
    if not isinstance(obj, dict):
        raise FrozenBiLMFileError(f"{path}: holds a {type(obj).__name__}, not a dict of clip id -> features "
                                  "(FrozenBiLM's merge_features.py saves one dict)")
    if not obj:
        raise FrozenBiLMFileError(f"{path}: an empty dict, no clip to import")
    return obj


def _clip_features(path: Path, key, value) -> np.ndarray | None:
    """The features of one entry as an array ``[T, D]`` (float16, float32 or float64), or None for a
    clip without rows; FrozenBiLMFileError naming the file and the clip when the entry is not a clip's
    features."""
    import torch

    from ..formats import id_problem

    if not isinstance(key, str):
        raise FrozenBiLMFileError(f"{path}: key {key!r} is of type {type(key).__name__}, not a clip id string")
    problem = id_problem(key, allow_slash=True)
    if problem is not None:
        raise FrozenBiLMFileError(f"{path}: clip {key!r}: {problem}")
    try:
        key.encode("utf-8")  # the store's ids are UTF-8: a lone surrogate failed in h5py, naming no file
    except UnicodeEncodeError:
        raise FrozenBiLMFileError(f"{path}: clip {key!r}: not valid Unicode (a lone surrogate)") from None
    where = f"{path}: clip {key}"
    if not isinstance(value, torch.Tensor):
        raise FrozenBiLMFileError(f"{where}: a {type(value).__name__}, not a tensor of features")
    # A sparse, nested or meta tensor has no dense rows to read (their shape, isfinite or nonzero raise).
    if value.layout != torch.strided or value.is_nested or value.device.type != "cpu":
        kind = "nested" if value.is_nested else value.device.type if value.device.type != "cpu" else value.layout
        raise FrozenBiLMFileError(f"{where}: a {kind} tensor, not a dense one of features")
    value = value.detach()  # a saved Parameter: its values only
    if not value.dtype.is_floating_point:
        raise FrozenBiLMFileError(f"{where}: features of dtype {value.dtype}, expected floating point")
    if value.ndim != 2 or value.shape[1] == 0:
        raise FrozenBiLMFileError(f"{where}: features of shape {list(value.shape)}, expected [T, D]")
    if value.shape[0] == 0:
        return None
    if value.dtype not in (torch.float16, torch.float32, torch.float64):  # bfloat16: numpy has none
        value = value.to(torch.float32)
    bad = (~torch.isfinite(value)).any(dim=1).nonzero()
    if len(bad):
        raise FrozenBiLMFileError(f"{where}: row {int(bad[0])} holds NaN or infinite values")
    if value.dtype != torch.float16 and float(value.abs().max()) > _FLOAT16_MAX:
        raise FrozenBiLMFileError(f"{where}: values beyond float16's range (|x| > 65504), which a store "
                                  "(float16) cannot hold")
    return value.detach().cpu().numpy()


def _checked_clips(path: Path, entries: dict, *, dim: int, preset: str, skip_empty: bool
                   ) -> tuple[list[tuple[str, np.ndarray]], list[str]]:
    """Every clip of the file checked (:func:`_clip_features`, one width for all, the preset's), before
    anything is written: ``(clip_id, features)`` in the file's order, and the empty clips left out."""
    clips: list[tuple[str, np.ndarray]] = []
    skipped: list[str] = []
    for key, value in entries.items():
        feats = _clip_features(path, key, value)
        if feats is None:
            if not skip_empty:
                raise FrozenBiLMFileError(
                    f"{path}: clip {key} has no rows (FrozenBiLM's extraction gives none for a clip under "
                    "0.5 s); pass --skip-empty to leave such clips out")
            skipped.append(key)
            continue
        if clips and feats.shape[1] != clips[0][1].shape[1]:
            raise FrozenBiLMFileError(f"{path}: clip {key}: {feats.shape[1]}-d features, but clip "
                                      f"{clips[0][0]} has {clips[0][1].shape[1]}-d ones")
        if feats.shape[1] != dim:
            raise FrozenBiLMFileError(f"{path}: clip {key}: {feats.shape[1]}-d features, but preset {preset} "
                                      f"makes {dim}-d ones")
        clips.append((key, feats))
    if not clips:
        raise FrozenBiLMFileError(f"{path}: every clip is empty ({len(skipped)} left out); no store written")
    return clips, skipped


def import_frozenbilm(path: str | os.PathLike, out: str | os.PathLike, *, preset: str = "frozenbilm_clip",
                      skip_empty: bool = False) -> ImportSummary:
    """Build a store at ``out`` (atomically) from FrozenBiLM's feature file ``path``, its clips in the
    file's order, timestamped by :data:`TIMESTAMP_RULE`, its provenance that of ``preset`` (whose
    feature size every clip must have) and of the file.

    A clip without rows is an error unless ``skip_empty`` (then it is left out and listed in the
    summary). Raises FrozenBiLMFileError naming the file (and the clip), KeyError for an unknown
    preset, OSError when ``out`` cannot be written; nothing is written then.
    """
    from .presets import get_preset

    path = Path(path)
    recipe = get_preset(preset)
    clips, skipped = _checked_clips(path, read_frozenbilm(path), dim=recipe.dim, preset=recipe.name,
                                    skip_empty=skip_empty)
    prov = {"extractor": recipe.extractor, "preset": recipe.name, "kind": recipe.kind, "dim": recipe.dim,
            "imported_from": f"FrozenBiLM feature file ({path})", "step_seconds": STEP_SECONDS,
            "timestamps": TIMESTAMP_RULE, "stored_dtype": "float16"}
    items = ((key, feats, np.arange(len(feats), dtype=np.float64) * STEP_SECONDS) for key, feats in clips)
    n = write_store(out, items, prov)
    return ImportSummary(clips=n, dim=recipe.dim, skipped=tuple(skipped))
