"""``predict_vlm``: score a Video-LLM behind an OpenAI-compatible endpoint on a split of a dataset.

For each question of the split: the frames of its clip (:mod:`.frames`), the prompt (:mod:`.prompt`)
and one chat-completions request (:mod:`.client`); the reply is cached (:mod:`.cache`) and reduced
to one word (:mod:`.parse`). Questions are taken clip by clip (a clip is decoded once for all its
questions, by ``decoders`` threads a few clips ahead) and sent by ``concurrency`` worker threads, at
most ``concurrency`` requests in flight; a clip's questions already in the cache are not decoded, nor sent, again.

Files written beside the submission ``OUT`` (TSV, or JSON with a ``.json`` suffix):

* ``OUT.replies.jsonl``: the reply cache (every reply received; a rerun resumes from it);
* ``OUT.settings.json``: model, endpoint, prompt (version, SHA-256, text), frames and sampling,
  generation and retry settings, the name of the API key's variable (never the key), the counts;
* ``OUT.failures.jsonl``: clips that could not be decoded, one record each as feature extraction
  writes them (``clip_id``, ``path``, ``reason``); the run goes on without them, and their questions
  are answered :data:`~moviefib.vlm.parse.UNPARSED_ANSWER` (scored wrong, counted as ``no_video``);
* ``OUT.lock`` while the run lasts (a second run on the same output stops at once).

The submission is written only once every question has an answer; a run stopped by an unreachable
endpoint, a refused request, Ctrl-C or a kill leaves the cache, and the rerun asks only the rest.
Clip paths follow ``moviefib features extract --clips``: ``<video_root>/<movie>/<clip_id>.avi``, or
with ``movies`` whole movies ``<video_root>/<movie>.<ext>`` cut at each clip's extracted start/end.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..fileio import atomic_write, exclusive_lock
from .cache import CachedReply, ReplyCache, request_fingerprint
from .client import ChatClient, RetryPolicy, endpoint_problem, shown_endpoint
from .frames import FrameSpec
from .parse import PARSE_RULE_VERSION, UNPARSED_ANSWER, parse_reply
from .prompt import Prompt, default_prompt
from .sources import Question, clip_sources, read_questions

log = logging.getLogger(__name__)

SETTINGS_FORMAT = "moviefib-vlm-settings/1"
# A server started without a key (vLLM's default) accepts any; the openai client wants a non-empty one.
NO_KEY = "EMPTY"


@dataclass(frozen=True)
class VLMConfig:
    """What to ask and how.

    Attributes:
        endpoint: the API's base URL (``http://host:8000/v1``).
        model: the model name the server knows.
        prompt: the prompt template (default: the built-in, versioned one).
        frames: frames per question, their size and JPEG quality, the decoder.
        retry: retries, back-off and the per-request timeout.
        concurrency: requests in flight at most.
        max_tokens: the reply's length limit (``max_tokens``).
        temperature: sampling temperature (0: greedy, reproducible where the server is).
        api_key_env: the environment variable holding the API key (unset: no key is sent).
        movies: clips are cut out of whole movies instead of read from clip files.
        decoders: threads decoding clips (and encoding their JPEGs) ahead of the requests.
    """

    endpoint: str
    model: str
    prompt: Prompt = field(default_factory=default_prompt)
    frames: FrameSpec = FrameSpec()
    retry: RetryPolicy = RetryPolicy()
    concurrency: int = 8
    max_tokens: int = 32
    temperature: float = 0.0
    api_key_env: str = "OPENAI_API_KEY"
    movies: bool = False
    decoders: int = 2

    def __post_init__(self):
        if not 1 <= self.decoders <= 64:
            raise ValueError(f"decoders must be 1 to 64, not {self.decoders}")
        if not 1 <= self.concurrency <= 1024:
            raise ValueError(f"concurrency must be 1 to 1024, not {self.concurrency}")
        if not 1 <= self.max_tokens <= 1_000_000:
            raise ValueError(f"max_tokens must be 1 to 1000000, not {self.max_tokens}")
        if not 0 <= self.temperature <= 2:
            raise ValueError(f"temperature must be 0 to 2, not {self.temperature}")
        if not self.model.strip():
            raise ValueError("the model name is empty")
        problem = endpoint_problem(self.endpoint)
        if problem is not None:
            shown = shown_endpoint(self.endpoint)
            raise ValueError(f"endpoint {shown!r}: {problem}" if shown else f"endpoint: {problem}")


@dataclass(frozen=True)
class VLMSummary:
    """The outcome of :func:`predict_vlm`.

    Attributes:
        output, settings_path, cache_path: the files written.
        failures_path: the failure manifest, or None when every clip decoded.
        questions: questions of the split.
        asked: questions sent to the model by this run (each counted once, retries aside).
        reused: questions answered from the cache of an earlier run.
        unparsed: replies that could not be reduced to one word (written as ``?``).
        no_video: questions whose clip failed to decode (written as ``?``).
        failures: the clips that failed, as extraction reports them.
        retries: failed attempts by kind (``429``, ``500``, ``timeout``, ``connection``, ``malformed``).
        seconds: wall time.
        repeated: questions asked again because their request was in flight when an earlier run
            stopped (sent, no reply received; at most its concurrency).
        stale: questions whose cached reply was for other settings (model, prompt, frames, video) and
            were asked again.
        cut: replies the server cut at ``max_tokens`` (``finish_reason`` ``length``).
        short_warnings: clips kept with a warning about their length (somewhat short, or a file cut).
    """

    output: str
    settings_path: str
    cache_path: str
    failures_path: str | None
    questions: int
    asked: int
    reused: int
    unparsed: int
    no_video: int
    failures: tuple
    retries: dict[str, int]
    seconds: float
    repeated: int = 0
    stale: int = 0
    cut: int = 0
    short_warnings: int = 0

    @property
    def questions_per_s(self) -> float:
        return self.asked / self.seconds if self.seconds > 0 else 0.0


def output_paths(out: str | os.PathLike) -> dict[str, Path]:
    """The files of a run beside its submission ``out``."""
    out = Path(out)
    return {kind: out.with_name(f"{out.name}.{suffix}") for kind, suffix in (
        ("cache", "replies.jsonl"), ("settings", "settings.json"), ("failures", "failures.jsonl"),
        ("lock", "lock"))}


def predict_vlm(dataset: str | os.PathLike, *, split: str, video_root: str | os.PathLike,
                out: str | os.PathLike, config: VLMConfig,
                on_start: Callable[[int, int], None] | None = None,
                on_answer: Callable[[], None] | None = None,
                sleep: Callable[[float], None] = time.sleep) -> VLMSummary:
    """Answer every question of ``split`` with the model and write the submission ``out`` (resumably).

    ``on_start(total, reused)`` is called once the cached answers are known, ``on_answer()`` as each
    new reply arrives (from the worker threads; for progress bars). Raises
    :class:`~moviefib.dataset.DatasetError` and ValueError for bad inputs (before any request),
    :class:`~moviefib.vlm.cache.CacheError` for a damaged reply cache,
    :class:`~moviefib.fileio.LockHeldError` when another run writes ``out``,
    :class:`~moviefib.vlm.client.EndpointUnavailable` when no reply comes after the retries and
    :class:`~moviefib.vlm.client.RequestRefused` when the endpoint refuses a request.
    """
    t0 = time.perf_counter()
    key = _api_key(config)
    questions = read_questions(dataset, split)
    sources = clip_sources(questions, video_root, movies=config.movies)
    paths = output_paths(out)
    _check_outputs(out, paths, dataset)
    _check_rerun(out, paths["settings"], dataset, split)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(paths["lock"], what=f"{out} is being written by another predict-vlm run"), \
            ReplyCache(paths["cache"]) as cache:
        _claim(paths["settings"], dataset, split)
        plan = _plan(questions, sources, config, cache)
        if on_start:
            on_start(len(questions), plan.reused)
        client = ChatClient(endpoint=config.endpoint, model=config.model, api_key=key,
                            retry=config.retry, max_tokens=config.max_tokens,
                            temperature=config.temperature, sleep=sleep)
        asked = _ask_all(plan, client=client, cache=cache, config=config, on_answer=on_answer)
        answers, counts = _answers(questions, plan, cache)
        failures_path = _write_failures(paths["failures"], asked.failures)
        _refuse_without_video(counts, asked.failures, video_root, failures_path)
        from ..evaluate.submission import write_submission

        write_submission(out, answers)
        summary = VLMSummary(str(out), str(paths["settings"]), str(paths["cache"]), failures_path,
                             len(questions), asked.asked, plan.reused, counts["unparsed"],
                             counts["no_video"], tuple(asked.failures), dict(asked.retries),
                             time.perf_counter() - t0, plan.repeated, plan.stale, counts["cut"],
                             asked.short_warnings)
        atomic_write(paths["settings"], json.dumps(
            _settings(dataset, split, video_root, config, summary, counts), indent=1) + "\n")
    return summary


class OutputError(ValueError):
    """An output path that cannot be written as a file: names it and says why."""


def _check_outputs(out, paths: dict[str, Path], dataset) -> None:
    """Before any request: every output is a regular file or absent (a folder, a device such as
    ``/dev/null`` or a pipe would be replaced by the atomic write, or fail only after the whole run),
    and the submission is not inside the dataset folder (it would replace a split's table)."""
    for kind, path in (("submission", Path(out)), *paths.items()):
        if path.exists() and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file (a device, a pipe)"
            raise OutputError(f"{path}: {what}; the {kind} is written as a regular file here (--out "
                              f"names the submission file)")
    folder = next(p for p in Path(out).absolute().parents if p.exists())
    if not folder.is_dir():
        raise OutputError(f"{out}: {folder} is a file, not a folder")
    inside = Path(dataset).resolve()
    if inside == Path(out).resolve().parent or inside in Path(out).resolve().parents:
        raise OutputError(f"{out}: inside the dataset folder {dataset}; write the submission elsewhere")


def _check_rerun(out, settings: Path, dataset, split: str) -> None:
    """An existing ``out`` is replaced only by a rerun of its own run: the settings beside it name the
    same dataset (by its real path) and split. A submission of another dataset or split, or a file
    predict-vlm did not write (a baseline's submission named by mistake), is never overwritten, and a
    rerun never mixes another split's cached replies into its counts."""
    if not settings.exists():
        if Path(out).exists():
            raise OutputError(f"{out}: an existing file that predict-vlm did not write (no {settings.name} "
                              f"beside it); give another --out or move it away")
        return
    try:
        recorded = json.loads(settings.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OutputError(f"{settings}: not a predict-vlm settings file ({exc}); give another --out or "
                          f"move it away") from None
    if not isinstance(recorded, dict) or recorded.get("format") != SETTINGS_FORMAT:
        raise OutputError(f"{settings}: not a predict-vlm settings file ({SETTINGS_FORMAT}); give another "
                          f"--out or move it away")
    was = (Path(str(recorded.get("dataset"))).resolve(), recorded.get("split"))
    if was != (Path(dataset).resolve(), split):
        raise OutputError(f"{out}: written by predict-vlm for dataset {was[0]} split {was[1]!r}, not "
                          f"{Path(dataset).resolve()} split {split!r}; give another --out (or move its "
                          f"files away) so that the two runs do not mix")


def _claim(settings: Path, dataset, split: str) -> None:
    """Before the first request, a run's settings file names its dataset and split (``finished``: false,
    until the whole file is written at the end), so that a run killed before its end still keeps
    another dataset's run away from its reply cache (:func:`_check_rerun`)."""
    if not settings.exists():
        atomic_write(settings, json.dumps({"format": SETTINGS_FORMAT, "dataset": str(Path(dataset).resolve()),
                                           "split": split, "finished": False}, indent=1) + "\n")


def _refuse_without_video(counts: Counter, failures: list, video_root, failures_path: str | None) -> None:
    """No clip of the split could be read at all: a wrong video root, not a run to score."""
    if failures and counts["answered"] + counts["unparsed"] == 0:
        raise OutputError(f"video root {video_root}: none of the {len(failures)} clips of the split could "
                          f"be read (first: {failures[0].reason}; all in {failures_path}); no submission "
                          f"written. Is --video-root right (--movies for whole movies)?")


def _api_key(config: VLMConfig) -> str:
    """The key from the environment (never stored anywhere by this module); ValueError, without the
    value, for one that no HTTP header can carry (a space, a line break, a non-ASCII character)."""
    value = os.environ.get(config.api_key_env, "").strip()
    if any(not 33 <= ord(c) < 127 for c in value):
        raise ValueError(f"the API key in ${config.api_key_env} holds a space, a control or a non-ASCII "
                         f"character (its value is not shown)")
    return value or NO_KEY


# ---------------------------------------------------------------------------------------------------
# Planning: which questions the cache answers, which must be asked (grouped by clip).


@dataclass(frozen=True)
class _Job:
    """One question to ask: what to send, and the fingerprint its reply is cached under."""

    question: Question
    text: str
    fingerprint: str


@dataclass
class _Plan:
    """Per clip, the questions to ask; the fingerprint of every question; clips failed beforehand."""

    todo: list[tuple[object, list[_Job]]]  # (ClipSource, jobs)
    fingerprints: dict[str, str]
    failed: list  # Failure records of clips whose file cannot even be read
    reused: int = 0
    repeated: int = 0  # sent by an earlier run that stopped before the reply came
    stale: int = 0  # a reply cached for other settings only


def _plan(questions: list[Question], sources: dict, config: VLMConfig, cache: ReplyCache) -> _Plan:
    from ..features.pipeline import Failure
    from ..integrity import source_identity

    by_clip: dict[str, list[Question]] = {}
    for q in questions:
        by_clip.setdefault(q.clip_id, []).append(q)
    plan = _Plan([], {}, [])
    cached_ids = {qid for qid, _ in cache.records}
    for clip_id, qs in by_clip.items():
        clip = sources[clip_id]
        try:
            identity = source_identity(clip.path)
        except OSError as exc:  # absent, a folder, a pipe: named as extraction names it
            reason = "no such file" if not os.path.lexists(clip.path) else (exc.strerror or str(exc))
            reason = reason if reason.startswith(clip.path) else f"{clip.path}: {reason}"
            plan.failed.append(Failure(clip.clip_id, clip.path, reason))
            continue
        jobs = []
        for q in qs:
            job = _job(q, clip, identity, config)
            plan.fingerprints[q.question_id] = job.fingerprint
            if cache.get(q.question_id, job.fingerprint) is not None:
                plan.reused += 1
                continue
            jobs.append(job)
            plan.repeated += cache.in_flight(q.question_id, job.fingerprint)
            plan.stale += q.question_id in cached_ids
        if jobs:
            plan.todo.append((clip, jobs))
    return plan


def _job(q: Question, clip, identity, config: VLMConfig) -> _Job:
    text = config.prompt.render(question=q.question, frames=config.frames.n)
    segment = None if clip.segment is None else [clip.segment.start, clip.segment.end]
    fingerprint = request_fingerprint({
        "model": config.model, "text": text, "frames": config.frames.to_dict(),
        "generation": {"max_tokens": config.max_tokens, "temperature": config.temperature},
        "video": {"size": identity.size, "digest": identity.digest, "segment": segment}})
    return _Job(q, text, fingerprint)


# ---------------------------------------------------------------------------------------------------
# Asking: the main thread decodes clip by clip; worker threads send.


@dataclass
class _Asked:
    asked: int = 0
    failures: list = field(default_factory=list)
    retries: Counter = field(default_factory=Counter)
    short_warnings: int = 0


def _ask_all(plan: _Plan, *, client: ChatClient, cache: ReplyCache, config: VLMConfig,
             on_answer: Callable[[], None] | None) -> _Asked:
    from ..features.pipeline import Failure
    from ..video import VideoError

    result = _Asked(failures=list(plan.failed))
    if not plan.todo:
        return result
    lock = threading.Lock()

    def send(job: _Job, urls: tuple[str, ...]) -> None:
        content = [{"type": "image_url", "image_url": {"url": u}} for u in urls]
        cache.mark_sent(job.question.question_id, job.fingerprint)
        reply = client.ask(question_id=job.question.question_id,
                           content=[*content, {"type": "text", "text": job.text}])
        parsed = parse_reply(reply.text)
        cache.append(CachedReply(job.question.question_id, job.fingerprint, reply.text, parsed.answer,
                                 parsed.rule, reply.finish_reason, reply.model, reply.attempts))
        with lock:
            result.asked += 1
            result.retries.update(reply.retried)
            if on_answer:
                on_answer()

    with _Workers(config.concurrency, send) as workers:
        for clip, jobs, decoded in _decoded(plan.todo, config):
            if isinstance(decoded, VideoError):
                result.failures.append(Failure(clip.clip_id, clip.path, str(decoded)))
                log.debug("failed: %s: %s", clip.clip_id, decoded)
                continue
            frames, verdict = decoded
            if verdict.status == "short":  # cut short: its frames would not span the clip asked about
                result.failures.append(Failure(clip.clip_id, clip.path, verdict.reason or "", verdict.decoded,
                                               verdict.expected, verdict.expected_from))
                continue
            if verdict.status == "warn":
                result.short_warnings += 1
                log.warning("%s", verdict.reason)
            for job in jobs:
                workers.put(job, frames.urls)
    return result


def _decoded(todo: list, config: VLMConfig):
    """``(clip, jobs, (ClipFrames, LengthVerdict) or the VideoError)`` in the order of ``todo``, decoded
    by ``config.decoders`` threads a few clips ahead (PyAV decodes and converts frames without the GIL:
    one thread would cap a run at the decoding speed of one core). The length is judged by the rule
    of extraction (:func:`moviefib.features.workers.judge_clip`: against the clip's extracted times)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    from ..features.workers import judge_clip
    from ..integrity import DurationTolerance
    from ..video import DecodedSpan, VideoError
    from .frames import clip_frames

    def decode(clip):
        span = DecodedSpan()
        try:
            frames = clip_frames(clip.path, config.frames, segment=clip.segment, span=span)
        except VideoError as exc:
            return exc
        return frames, judge_clip(clip, span, DurationTolerance())

    ahead: deque = deque()
    items = iter(todo)
    with ThreadPoolExecutor(config.decoders, thread_name_prefix="vlm-decode") as pool:
        while True:
            while len(ahead) < 2 * config.decoders and (item := next(items, None)) is not None:
                ahead.append((*item, pool.submit(decode, item[0])))
            if not ahead:
                return
            clip, jobs, future = ahead.popleft()
            yield clip, jobs, future.result()


class _Workers:
    """``n`` daemon threads running ``handle(*item)`` for the items put, at most ``n`` queued.

    The first exception of a worker stops the others (queued items are dropped, requests in flight
    finish) and is raised in the main thread by :meth:`put` or on leaving the ``with`` block. Daemon
    threads: Ctrl-C in the main thread ends the process without waiting for requests in flight (their
    replies, if any, are not cached and will be asked again).
    """

    def __init__(self, n: int, handle: Callable):
        self.handle, self.error = handle, None
        self.items: queue.Queue = queue.Queue(maxsize=n)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True, name=f"vlm-{i}") for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self) -> None:
        while (item := self.items.get()) is not None:
            if self.stop.is_set():
                continue
            try:
                self.handle(*item)
            except BaseException as exc:  # handed to the main thread, which raises it
                self.error = self.error or exc
                self.stop.set()

    def put(self, *item) -> None:
        while not self.stop.is_set():
            try:
                self.items.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise self.error

    def __enter__(self) -> _Workers:
        return self

    def _drain(self) -> None:
        """Drop the queued items and tell every thread to end once its request in flight is over."""
        while True:
            try:
                self.items.get_nowait()
            except queue.Empty:
                break
        for _ in self.threads:
            try:
                self.items.put_nowait(None)
            except queue.Full:
                break

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:  # Ctrl-C, a worker's error or a bug: stop asking
            self.stop.set()
            self._drain()
            return
        for _ in self.threads:
            self.items.put(None)
        for t in self.threads:
            t.join()
        if self.error is not None:
            raise self.error


# ---------------------------------------------------------------------------------------------------
# Outputs


def _answers(questions: list[Question], plan: _Plan, cache: ReplyCache) -> tuple[dict[str, str], Counter]:
    """The submission's answers in the split's order, and the counts by outcome. Cached replies are
    parsed again with the current rule (the raw reply is what the cache keeps)."""
    answers: dict[str, str] = {}
    counts: Counter = Counter({"answered": 0, "unparsed": 0, "no_video": 0, "cut": 0})
    for q in questions:
        fp = plan.fingerprints.get(q.question_id)
        record = None if fp is None else cache.get(q.question_id, fp)
        if record is None:  # its clip failed (asked questions all have a record by now)
            answers[q.question_id] = UNPARSED_ANSWER
            counts["no_video"] += 1
            continue
        parsed = parse_reply(record.reply)
        answers[q.question_id] = parsed.submitted
        counts["cut"] += record.finish_reason == "length"
        counts["unparsed" if parsed.answer is None else "answered"] += 1
        counts[f"rule: {parsed.rule}"] += 1
    return answers, counts


def _write_failures(path: Path, failures: list) -> str | None:
    if not failures:
        if path.exists():
            path.unlink()  # from an earlier run whose failed clips now decode
        return None
    atomic_write(path, "".join(json.dumps(f.to_json()) + "\n" for f in failures), fsync=True)
    return str(path)


def _table_sha256(dataset, split: str) -> str:
    from ..fileio import sha256_file
    from ..schema import DATA_DIR

    return sha256_file(Path(dataset) / DATA_DIR / f"{split}.parquet")


def _settings(dataset, split: str, video_root, config: VLMConfig, summary: VLMSummary,
              counts: Counter) -> dict:
    import importlib.metadata

    versions = {}
    for dist in ("moviefib", "openai", "av", "pillow"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    return {
        "format": SETTINGS_FORMAT, "finished": True, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        # The dataset by its real path (a rerun from elsewhere is recognised) and the split's table by
        # its SHA-256 (the questions asked, as moviefib evaluate fingerprints them).
        "dataset": str(Path(dataset).resolve()), "split": split, "table_sha256": _table_sha256(dataset, split),
        "video_root": str(Path(video_root).resolve()), "movies": config.movies,
        "model": config.model, "endpoint": shown_endpoint(config.endpoint),
        "api_key_env": config.api_key_env, "api_key_set": bool(os.environ.get(config.api_key_env)),
        "prompt": config.prompt.to_dict(), "frames": config.frames.to_dict(),
        "parse_rule": PARSE_RULE_VERSION, "unparsed_answer": UNPARSED_ANSWER,
        "generation": {"max_tokens": config.max_tokens, "temperature": config.temperature},
        "concurrency": config.concurrency, "decoders": config.decoders, "retry": config.retry.to_dict(),
        "counts": {"questions": summary.questions, "asked": summary.asked, "reused": summary.reused,
                   "repeated_in_flight": summary.repeated, "stale_cached": summary.stale,
                   "short_warnings": summary.short_warnings,
                   **dict(sorted(counts.items())), "failed_clips": len(summary.failures),
                   "retries": summary.retries},
        "reply_cache": summary.cache_path, "failures": summary.failures_path,
        "seconds": round(summary.seconds, 3), "versions": versions,
    }
