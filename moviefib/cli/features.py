"""``moviefib extract`` and ``moviefib features merge|import-npy|export-npy|import-frozenbilm|
export-frozenbilm|list``."""

from __future__ import annotations

import argparse
import os
import sys

from . import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError


def register(subparsers) -> None:
    _register_extract(subparsers)
    _register_features(subparsers)


def _register_extract(subparsers) -> None:
    ex = subparsers.add_parser(
        "extract", help="extract 2D/3D video features into a feature store (HDF5)",
        description="Decode clips, sample frames or windows, run an extractor, and write one feature "
                    "store. Crash-safe and resumable: rerun the same command after a crash or kill. "
                    "Inputs: --clips (an LSMDC description/FIB file or a dataset folder) with "
                    "--video-root, or --folder (a folder of video files).")
    what = ex.add_mutually_exclusive_group(required=True)
    what.add_argument("--preset", help="a named preset (see `moviefib features list`)")
    what.add_argument("--extractor", help="a registered extractor (with --sampling)")
    ex.add_argument("--sampling", help="every:K | uniform:N | windows:W[,fps=F][,stride=S][,last=pad|"
                                       "shift|drop] | ffmpeg-fps:F (FFmpeg's fps filter) (default: the preset's; "
                                       "every:1 / windows:WINDOW); bounded: "
                                       "K <= 100000, N <= 10000, W <= 1024, S <= 100000, F <= 1000")
    src = ex.add_mutually_exclusive_group(required=True)
    src.add_argument("--clips", metavar="FILE_OR_DATASET",
                     help="LSMDC description/FIB file, or a dataset folder: its distinct clip ids")
    src.add_argument("--folder", metavar="DIR", help="every video file under DIR (clip id = relative path)")
    ex.add_argument("--video-root", metavar="DIR",
                    help="with --clips: clip files at DIR/<movie>/<clip_id>.avi")
    ex.add_argument("--movies", action="store_true",
                    help="with --clips: DIR holds whole movies DIR/<movie>.<ext>, cut at each clip's "
                         "extracted start/end")
    ex.add_argument("-o", "--output", required=True, metavar="STORE.h5", help="the feature store to write")
    ex.add_argument("--weights", default="default",
                    help="'default' (pretrained), 'none' (random init) or a weights file")
    ex.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    ex.add_argument("--batch-size", type=int, default=None,
                    help="steps per forward pass (default: 4 for 2D, 2 for 3D on CPU, where small batches "
                         "run faster; 256/32 on GPU)")
    ex.add_argument("--workers", type=int, default=None,
                    help="decoding worker processes (default: CPU cores - 1 on CPU, all cores on GPU)")
    ex.add_argument("--decoder", default="pyav", choices=("pyav", "torchcodec"))
    ex.add_argument("--decode-threads", type=int, default=1, help="FFmpeg threads per worker")
    ex.add_argument("--short-side", type=int, default=None,
                    help="scale frames in the decoder to this short side (default: the preset's; 0: off)")
    ex.add_argument("--shard", help="i/N: process shard i (0-based) of N; default from torchrun's "
                                    "RANK/WORLD_SIZE (and --device cuda is then cuda:LOCAL_RANK)")
    ex.add_argument("--no-amp", action="store_true", help="no float16 autocast on GPU")
    ex.add_argument("--overwrite", action="store_true",
                    help="discard an existing store/staging made with other settings")
    ex.add_argument("--limit", type=int, default=None, help="only the first N clips (a quick try)")
    ex.add_argument("--check", type=int, nargs="?", const=3, default=0, metavar="N",
                    help="print the top classes of N clips (default 3) after extracting")
    ex.add_argument("--duration-tolerance", metavar="SHORT[,WARN]", default="0.5,0.9",
                    help="a clip decoding under SHORT of its expected length (its LSMDC row's extracted "
                         "end - start, or for --folder its header when the file is cut short), after "
                         "0.25 s of slack, fails; under WARN it is kept with a counted warning "
                         "(default 0.5,0.9)")
    ex.add_argument("--allow-partial", action="store_true",
                    help="keep clips that decode clearly short, marked partial in the store, instead of "
                         "failing them")
    ex.add_argument("--no-progress", action="store_true", help="no progress bar")
    ex.set_defaults(func=_extract)


def _register_features(subparsers) -> None:
    feats = subparsers.add_parser("features", help="feature stores: merge shards, npy and FrozenBiLM "
                                                    "import/export, list")
    sub = feats.add_subparsers(dest="features_command", metavar="ACTION", required=True)
    merge = sub.add_parser("merge", help="merge stores (e.g. shards) made with the same settings")
    merge.add_argument("output", metavar="OUT.h5")
    merge.add_argument("inputs", nargs="+", metavar="STORE.h5")
    merge.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5")
    merge.set_defaults(func=_merge)
    exp = sub.add_parser("export-npy", help="write per-clip .npy files in video_features' layout")
    exp.add_argument("store", metavar="STORE.h5")
    exp.add_argument("out_dir", metavar="DIR")
    exp.add_argument("--key", help="file key: <clip>_<key>.npy (default rgb for i3d, else the extractor)")
    exp.set_defaults(func=_export)
    imp = sub.add_parser("import-npy", help="build a store from video_features .npy files")
    imp.add_argument("in_dir", metavar="DIR")
    imp.add_argument("output", metavar="OUT.h5")
    imp.add_argument("--key", required=True, help="file key: reads <clip>_<key>.npy (e.g. rgb, resnet)")
    imp.add_argument("--step-seconds", type=float,
                     help="seconds per step, for files without <clip>_timestamps_ms.npy")
    imp.add_argument("--extractor", help="extractor name to record in the provenance: a registered one "
                                         "(see `moviefib features list`), or with --foreign any name")
    imp.add_argument("--foreign", action="store_true",
                     help="the --extractor name is another toolkit's: record it as given, unchecked "
                          "(without --foreign an unregistered name is refused as a likely typo)")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5")
    imp.set_defaults(func=_import)
    _register_frozenbilm(sub)
    lst = sub.add_parser("list", help="list feature presets and registered extractors")
    lst.set_defaults(func=_list)


def _register_frozenbilm(sub) -> None:
    exp = sub.add_parser("export-frozenbilm",
                         help="write a store as FrozenBiLM's feature file (a torch dict of clip id -> [T, D])")
    exp.add_argument("store", metavar="STORE.h5")
    exp.add_argument("output", metavar="OUT.pth")
    exp.add_argument("--overwrite", action="store_true", help="replace an existing OUT.pth")
    exp.set_defaults(func=_export_frozenbilm)
    imp = sub.add_parser("import-frozenbilm", help="build a store from FrozenBiLM's feature file",
                         description="Read a FrozenBiLM feature file (merge_features.py's clipvitl14.pth) with "
                                     "torch.load(weights_only=True); row i of a clip is timestamped i + 0.5 s.")
    imp.add_argument("input", metavar="FILE.pth")
    imp.add_argument("output", metavar="OUT.h5")
    imp.add_argument("--preset", default="frozenbilm_clip",
                     help="the preset the features are (recorded; its feature size is checked; default "
                          "frozenbilm_clip)")
    imp.add_argument("--skip-empty", action="store_true",
                     help="leave out clips without rows (FrozenBiLM's extraction gives none under 0.5 s) "
                          "instead of refusing the file")
    imp.add_argument("--overwrite", action="store_true", help="replace an existing OUT.h5")
    imp.set_defaults(func=_import_frozenbilm)


def _require(modules: tuple[str, ...], what: str) -> None:
    """One line naming the extra to install when a core-only install lacks ``modules``."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise CLIError(f"{what} needs {name}: pip install 'moviefib[features]'", EXIT_UNAVAILABLE) from None


def _output_file(path: str, flag: str) -> None:
    """Refuse an output path that cannot be a file: an existing folder, or under a file."""
    if os.path.isdir(path):
        raise CLIError(f"{flag} {path}: is a directory; give a file name (e.g. {os.path.join(path, 'out.h5')})")
    from ..video import special_file_kind

    # The store is written beside its name and renamed onto it: --overwrite on /dev/null (as root)
    # would replace the device itself, and a named pipe is not a store.
    kind = special_file_kind(os.stat(path).st_mode) if os.path.exists(path) else None
    if kind is not None:
        raise CLIError(f"{flag} {path}: is {kind}, not a regular file; choose another output")
    from ..fileio import file_in_the_way

    blocker = file_in_the_way(path)
    if blocker is not None:
        raise CLIError(f"cannot write {path} ({flag}): {blocker} is a file, not a folder")


def _output_lock(path: str):
    """The lock extraction holds on its output: a store written whole (merge, import-npy) onto the
    output of a running extraction was replaced by it when that run finished."""
    from ..fileio import exclusive_lock

    return exclusive_lock(f"{path}.lock", what=f"{path} is being written by another run (an extraction, "
                                               f"a merge or an import); wait for it or choose another output")


def _new_output_file(path: str, flag: str, *, overwrite: bool) -> None:
    """Refuse what :func:`_output_file` refuses, and an existing file unless ``overwrite``.

    merge and import-npy write their output whole: an existing store (another run's, or one of the
    inputs) would be replaced with no trace of what it held.
    """
    _output_file(path, flag)
    if os.path.exists(path) and not overwrite:
        raise CLIError(f"{flag} {path}: exists; pass --overwrite to replace it, or choose another name")


def _input_folder(path: str, flag: str) -> None:
    if not os.path.exists(path):
        raise CLIError(f"{flag} {path}: no such folder")
    if not os.path.isdir(path):
        raise CLIError(f"{flag} {path}: not a folder")


def duration_tolerance(text: str):
    """The ``--duration-tolerance`` flag (extraction and the human page judge clips alike)."""
    from ..integrity import DurationTolerance

    try:
        return DurationTolerance.parse(text)
    except ValueError as exc:
        raise CLIError(f"--duration-tolerance {text}: {exc} (ratios, e.g. 0.5,0.9)", EXIT_USAGE) from None


def _inputs(args):
    from ..features import pipeline

    try:
        if args.folder:
            if args.video_root or args.movies:
                raise CLIError("--video-root/--movies go with --clips, not --folder", EXIT_USAGE)
            _input_folder(args.folder, "--folder")
            return pipeline.clips_from_folder(args.folder)
        if not args.video_root:
            raise CLIError("--clips needs --video-root", EXIT_USAGE)
        _input_folder(args.video_root, "--video-root")
        return pipeline.clips_from_lsmdc(args.clips, args.video_root, movies=args.movies)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise CLIError(str(exc) if not exc.filename else f"{exc.filename}: {exc.strerror}") from None
    except ValueError as exc:  # FormatError, a clip id that would leave the video root, bad Parquet
        raise CLIError(str(exc)) from None


def _extract(args: argparse.Namespace) -> int:
    _require(("torch", "av", "h5py"), "feature extraction")
    from ..features import pipeline
    from ..video import backend_problem

    _check_counts(args)
    # Before any clip or model: without FFmpeg torchcodec would fail every clip with a long traceback.
    problem = backend_problem(args.decoder)
    if problem is not None:
        raise CLIError(f"--decoder {args.decoder}: {problem}", EXIT_UNAVAILABLE)
    tolerance = duration_tolerance(args.duration_tolerance)
    _output_file(args.output, "-o/--output")
    preset, name, options, sampling, short_side = _what_to_extract(args)
    settings = _settings(args, tolerance=tolerance, short_side=short_side)
    if sampling is not None:
        _check_sampling(name, options, sampling)
    clips = _inputs(args)
    if args.limit:
        clips = clips[: args.limit]
    extractor = _extractor(name, options, args.weights, settings.device, preset)
    summary = _run_extraction(args, clips, extractor, sampling or pipeline.default_sampling(extractor),
                              settings, preset.name if preset else None)
    _print_summary(summary)
    if args.check and summary.output:
        _print_check(summary.output, extractor, args.check, settings.device)
    return EXIT_PARTIAL if summary.failures else EXIT_OK


def _check_sampling(name: str, options: dict, sampling) -> None:
    """A sampling the model cannot read whole, refused before its weights are loaded (extract() checks
    it too; a large model takes a while to load). An unknown name is left to :func:`_extractor`."""
    from ..features.registry import check_sampling, extractor_meta, list_extractors

    if name in list_extractors():
        meta = extractor_meta(name)
        try:
            check_sampling(name, meta.kind, sampling, window=options.get("window", meta.window))
        except ValueError as exc:
            raise CLIError(str(exc)) from None


def _what_to_extract(args: argparse.Namespace):
    """(preset or None, extractor name, its options, sampling or None, decoder short side) of the flags."""
    from ..features import presets

    if args.preset:
        try:
            preset = presets.get_preset(args.preset)
        except KeyError as exc:
            raise CLIError(exc.args[0], EXIT_USAGE) from None
        name, options, sampling, short_side = (preset.extractor, preset.options, preset.sampling,
                                               preset.decode_short_side)
    else:
        preset, name, options, sampling, short_side = None, args.extractor, {}, None, None
    if args.sampling:
        try:
            sampling = presets.parse_sampling(args.sampling)
        except ValueError as exc:
            raise CLIError(str(exc), EXIT_USAGE) from None
    if args.short_side is not None:
        short_side = args.short_side or None
    return preset, name, options, sampling, short_side


# The flag of each setting, to name it in an error.
_SETTING_FLAGS = {"device": "--device", "batch_size": "--batch-size", "num_workers": "--workers",
                  "backend": "--decoder", "short_side": "--short-side", "decode_threads": "--decode-threads",
                  "shard": "--shard"}


def _settings(args: argparse.Namespace, *, tolerance, short_side: int | None):
    """The run's settings from the flags, with the library's defaults for the rest (device and shard
    under torchrun, batch size and workers per device), and the device checked to be here."""
    from ..devices import DeviceUnavailableError, resolve_device
    from ..distributed import LaunchError
    from ..features.pipeline import ExtractSettings, SettingsError, parse_shard

    try:
        shard = parse_shard(args.shard) if args.shard else None
    except ValueError as exc:
        raise CLIError(f"--shard: {exc}", EXIT_USAGE) from None
    try:
        settings = ExtractSettings(
            device=args.device, batch_size=args.batch_size, num_workers=args.workers, backend=args.decoder,
            short_side=short_side, decode_threads=args.decode_threads, shard=shard, amp=not args.no_amp,
            overwrite=args.overwrite, tolerance=tolerance, allow_partial=args.allow_partial).resolved()
    except SettingsError as exc:
        given = args.shard if exc.field == "shard" else exc.value  # as typed: 0/3, not (0, 3)
        raise CLIError(f"{_SETTING_FLAGS.get(exc.field, exc.field)} {given}: {exc.problem}", EXIT_USAGE) from None
    except LaunchError as exc:  # torchrun's variables making no sense
        raise CLIError(str(exc), EXIT_USAGE) from None
    try:
        resolve_device(settings.device)
    except DeviceUnavailableError as exc:
        raise CLIError(f"--device: {exc}", EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise CLIError(f"--device {settings.device}: {exc}", EXIT_USAGE) from None
    return settings


def _extractor(name: str, options: dict, weights: str, device: str, preset):
    """The extractor on ``device``, its failures in one line each."""
    from ..features.hub import WeightsFileError
    from ..features.registry import UnknownExtractorError, create_extractor
    from ..features.weights import WeightsUnavailableError

    try:
        extractor = create_extractor(name, weights=None if weights.lower() == "none" else weights,
                                     device=device, **options)
    except UnknownExtractorError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    except WeightsUnavailableError as exc:
        raise CLIError(f"{exc} (or pass --weights none for random init)", EXIT_UNAVAILABLE) from None
    except (FileNotFoundError, WeightsFileError) as exc:
        raise CLIError(f"--weights: {exc}") from None
    if preset is not None and extractor.dim != preset.dim:
        raise CLIError(f"preset {preset.name}: extractor {name} gives {extractor.dim}-d features, "
                       f"the preset expects {preset.dim}")
    return extractor


class _Progress:
    """The progress bar of ``extract``, made once the clips left to do are known (tqdm, on stderr)."""

    def __init__(self):
        self.bar = None

    def start(self, total: int, reused: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total - reused, unit="clip", desc="extract", dynamic_ncols=True, file=sys.stderr)

    def step(self, _clip_id: str, _ok: bool) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run_extraction(args: argparse.Namespace, clips, extractor, sampling, settings, preset: str | None):
    from ..features.pipeline import extract
    from ..fileio import LockHeldError
    from ..video import DecoderUnavailableError

    progress = None if args.no_progress else _Progress()
    try:
        return extract(clips, args.output, extractor, sampling, settings=settings, preset=preset,
                       on_start=progress.start if progress else None, on_clip=progress.step if progress else None)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except (LockHeldError, DecoderUnavailableError) as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except OSError as exc:  # the output cannot be written (no such folder, disk full...)
        where = f" ({exc.filename})" if exc.filename else ""  # h5py's errors name no file
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}{where}; finished clips "
                       f"are kept: rerun once this is fixed") from None
    finally:
        if progress is not None:
            progress.close()


def _print_summary(summary) -> None:
    redone = f" ({summary.redone} redone: their video file changed)" if summary.redone else ""
    print(f"{summary.output or '(no store written)'}: {summary.extracted} clips extracted{redone}, "
          f"{summary.reused} already done, {summary.failed} failed, of {summary.total} "
          f"({summary.clips_per_s:.2f} clips/s, {summary.seconds:.1f} s)")
    if summary.warnings or summary.partial:
        print(f"{len(summary.warnings)} clips kept with a length warning, {summary.partial} kept partial "
              f"(--allow-partial)", file=sys.stderr)
    if summary.failures_path:
        kept = f", and {summary.failures_kept} earlier ones not retried" if summary.failures_kept else ""
        print(f"failures ({summary.failed} of this run{kept}) listed in {summary.failures_path}",
              file=sys.stderr)


# (flag, attribute, least value): below it a count means nothing, and taken as it is it would be
# silently wrong (--limit -1 slices off the last clip, --batch-size 0 falls back to the default).
# --short-side is checked here because 0 is its word for "off"; the settings check the others.
_COUNT_FLAGS = (("--limit", "limit", 1), ("--short-side", "short_side", 0), ("--check", "check", 0))


def _check_counts(args: argparse.Namespace) -> None:
    """Refuse a count flag below its least value (usage error) before any work."""
    for flag, name, least in _COUNT_FLAGS:
        value = getattr(args, name)
        if value is not None and value < least:
            raise CLIError(f"{flag} {value}: must be at least {least}", EXIT_USAGE)


def _print_check(store_path: str, extractor, n: int, device: str) -> None:
    """Top-5 classes of the clip-averaged features of the first ``n`` clips."""
    from ..features.check import classifier_problem, top_classes

    problem = classifier_problem(extractor)
    if problem is not None:
        print(f"--check: {problem}")
        return
    for clip in top_classes(store_path, extractor, n, device=device):
        print(f"{clip.clip_id}: " + ", ".join(f"{label} {p:.2f}" for label, p in clip.top))


def _merge(args: argparse.Namespace) -> int:
    _require(("h5py",), "feature stores")
    from ..features.store import StoreError, merge_stores
    from ..fileio import LockHeldError

    _new_output_file(args.output, "OUT.h5", overwrite=args.overwrite)
    try:
        with _output_lock(args.output):
            n = merge_stores(args.output, args.inputs)
    except LockHeldError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except (StoreError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.output}: {n} clips from {len(args.inputs)} stores")
    return EXIT_OK


def _export(args: argparse.Namespace) -> int:
    _require(("h5py",), "feature stores")
    from ..features.pipeline import export_npy

    if args.key is not None:
        _check_key(args.key)
    from ..fileio import file_in_the_way

    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise CLIError(f"{args.out_dir}: is a file, not a folder to write .npy files into")
    blocker = file_in_the_way(args.out_dir)
    if blocker is not None:
        raise CLIError(f"cannot write to {args.out_dir}: {blocker} is a file, not a folder")
    try:
        n = export_npy(args.store, args.out_dir, key=args.key)
    except ValueError as exc:  # StoreError, a clip id that would name a file outside DIR
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write to {args.out_dir}: {exc.strerror or exc}") from None
    print(f"{args.out_dir}: {n} clips exported")
    return EXIT_OK


def _import(args: argparse.Namespace) -> int:
    _require(("h5py",), "feature stores")
    from ..features.pipeline import import_npy

    _check_key(args.key)
    if args.extractor is not None:
        _check_import_extractor(args.extractor, foreign=args.foreign)
    elif args.foreign:
        raise CLIError("--foreign goes with --extractor NAME", EXIT_USAGE)
    _input_folder(args.in_dir, "DIR")
    _new_output_file(args.output, "OUT.h5", overwrite=args.overwrite)
    if args.step_seconds is not None and not args.step_seconds > 0:
        raise CLIError(f"--step-seconds {args.step_seconds}: must be a positive number of seconds", EXIT_USAGE)
    prov = {"extractor": args.extractor} if args.extractor else None
    from ..fileio import LockHeldError

    try:
        with _output_lock(args.output):
            n = import_npy(args.in_dir, args.output, key=args.key, provenance=prov,
                           step_seconds=args.step_seconds)
    except LockHeldError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except (FileNotFoundError, ValueError) as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.output}: {n} clips imported")
    return EXIT_OK


def _input_file(path: str, what: str) -> None:
    """Refuse an input that is not a regular file: missing, a folder, or a pipe (torch.load would block)."""
    from ..fileio import special_file_kind

    if not os.path.exists(path):
        raise CLIError(f"{what} {path}: no such file")
    if os.path.isdir(path):
        raise CLIError(f"{what} {path}: is a directory, not a file")
    kind = special_file_kind(os.stat(path).st_mode)
    if kind is not None:
        raise CLIError(f"{what} {path}: is {kind}, not a regular file")


def _not_the_input(input_path: str, output: str, flag: str) -> None:
    """--overwrite onto the input itself would replace what is being read."""
    if os.path.exists(output) and os.path.samefile(input_path, output):
        raise CLIError(f"{flag} {output}: is the input; choose another output")


def _export_frozenbilm(args: argparse.Namespace) -> int:
    _require(("torch", "h5py"), "FrozenBiLM feature files")
    from ..features.frozenbilm import export_frozenbilm

    _new_output_file(args.output, "OUT.pth", overwrite=args.overwrite)
    if os.path.exists(args.store):
        _not_the_input(args.store, args.output, "OUT.pth")
    try:
        done = export_frozenbilm(args.store, args.output)
    except ValueError as exc:  # StoreError: missing, damaged, NaN
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    print(f"{args.output}: {done.clips} clips, {done.rows} rows of {done.dim}-d float16 features")
    return EXIT_OK


def _import_frozenbilm(args: argparse.Namespace) -> int:
    _require(("torch", "h5py"), "FrozenBiLM feature files")
    from ..features.frozenbilm import import_frozenbilm
    from ..features.presets import get_preset
    from ..fileio import LockHeldError

    try:
        get_preset(args.preset)
    except KeyError as exc:
        raise CLIError(f"--preset: {exc.args[0]}", EXIT_USAGE) from None
    _input_file(args.input, "FILE.pth")
    _new_output_file(args.output, "OUT.h5", overwrite=args.overwrite)
    _not_the_input(args.input, args.output, "OUT.h5")
    try:
        with _output_lock(args.output):
            done = import_frozenbilm(args.input, args.output, preset=args.preset, skip_empty=args.skip_empty)
    except LockHeldError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write {args.output}: {exc.strerror or exc}") from None
    shown = ", ".join(done.skipped[:5]) + (", ..." if len(done.skipped) > 5 else "")
    left_out = f", {len(done.skipped)} empty clips left out ({shown})" if done.skipped else ""
    print(f"{args.output}: {done.clips} clips imported ({done.dim}-d, preset {args.preset}){left_out}")
    return EXIT_OK


def _check_key(key: str) -> None:
    """A --key is part of every file name (<clip>_<key>.npy): a path separator or '..' would leave DIR."""
    from ..formats import id_problem

    problem = id_problem(key)
    if problem is not None:
        raise CLIError(f"--key {key!r}: {problem.replace('empty id', 'empty key')}", EXIT_USAGE)


def _check_import_extractor(name: str, *, foreign: bool) -> None:
    """An unregistered --extractor is a typo unless the user says it is another toolkit's (--foreign)."""
    if not name.strip():
        raise CLIError("--extractor: empty name", EXIT_USAGE)
    if foreign:
        return
    try:
        from ..features.registry import list_extractors

        known = list_extractors()
    except ImportError:
        raise CLIError(f"--extractor {name}: checking it against the registered extractors needs "
                       "moviefib[features]; pass --foreign to record it unchecked", EXIT_UNAVAILABLE) from None
    if name not in known:
        raise CLIError(f"--extractor {name!r} is not a registered extractor (valid: {', '.join(known)}); "
                       "pass --foreign to record another toolkit's name", EXIT_USAGE)


def _list(args: argparse.Namespace) -> int:
    from ..features.presets import PRESETS
    from ..features.registry import list_extractors
    from ..video import sampling_to_dict

    print("presets:")
    for p in PRESETS.values():
        print(f"  {p.name:20s} {p.extractor} {p.dim}-d {sampling_to_dict(p.sampling)}  {p.description}")
    print("extractors: " + ", ".join(list_extractors()))
    return EXIT_OK
