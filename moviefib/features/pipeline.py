"""The extraction pipeline: clips -> decoded, sampled, preprocessed steps -> model -> a feature store.

Decoding and preprocessing run in DataLoader worker processes, overlapped with the model in the main
process. Each worker takes every n-th clip and packs the steps of its clips into batches of
``batch_size`` steps (across clip and window boundaries), so a 3D model sees full batches even on
2-second clips.

On a GPU, given a preprocess in two halves (:class:`~moviefib.features.transforms.FramePreprocess`),
the workers stop at uint8 (resize + crop) and the main process normalises on the device after the
transfer: a quarter of the bytes of float32 through shared memory, pinning and PCIe (a batch of 32 I3D
windows of 64 frames is 0.3 GB in uint8, 1.2 GB in float32). The main process then also runs with 2 torch
threads, so that it leaves the cores to the decode workers (these defaults, and the others of a run,
are :class:`~moviefib.features.settings.ExtractSettings`). Copies run on their own CUDA stream, and one
batch stays in flight (its features are read back after the next batch is queued), so the device has
the next batch before it finishes the current one. On the CPU the workers normalise too (in
parallel with the model), and the threads are left alone.

Crash safety. Finished clips are written every few seconds as a *staged file* in ``<out>.staging/``
(a ``.npz`` written under a temporary name, synced and renamed: a staged file exists whole or not at
all), next to ``run.json`` (the settings) and ``manifest.json`` (the staged files and their clips,
rewritten atomically). At the end everything is packed into the HDF5 store ``<out>`` (written to a
temporary name, then renamed) and the staging folder is removed. Killed at any moment and rerun with
the same settings, a run keeps the clips of every staged file and of an existing store at ``<out>``,
and extracts only the rest (interrupted with Ctrl-C, it first stages the clips it has finished).
While a run lasts it holds ``<out>.lock`` (a ``flock``, which dies with the process), so a second run
on the same output stops at once instead of racing it. Clips that cannot be processed (missing, empty,
undecodable, no step, cut short) go into ``<out>.failures.jsonl`` with their reason; the run goes on.
A rerun that does not try an earlier run's failed clips again (``--limit``, fewer clips) keeps their
records in the manifest; a clip it tries replaces its record with the new outcome.

Source identity. Every staged and stored clip records its video file's identity
(:class:`~moviefib.integrity.SourceIdentity`: size, modification time, a hash of the first and last
64 KiB). A rerun compares it with the file now: same size and time, or a new time and the same hash (a
copied dataset), the clip is kept; otherwise the file was repaired or replaced and the clip is redone
(counted in ``redone``). A clip whose file is absent now keeps its features. Clips of a store written
before the records (format version 1) or of its staged files carry no identity: they are trusted, and
get the identity of the file as it is now when the run repacks the store.

Length check. Once a clip is decoded, its decoded duration (first frame to the end of the last) is
compared with its expected one by :func:`moviefib.integrity.judge_duration`: the extracted end - start
of its LSMDC row (clip files and movie segments alike, so a segment past the movie's end is short), or
for a file of ``--folder`` its header's, but only when the container declares more bytes than the
file holds (:func:`~moviefib.integrity.container_shortfall`): a whole file whose header promises more
frames than it holds is taken to have a lying header (a counted warning), not to be cut. A clip clearly
short is a failure, with both durations; with ``allow_partial`` it is kept, marked partial in the store.
A clip between the two thresholds of the tolerance is kept with a counted warning.

Sharding: ``shard=(i, n)`` (0-based i) processes every n-th clip of the sorted clip list and writes
``<stem>.shard-<i>-of-<n><suffix>``; :func:`moviefib.features.store.merge_stores` joins the shards.
Under ``torchrun`` the shard comes from ``RANK``/``WORLD_SIZE`` (see :func:`shard_from_env`).

The modules, by concern: :mod:`~moviefib.features.sources` (clip sources and sharding),
:mod:`~moviefib.features.workers` (decode, sample, preprocess, batch, judge each clip's length),
:mod:`~moviefib.features.stream` (the model loop and the assembly of finished clips),
:mod:`~moviefib.features.staging` (staging, resume and packing), :mod:`~moviefib.features.provenance`,
:mod:`~moviefib.features.outcome` (failures and the summary), :mod:`~moviefib.features.settings`,
:mod:`~moviefib.features.npy` (video_features' .npy files) and :mod:`~moviefib.features.check`. This
module runs them (:func:`extract`) and re-exports the names scripts import from it.
"""


from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..fileio import exclusive_lock
from ..integrity import SourceIdentity
from ..video import Sampling, require_backend
from .npy import export_npy, import_npy, npy_key
from .outcome import (
    LOGGER,
    ExtractSummary,
    Failure,
    failure_kind,
    failures_path,
    first_names,
    kept_failures,
    log_outcome,
    write_failures,
)
from .provenance import OtherSettingsError, make_provenance, settings_diff, settings_fingerprint
from .settings import ExtractSettings, SettingsError, default_main_threads, splits_preprocess
from .sources import (
    VIDEO_SUFFIXES,
    ClipSource,
    clips_from_folder,
    clips_from_lsmdc,
    parse_shard,
    precheck,
    shard_clips,
    shard_from_env,
    shard_path,
)
from .staging import Staging, changed_sources, pack, resume
from .store import ClipRecord
from .stream import ClipAssembler, run_batches
from .workers import iter_batches, judge_clip

__all__ = [
    "VIDEO_SUFFIXES", "ClipSource", "ExtractSettings", "ExtractSummary", "Failure", "OtherSettingsError",
    "SettingsError",
    "clips_from_folder", "clips_from_lsmdc", "default_main_threads", "default_sampling", "export_npy",
    "extract", "failure_kind", "import_npy", "iter_batches", "judge_clip", "make_provenance", "npy_key",
    "parse_shard", "settings_diff", "shard_from_env", "shard_path", "splits_preprocess",
]

log = logging.getLogger(LOGGER)
_SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(ExtractSettings))


@dataclass(frozen=True)
class _Plan:
    """What a run has to do, once the finished clips of earlier runs are known."""

    clips: list[ClipSource]  # every clip of this shard
    todo: list[ClipSource]  # the clips to extract now
    staging: Staging
    done_before: dict[str, ClipRecord | None]  # finished by earlier runs
    changed: frozenset[str]  # finished clips whose video file changed since: redone
    refreshed: dict[str, SourceIdentity]  # kept clips whose source record is updated on packing

    @property
    def reused(self) -> int:
        return len(self.clips) - len(self.todo)


def extract(clips: Iterable[ClipSource], out: str | os.PathLike, extractor, sampling: Sampling, *,
            settings: ExtractSettings | None = None, preset: str | None = None,
            on_start: Callable[[int, int], None] | None = None,
            on_clip: Callable[[str, bool], None] | None = None, **overrides) -> ExtractSummary:
    """Extract features of ``clips`` into the store ``out`` (or its shard file), resumably.

    ``extractor`` is a :class:`moviefib.features.registry.Extractor` (already on the settings' device).
    ``settings``: how the run goes (:class:`~moviefib.features.settings.ExtractSettings`; None: its
    defaults), its open fields resolved for the device, the launch and the extractor. ``overrides``:
    fields of it by name (``batch_size=8``), replacing those of ``settings``, as the keyword arguments of
    earlier releases were given. ``preset``: the preset's name, recorded in the provenance.
    ``on_start(total, reused)`` is called once the finished clips of earlier runs are known and
    ``on_clip(clip_id, ok)`` as each clip finishes or fails (for progress bars).
    Raises :class:`~moviefib.features.settings.SettingsError` (a ValueError) for a setting out of range,
    ValueError for a sampling the extractor cannot read whole (windows for a 2D model), ValueError when
    ``out`` or its staging folder holds features made with other settings (unless ``overwrite``),
    :class:`~moviefib.fileio.LockHeldError` when another live process is extracting into the same file,
    and :class:`~moviefib.video.DecoderUnavailableError` (before any clip is tried) when the decoder
    cannot run here.
    """
    from .registry import check_sampling

    t_start = time.perf_counter()
    settings = _with_overrides(settings, overrides).resolved(extractor)
    check_sampling(extractor.name, extractor.kind, sampling, window=extractor.window)
    require_backend(settings.backend)
    all_clips = shard_clips(clips, settings.shard)
    out = shard_path(out, settings.shard)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Two runs on one output would delete each other's temporary files and redo each other's clips.
    with exclusive_lock(out.with_name(out.name + ".lock"),
                        what=f"{out} is being written by another extraction; to run several at once, "
                             f"give each its own output or shard (--shard i/N)"):
        prov = _provenance(extractor, sampling, preset, settings)
        plan = _plan(out, all_clips, prov, overwrite=settings.overwrite)
        if on_start:
            on_start(len(plan.clips), plan.reused)
        assembler = _extract_todo(plan, extractor, sampling, settings, on_clip)
        manifest, kept = _record_failures(out, plan, assembler)
        output = pack(out, plan.staging, prov, len(plan.clips), settings.overwrite,
                      superseded=plan.changed, refreshed=plan.refreshed)
        return ExtractSummary(str(output) if output else None, len(plan.clips), assembler.extracted,
                              plan.reused, tuple(assembler.failures), str(manifest) if manifest else None,
                              assembler.steps, time.perf_counter() - t_start, redone=len(plan.changed),
                              partial=assembler.partial, warnings=tuple(assembler.warnings),
                              failures_kept=kept)


def default_sampling(extractor) -> Sampling:
    """The sampling of a built extractor without a preset (:func:`~moviefib.features.registry.native_sampling`
    with the extractor's own window and frame rate)."""
    from .registry import native_sampling

    return native_sampling(extractor.kind, window=extractor.window, fps=extractor.fps)


def _with_overrides(settings: ExtractSettings | None, overrides: dict) -> ExtractSettings:
    unknown = sorted(set(overrides) - _SETTINGS_FIELDS)
    if unknown:
        raise TypeError(f"extract() got an unexpected keyword argument {unknown[0]!r}")
    return dataclasses.replace(settings or ExtractSettings(), **overrides)


def _provenance(extractor, sampling: Sampling, preset: str | None, settings: ExtractSettings) -> dict:
    prov = make_provenance(extractor, sampling, preset=preset, device=settings.device, amp=settings.amp,
                           backend=settings.backend, short_side=settings.short_side)
    if settings.shard is not None:
        prov["shard"] = f"{settings.shard[0]}/{settings.shard[1]}"
    return prov


def _plan(out: Path, clips: list[ClipSource], prov: dict, *, overwrite: bool) -> _Plan:
    """Resume: the clips earlier runs finished, those whose file changed since, and the rest to do."""
    staging, done_before = resume(out, settings_fingerprint(prov), overwrite=overwrite)
    changed, refreshed = changed_sources(clips, done_before)
    todo = [c for c in clips if c.clip_id not in done_before or c.clip_id in changed]
    plan = _Plan(clips, todo, staging, done_before, frozenset(changed), refreshed)
    if changed:
        log.info("%s: %d finished clips have a changed video file (repaired or replaced): extracting "
                 "them again (first: %s)", out, len(changed), first_names(sorted(changed)))
    log.info("%s: %d clips, %d already done, %d to extract", out, len(clips), plan.reused, len(todo))
    return plan


def _extract_todo(plan: _Plan, extractor, sampling: Sampling, settings: ExtractSettings,
                  on_clip: Callable[[str, bool], None] | None) -> ClipAssembler:
    """Extract the clips of ``plan.todo``; returns the assembler that holds the outcome."""
    # Clips without a file or with an id unfit for a store fail here, once, not in the workers.
    prefailed, todo = precheck(plan.todo)
    assembler = ClipAssembler(todo, plan.staging, stage_seconds=settings.stage_seconds, on_clip=on_clip)
    for f in prefailed:
        assembler.failures.append(f)
        if on_clip:
            on_clip(f.clip_id, False)
    run_batches(todo, extractor, sampling, settings, assembler)
    return assembler


def _record_failures(out: Path, plan: _Plan, assembler: ClipAssembler) -> tuple[Path | None, int]:
    """Write the failure manifest (this run's failures and the earlier ones still standing) and log the
    outcome; returns the manifest (None when no record holds) and how many earlier records it kept."""
    path = failures_path(out)
    tried = {c.clip_id for c in plan.todo}
    kept = kept_failures(path, tried=tried, finished=set(plan.done_before) | set(plan.staging.done()))
    manifest = write_failures(path, assembler.failures + kept)
    log_outcome(out, len(plan.clips), assembler.failures, assembler.warnings, assembler.partial,
                manifest, len(kept))
    return manifest, len(kept)
