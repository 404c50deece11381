"""``moviefib human serve``: a local web page on which people fill in the blanks;
``moviefib human prepare``: transcode and check the clips of video mode ahead of time."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from urllib.parse import quote

from . import EXIT_INVALID, EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError

TOKEN_ENV = "MOVIEFIB_HUMAN_TOKEN"


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "human", help="measure human accuracy with a local web page",
        description="Measure human accuracy: people fill in the blanks on a local web page.")
    sub = parser.add_subparsers(dest="human_command", metavar="ACTION", required=True)
    p = sub.add_parser(
        "serve", help="serve the annotation page",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Serve one question at a time from a dataset split; answers are appended to a JSONL "
                    "file (question_id, answer, mode, annotator, seconds, skipped) that "
                    "`moviefib evaluate` reads.",
        epilog="Protocol: an annotator never sees two blanks of one sentence and never gets in text mode a "
               "question already seen with its video (run text mode first, then video mode, on the "
               "same answer file). Restarting resumes each annotator where they stopped.")
    _add_question_args(p)
    p.add_argument("--mode", required=True, choices=("text", "video"),
                   help="text: the sentence alone; video: the sentence with its clip")
    p.add_argument("--answers", required=True, metavar="FILE",
                   help="JSONL answer file (created if absent, appended to otherwise)")
    _add_clip_args(p, required=False)
    p.add_argument("--host", default="127.0.0.1",
                   help="bind address (default 127.0.0.1; any other needs --token)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", help=f"secret the page URL must carry (or set ${TOKEN_ENV})")
    p.set_defaults(func=_serve)

    p = sub.add_parser(
        "prepare", help="transcode and check the clips of video mode ahead of time",
        description="Transcode every clip of the questions `serve --mode video` would show (same "
                    "--sample and --seed) into the cache, so that clips play at once, and check each is "
                    "whole: a clip decoded clearly shorter than its expected length, a still image or "
                    "a file that does not decode is refused and listed with both durations (exit 4).")
    _add_question_args(p)
    _add_clip_args(p, required=True)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_prepare)


def _add_question_args(p) -> None:
    p.add_argument("dataset", metavar="DATASET", help="dataset folder (made by `moviefib build`)")
    p.add_argument("--split", required=True, help="split to show (e.g. val, test)")
    p.add_argument("--sample", type=int, metavar="N",
                   help="show only N questions (of distinct sentences), drawn with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of the question order and sample (default 0)")


def _add_clip_args(p, *, required: bool) -> None:
    p.add_argument("--video-root", metavar="DIR", required=required,
                   help="folder of the clips (<DIR>/<movie>/<clip_id>.avi); required in video mode")
    p.add_argument("--cache-dir", metavar="DIR",
                   help="where transcoded WebM clips are kept (default ~/.cache/moviefib/human-clips)")
    p.add_argument("--duration-tolerance", metavar="SHORT[,WARN]", default="0.5,0.9",
                   help="a clip decoding under SHORT of its expected length (after 0.25 s of slack) is "
                        "refused, under WARN served with a warning: the rule of `moviefib extract` "
                        "(default 0.5,0.9)")


def _require(module: str, package: str, what: str) -> None:
    """A one-line refusal naming the extra to install when an optional package is missing."""
    try:
        __import__(module)
    except ImportError:
        raise CLIError(f"{what} needs {package}: pip install 'moviefib[human]'", EXIT_UNAVAILABLE) from None


def _prepare(args) -> int:
    from ..dataset import DatasetError
    from ..human.clips import ClipCacheError, ClipError, prepare_clips
    from ..human.questions import QuestionError
    from ..human.server import open_clip_cache, served_questions
    from .features import duration_tolerance

    if args.sample is not None and args.sample < 1:
        raise CLIError("--sample must be at least 1", EXIT_USAGE)
    tolerance = duration_tolerance(args.duration_tolerance)
    _require("av", "PyAV", "transcoding clips")
    try:
        questions, _ = served_questions(args.dataset, args.split, sample=args.sample, seed=args.seed)
        cache = open_clip_cache(args.video_root, args.cache_dir, questions, tolerance=tolerance)
    except (DatasetError, QuestionError, ClipError) as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except OSError as exc:  # the dataset cannot be read
        raise CLIError(f"{exc.filename or args.dataset}: {exc.strerror or exc}", EXIT_INVALID) from None
    clips = {q.clip_id: q.clip_seconds for q in questions}
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), unit="clip", desc="clips", file=sys.stderr)
    try:
        refused = prepare_clips(cache, clips, progress=bar.update if bar else None)
    except ClipCacheError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    finally:
        if bar is not None:
            bar.close()
    for exc in refused.values():
        print(f"refused: {exc}", file=sys.stderr)
    left_out = sum(q.clip_id in refused for q in questions)
    print(f"{len(clips) - len(refused)} of {len(clips)} clips ready in {cache.cache_dir}"
          + (f"; {len(refused)} refused ({left_out} questions will be left out in video mode)"
             if refused else ""))
    return EXIT_PARTIAL if refused else EXIT_OK


def _serve(args) -> int:
    from ..dataset import DatasetError
    from ..human.answers import AnswerFileError
    from ..human.clips import ClipError
    from ..human.questions import QuestionError
    from ..human.server import HumanServer, is_loopback, make_app
    from .features import duration_tolerance

    token = args.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(args.host) and not token:
        raise CLIError(f"--host {args.host} exposes the page beyond this machine: give --token "
                       f"(or ${TOKEN_ENV})", EXIT_USAGE)
    if args.mode == "video" and not args.video_root:
        raise CLIError("--mode video needs --video-root", EXIT_USAGE)
    if args.sample is not None and args.sample < 1:
        raise CLIError("--sample must be at least 1", EXIT_USAGE)
    if not 0 <= args.port <= 65535:
        raise CLIError(f"--port {args.port} is not a port number", EXIT_USAGE)
    tolerance = duration_tolerance(args.duration_tolerance)
    _require("flask", "Flask", "the web page")
    if args.mode == "video":
        _require("av", "PyAV", "video mode")
    try:
        app = make_app(args.dataset, args.split, args.mode, args.answers, video_root=args.video_root,
                       cache_dir=args.cache_dir, sample=args.sample, seed=args.seed, token=token,
                       host=args.host, tolerance=tolerance)
    except (DatasetError, QuestionError, AnswerFileError, ClipError) as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except OSError as exc:  # e.g. the answer file's folder cannot be created or written
        raise CLIError(f"{exc.filename or args.answers}: {exc.strerror or exc}", EXIT_INVALID) from None
    try:
        server = HumanServer(app, args.host, args.port)
    except OSError as exc:
        raise CLIError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}",
                       EXIT_UNAVAILABLE) from None
    if not args.verbose:
        # werkzeug logs every request at INFO: an access log nobody asked for.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    url = server.url + (f"?token={quote(token, safe='')}" if token else "")
    print(f"serving {args.mode} mode of {args.dataset} / {args.split}; answers go to {args.answers}")
    print(f"open {url}   (Ctrl-C stops)", flush=True)
    if not is_loopback(args.host):
        print("from another machine, replace the host part with this machine's address")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass  # werkzeug usually swallows it itself; either way it is the normal way to stop
    print("stopped; every answer is in the file")
    return EXIT_OK
