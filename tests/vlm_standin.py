"""A stand-in for an OpenAI-compatible Video-LLM server, on localhost, for the predict-vlm tests.

It is a real HTTP server (``http.server``, one thread per connection, HTTP/1.1 keep-alive) serving
``POST /v1/chat/completions``. Every request is checked as a strict server would: the bearer key (401
when wrong), the model, one user message of ``image_url`` parts then one text part; every image is a
``data:image/jpeg;base64`` URL that is decoded (Pillow), must be a JPEG, as many as expected, no
larger than expected. A request that breaks a rule gets a 400 and is recorded in ``problems``.

It replies as models do, by the question (sent in the ``X-MovieFIB-Question`` header; the answer
comes from ``answers`` when given, else a fixed word), in one of five styles chosen by a hash of the
question id: a bare word, ``The answer is: word.``, ``"Word"``, ``**word**`` and several words (which
cannot be reduced to one). Faults come deterministically by request number (1-based, in arrival
order): ``faults={3: "429", 5: "500", 8: "timeout", 9: "malformed"}`` and/or ``every={"429": 7}``.
``timeout`` holds the request for ``hang_seconds`` before answering; ``429`` carries ``Retry-After``.
Bodies as odd servers send them, on the same terms: ``parts`` (the content as a list of text parts),
``sse`` (an event stream though none was asked for), ``null`` (content null: a reasoning model out of
tokens), ``html`` (a web server's page with status 200), ``huge`` (a 5 MiB reply) and ``echo_key``
(a 400 whose message repeats the Authorization header, as careless servers do).

``gate_after=N``: after N requests let through (so N replies, without faults), further requests are
held (their questions listed in ``held``) until
:meth:`StandIn.release` — a deterministic moment to kill a client with its requests in flight.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STYLES = ("bare", "answer_is", "quoted", "bold", "several")
ODD_BODIES = ("parts", "sse", "null", "html", "huge", "echo_key")


def _completion(number: int, model: str, content) -> dict:
    return {"id": f"chatcmpl-{number}", "object": "chat.completion", "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 3, "total_tokens": 103}}


def style_of(question_id: str) -> str:
    return STYLES[int(hashlib.sha256(question_id.encode()).hexdigest(), 16) % len(STYLES)]


def reply_text(question_id: str, word: str) -> str:
    style = style_of(question_id)
    return {"bare": word, "answer_is": f"The answer is: {word}.", "quoted": f'"{word.capitalize()}"',
            "bold": f"**{word}**", "several": f"It could be {word} or something else"}[style]


@dataclass
class Record:
    """One request as received: its number, question, what was done, frames and their largest side."""

    number: int
    question_id: str | None
    outcome: str
    frames: int = 0
    max_side: int = 0


@dataclass
class StandIn:
    """The server; :meth:`start` returns its base URL (``http://127.0.0.1:PORT/v1``)."""

    model: str = "standin-vl"
    api_key: str | None = None
    expect_frames: int | None = None
    max_side: int | None = None
    answers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    faults: dict[int, str] = field(default_factory=dict)
    every: dict[str, int] = field(default_factory=dict)
    retry_after: str = "0"
    hang_seconds: float = 30.0
    gate_after: int | None = None
    decode_images: bool = True

    def __post_init__(self):
        self.records: list[Record] = []
        self.problems: list[str] = []
        self.held: list[str | None] = []  # questions of the requests held at the gate
        self.replied = 0
        self.admitted = 0  # requests let through the gate (counted as they pass it: no race)
        self._lock = threading.Lock()
        self._gate = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # -- life cycle
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def stop(self) -> None:
        self._gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def release(self) -> None:
        self._gate.set()

    def __enter__(self) -> StandIn:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- what happened
    def outcomes(self) -> Counter:
        with self._lock:
            return Counter(r.outcome for r in self.records)

    def answered(self) -> list[str]:
        """Question ids that got a reply (200), in order."""
        with self._lock:
            return [r.question_id for r in self.records if r.outcome == "ok"]

    def requested(self) -> list[str]:
        with self._lock:
            return [r.question_id for r in self.records]

    # -- the decisions
    def _next(self, question_id: str | None) -> Record:
        with self._lock:
            number = len(self.records) + 1
            fault = self.faults.get(number)
            for kind, period in self.every.items():
                if fault is None and number % period == 0:
                    fault = kind
            rec = Record(number, question_id, fault or "ok")
            self.records.append(rec)
            return rec

    def _wait_gate(self, question_id: str | None) -> None:
        with self._lock:
            gated = self.gate_after is not None and self.admitted >= self.gate_after
            if gated:
                self.held.append(question_id)
            else:
                self.admitted += 1
        if gated:
            self._gate.wait()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: StandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        """``GET /stats``: the outcomes and problems so far (for a stand-in in another process)."""
        if self.path != "/stats":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        self._send(200, {"outcomes": dict(self.standin.outcomes()), "problems": self.standin.problems})

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        s = self.standin
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        qid = self.headers.get("X-MovieFIB-Question")
        if self.path != "/v1/chat/completions":
            return self._send(404, {"error": {"message": f"no route {self.path}"}})
        s._wait_gate(qid)
        rec = s._next(qid)
        if rec.outcome == "429":
            return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": s.retry_after})
        if rec.outcome == "500":
            return self._send(500, {"error": {"message": "internal error"}})
        if rec.outcome == "timeout":
            time.sleep(s.hang_seconds)
        if s.api_key is not None and self.headers.get("Authorization") != f"Bearer {s.api_key}":
            rec.outcome = "unauthorized"
            return self._send(401, {"error": {"message": "Incorrect API key provided"}})
        problem = self._check(body, rec)
        if problem:
            rec.outcome = "bad"
            with s._lock:
                s.problems.append(f"request {rec.number} ({qid}): {problem}")
            return self._send(400, {"error": {"message": problem}})
        if s.latency:
            time.sleep(s.latency)
        if rec.outcome == "malformed":
            return self._send_raw(200, b'{"id": "chatcmpl-1", "choices": [{"message": ')
        if rec.outcome in ODD_BODIES:
            return self._send_odd(rec)
        with s._lock:
            s.replied += 1
        word = s.answers.get(qid or "", "door")
        self._send(200, _completion(rec.number, s.model, reply_text(qid or "", word)))

    def _send_odd(self, rec: Record) -> None:
        s = self.standin
        if rec.outcome == "html":
            return self._send_raw(200, b"<html><body>Welcome to nginx!</body></html>", content_type="text/html")
        if rec.outcome == "echo_key":
            return self._send(400, {"error": {"message": f"bad header {self.headers.get('Authorization')}"}})
        with s._lock:
            s.replied += 1
        text = reply_text(rec.question_id or "", s.answers.get(rec.question_id or "", "door"))
        if rec.outcome == "sse":
            events = [{"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                      for piece in (text[:2], text[2:])]
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            return self._send_raw(200, body.encode(), content_type="text/event-stream")
        content = {"parts": [{"type": "text", "text": text}], "null": None, "huge": "door " * (1 << 20)}
        self._send(200, _completion(rec.number, s.model, content[rec.outcome]))

    def _check(self, body: bytes, rec: Record) -> str | None:
        """Why the request breaks the rules of a strict server, or None."""
        s = self.standin
        try:
            req = json.loads(body)
        except ValueError as exc:
            return f"body is not JSON ({exc})"
        if req.get("model") != s.model:
            return f"unknown model {req.get('model')!r}"
        msgs = req.get("messages")
        if not (isinstance(msgs, list) and len(msgs) == 1 and msgs[0].get("role") == "user"):
            return "expected one user message"
        parts = msgs[0].get("content")
        if not isinstance(parts, list) or not parts or parts[-1].get("type") != "text":
            return "expected image parts then one text part"
        images = parts[:-1]
        if any(p.get("type") != "image_url" for p in images):
            return "a part before the text is not an image_url"
        rec.frames = len(images)
        if s.expect_frames is not None and rec.frames != s.expect_frames:
            return f"{rec.frames} frames, expected {s.expect_frames}"
        if "_____" not in parts[-1].get("text", ""):
            return "the text holds no blank"
        return self._check_images(images, rec) if s.decode_images else None

    def _check_images(self, images: list, rec: Record) -> str | None:
        from PIL import Image

        for i, part in enumerate(images):
            url = part.get("image_url", {}).get("url", "")
            head, _, data = url.partition(",")
            if head != "data:image/jpeg;base64":
                return f"image {i}: not a JPEG data URL ({head[:40]!r})"
            try:
                im = Image.open(io.BytesIO(base64.b64decode(data, validate=True)))
                im.load()
            except (ValueError, OSError) as exc:
                return f"image {i}: cannot be decoded ({exc})"
            if im.format != "JPEG":
                return f"image {i}: a {im.format}, not a JPEG"
            rec.max_side = max(rec.max_side, *im.size)
            if self.standin.max_side is not None and max(im.size) > self.standin.max_side:
                return f"image {i}: {im.size} is larger than {self.standin.max_side} pixels"
        return None

    def _send(self, status: int, obj: dict, headers: dict | None = None) -> None:
        self._send_raw(status, json.dumps(obj).encode(), headers)

    def _send_raw(self, status: int, data: bytes, headers: dict | None = None,
                  content_type: str = "application/json") -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout) or was killed


def serve_forever(port: int, latency: float, expect_frames: int | None = None) -> None:
    """Run a stand-in in the foreground (for ``scripts/bench_vlm.py`` in its own process)."""
    s = StandIn(latency=latency, expect_frames=expect_frames)
    handler = type("Handler", (_Handler,), {"standin": s})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    server.serve_forever()


def write_clips(dataset, split: str, root, *, size: tuple[int, int] = (160, 96), fps: int = 25) -> dict:
    """A synthetic lossless clip file ``root/<movie>/<clip_id>.avi`` for every clip of ``split``, as
    long as its extracted times say (so that the length check passes); returns ``{question_id:
    answer}`` of the split (what a perfect model would reply; None in a blind split)."""
    from pathlib import Path

    from moviefib.dataset import read_table
    from moviefib.formats import movie_of
    from moviefib.video import write_synthetic_video

    table = read_table(dataset, split, columns=["question_id", "clip_id", "answer", "start_extracted",
                                                "end_extracted"]).to_pylist()
    lengths = {r["clip_id"]: r["end_extracted"] - r["start_extracted"] for r in table}
    for clip_id, seconds in lengths.items():
        folder = Path(root) / movie_of(clip_id)
        folder.mkdir(parents=True, exist_ok=True)
        write_synthetic_video(folder / f"{clip_id}.avi", max(1, round(seconds * fps)), fps=fps, size=size)
    return {r["question_id"]: r["answer"] for r in table}
