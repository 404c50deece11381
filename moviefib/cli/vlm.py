"""``moviefib predict-vlm``: answer a split with a Video-LLM behind an OpenAI-compatible endpoint."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from . import EXIT_INVALID, EXIT_OK, EXIT_PARTIAL, EXIT_UNAVAILABLE, EXIT_USAGE, CLIError

DESCRIPTION = ("Answer every question of a split with a Video-LLM served behind an OpenAI-compatible "
               "chat-completions endpoint (vLLM, SGLang, a hosted API) and write a submission for "
               "`moviefib evaluate`.")

EPILOG = """\
each question: --frames JPEG frames of its clip (uniform in time, longer side at most --frame-size)
and the blanked sentence in the built-in prompt (moviefib-vlm-prompt-1) or --prompt-file (UTF-8,
with {question} once, {frames} optional). The reply is reduced to one word (moviefib.vlm.parse);
a reply that cannot be, and a question whose clip does not decode, is written '?', which the
evaluator scores wrong; both are counted.

files beside OUT: OUT.replies.jsonl (every reply received: a rerun after a crash or kill asks only
the rest), OUT.settings.json (model, endpoint, prompt, frames, counts; never the API key),
OUT.failures.jsonl (clips that failed to decode).

the API key is read from the variable named by --api-key-env (default OPENAI_API_KEY); unset, no
key is sent (a local vLLM server started without --api-key); a variable named with --api-key-env
must be set.

exit status: 0 done; 2 usage error; 3 invalid input (dataset, split, video root, prompt file, a
damaged reply cache, a request the endpoint refuses as invalid); 4 done, but some clips failed to
decode (listed in OUT.failures.jsonl); 5 the endpoint unreachable after the retries or refusing the
key or model, the vlm extra not installed, another run writing OUT; 130 interrupted.
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("predict-vlm", help="answer a split with a Video-LLM (OpenAI-compatible API)",
                              description=DESCRIPTION, epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dataset", metavar="DATASET", help="dataset folder (moviefib build output)")
    p.add_argument("--split", default="val", help="split to answer (default: val)")
    p.add_argument("--video-root", required=True, metavar="DIR",
                   help="clip files DIR/<movie>/<clip_id>.avi (or whole movies with --movies)")
    p.add_argument("--movies", action="store_true",
                   help="DIR holds whole movies DIR/<movie>.<ext>, cut at each clip's extracted start/end")
    p.add_argument("--endpoint", required=True, metavar="URL",
                   help="the API's base URL, e.g. http://localhost:8000/v1")
    p.add_argument("--model", required=True, help="the model name the endpoint serves")
    p.add_argument("--out", required=True, metavar="FILE", help="the submission (TSV; JSON with .json)")
    p.add_argument("--api-key-env", metavar="NAME",
                   help="environment variable holding the API key, which must then be set (default: "
                        "OPENAI_API_KEY, if set)")
    p.add_argument("--prompt-file", metavar="FILE", help="a prompt template instead of the built-in one")
    p.add_argument("--frames", type=int, default=8, metavar="N", help="frames per question (default 8)")
    p.add_argument("--frame-size", type=int, default=512, metavar="PX",
                   help="longer side of a frame at most (default 512)")
    p.add_argument("--jpeg-quality", type=int, default=85, metavar="Q", help="JPEG quality 1-95 (default 85)")
    p.add_argument("--decoder", default="pyav", choices=("pyav", "torchcodec"))
    p.add_argument("--decoders", type=int, default=2, metavar="N",
                   help="threads decoding clips ahead of the requests (default 2)")
    p.add_argument("--concurrency", type=int, default=8, metavar="N", help="requests in flight (default 8)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S", help="seconds per request (default 120)")
    p.add_argument("--retries", type=int, default=8, metavar="N",
                   help="attempts per question before the endpoint counts as unreachable (default 8)")
    p.add_argument("--backoff", type=float, default=1.0, metavar="S",
                   help="first back-off wait, doubled after each failure up to 60 s (default 1)")
    p.add_argument("--max-tokens", type=int, default=32, metavar="N", help="reply length limit (default 32)")
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config(args):
    """The run's settings from the flags; CLIError (usage) for a value out of range."""
    from ..vlm.client import RetryPolicy
    from ..vlm.frames import FrameSpec
    from ..vlm.prompt import PromptError, default_prompt, load_prompt
    from ..vlm.run import VLMConfig

    key_env = args.api_key_env or "OPENAI_API_KEY"
    if args.api_key_env is not None and not os.environ.get(key_env, "").strip():
        raise CLIError(f"--api-key-env {key_env}: the variable is not set (or empty)", EXIT_USAGE)
    try:
        prompt = load_prompt(args.prompt_file) if args.prompt_file else default_prompt()
    except PromptError as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    try:
        return VLMConfig(
            endpoint=args.endpoint, model=args.model, prompt=prompt,
            frames=FrameSpec(args.frames, args.frame_size, args.jpeg_quality, args.decoder),
            retry=RetryPolicy(attempts=args.retries, base=args.backoff, timeout=args.timeout),
            concurrency=args.concurrency, max_tokens=args.max_tokens, temperature=args.temperature,
            api_key_env=key_env, movies=args.movies, decoders=args.decoders)
    except ValueError as exc:
        raise CLIError(str(exc), EXIT_USAGE) from None


def _require_extra(decoder: str) -> None:
    import importlib.util

    from ..video import backend_problem

    missing = [m for m in ("openai", "PIL") if importlib.util.find_spec(m) is None]
    if missing:
        raise CLIError(f"predict-vlm needs {', '.join(missing)}: pip install 'moviefib[vlm]'", EXIT_UNAVAILABLE)
    problem = backend_problem(decoder)
    if problem is not None:
        raise CLIError(f"--decoder {decoder}: {problem}", EXIT_UNAVAILABLE)


def run(args) -> int:
    config = _config(args)
    _require_extra(args.decoder)
    if not getattr(args, "verbose", False):  # a line per request would bury the bar and the errors
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
    bar = _Progress(enabled=not args.no_progress)
    try:
        summary = _predict(args, config, bar)
    finally:
        bar.close()
    print(f"wrote {summary.output}: {summary.questions} questions, {summary.asked} asked "
          f"({summary.questions_per_s:.1f} questions/s), {summary.reused} from the reply cache; "
          f"{summary.unparsed} replies not one word and {summary.no_video} questions without video "
          f"written as '?' (scored wrong); settings in {summary.settings_path}")
    if summary.retries:
        print("retried: " + ", ".join(f"{k} x {v}" for k, v in sorted(summary.retries.items())))
    for n, what in ((summary.repeated, "requests in flight when an earlier run stopped were sent again"),
                    (summary.stale, "cached replies were for other settings (model, prompt, frames or "
                                    "video) and were not reused: asked again"),
                    (summary.cut, "replies were cut at --max-tokens (finish_reason length)"),
                    (summary.short_warnings, "clips are somewhat short or cut (kept; see the warnings)")):
        if n:
            print(f"note: {n} {what}")
    if summary.failures_path:
        print(f"failures ({len(summary.failures)} clips) listed in {summary.failures_path}", file=sys.stderr)
        return EXIT_PARTIAL
    return EXIT_OK


def _predict(args, config, bar):
    from ..dataset import DatasetError
    from ..fileio import LockHeldError
    from ..vlm.cache import CacheError
    from ..vlm.client import EndpointUnavailable, RequestRefused
    from ..vlm.run import predict_vlm

    try:
        return predict_vlm(args.dataset, split=args.split, video_root=args.video_root, out=args.out,
                           config=config, on_start=bar.start, on_answer=bar.update)
    except (DatasetError, CacheError) as exc:
        raise CLIError(str(exc), EXIT_INVALID) from None
    except EndpointUnavailable as exc:
        raise CLIError(f"{exc}; replies received so far are kept: rerun to go on", EXIT_UNAVAILABLE) from None
    except LockHeldError as exc:
        raise CLIError(str(exc), EXIT_UNAVAILABLE) from None
    except RequestRefused as exc:
        code = EXIT_INVALID if exc.status in (400, 413, 422) else EXIT_UNAVAILABLE
        raise CLIError(f"{exc}; replies received so far are kept", code) from None
    except ValueError as exc:  # the video root, a clip id that would leave it
        raise CLIError(str(exc), EXIT_INVALID) from None
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise CLIError(f"cannot write {args.out}: {exc.strerror or exc}{where}", EXIT_INVALID) from None


class _Progress:
    """A tqdm bar in questions, with its questions/s; silent when disabled."""

    def __init__(self, *, enabled: bool):
        self.enabled, self.bar = enabled, None

    def start(self, total: int, reused: int) -> None:
        if self.enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=reused, unit="q", desc="predict-vlm", file=sys.stderr,
                            dynamic_ncols=True)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
