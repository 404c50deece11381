"""The web application (Flask) that shows one blanked question at a time and records the answers.

Endpoints (JSON unless said otherwise):

* ``GET /`` the page (plain HTML/JS/CSS from ``static/``);
* ``GET /api/config`` the served mode and the number of questions;
* ``GET /api/next?annotator=ID`` the next question for that annotator (its text around the blank and,
  in video mode, the URL of its clip) and their progress, or ``done``; in video mode the clip is made
  ready first, and questions whose clip is refused (cut short, undecodable) are left out and named in
  ``notices``;
* ``POST /api/answer`` ``{annotator, question_id, answer, seconds, skipped}`` (JSON, at most
  :data:`MAX_BODY_BYTES`): 200 with the record, 400 with ``error`` (a message for the page) for invalid
  input, 409 when the protocol refuses it, 413 for a body too large;
* ``GET /clip/<question_id>`` the question's clip as WebM (video mode only; range requests work); 404
  with ``error`` when the question has no clip that can be served whole.

Every refused request gets a 4xx JSON ``{"error": ...}``; a 5xx is the server's own trouble (an answer
file edited under it, a clip cache that cannot be written).

Bound to a loopback address without a token, only ``Host: localhost|127.0.0.1|[::1]`` is accepted (a
web page elsewhere cannot reach the server through DNS rebinding). With a token, every request must
carry it: ``?token=`` on the first visit sets a cookie for the rest.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import re
import socket
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from ..fileio import file_in_the_way
from ..integrity import DurationTolerance
from .answers import AnswerFileError, InvalidInput, strict_json
from .clips import ClipCache, ClipCacheError, ClipError, ClipRefused
from .protocol import AnnotationSession, Conflict
from .questions import HumanQuestion

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
TOKEN_COOKIE = "moviefib_human_token"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}
# An answer is under 1 KB; the cap keeps a runaway client from filling the server's memory.
MAX_BODY_BYTES = 64 * 1024


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name part of a Host header: ``[::1]:8000`` -> ``[::1]``; ``[::1]`` stays whole (Werkzeug
    drops a default port, and cutting at the last colon would leave ``[:``)."""
    m = re.match(r"^(\[[^\]]*\])(:\d+)?$", host)
    if m:
        return m.group(1)
    return host.rsplit(":", 1)[0]  # anything else after an IPv6 bracket stays foreign


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "moviefib" / "human-clips"


@dataclass(frozen=True)
class ServerOptions:
    """How the application is exposed.

    Attributes:
        token: the secret every request must carry (None: no token, allowed on loopback only).
        loopback: the server is bound to a loopback address (enables the Host-header check).
        title: shown in the page header (e.g. ``dataset / split``).
    """

    token: str | None = None
    loopback: bool = True
    title: str = ""


def create_app(session: AnnotationSession, clips: ClipCache | None, options: ServerOptions):
    """The Flask application over an annotation session (``clips`` is required in video mode)."""
    from flask import Flask

    if session.mode == "video" and clips is None:
        raise ValueError("video mode needs a ClipCache")
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.json.sort_keys = False
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    _add_error_replies(app)
    _add_access_checks(app, options)
    _Routes(session, clips, options).add_to(app)
    return app


def _add_error_replies(app) -> None:
    """Errors as JSON ``{"error": ...}`` the page can show."""
    from flask import jsonify
    from werkzeug.exceptions import HTTPException

    @app.errorhandler(HTTPException)
    def _http_error(exc):  # 404, 405, 413...: JSON the page can show, not Werkzeug's HTML
        message = (f"The request is too large (at most {MAX_BODY_BYTES // 1024} KB)." if exc.code == 413
                   else f"{exc.name}: {exc.description}")
        return jsonify(error=message), exc.code

    @app.errorhandler(AnswerFileError)
    def _bad_answer_file(exc):  # someone edited the file under a running server
        log.error("%s", exc)
        return jsonify(error=f"The answer file is broken: {exc}"), 500


def _access_refusal(options: ServerOptions, request) -> str | None:
    """Why ``request`` may not reach the application (the body of a 403), or None.

    Without a token, a server bound to loopback accepts only a local ``Host`` (DNS rebinding); with
    one, the request must carry it (header, cookie or ``?token=``).
    """
    if options.token is None:
        if options.loopback and _host_name(request.host) not in _LOCAL_HOSTS:
            return "Forbidden: open this page as http://localhost:<port>/\n"
        return None
    given = (request.headers.get("X-MovieFIB-Token") or request.cookies.get(TOKEN_COOKIE)
             or request.args.get("token") or "")
    if not hmac.compare_digest(given.encode(), options.token.encode()):
        return ("Forbidden: this server needs a token; open the URL that `moviefib human serve` "
                "printed (it ends with ?token=...).\n")
    return None


def _add_access_checks(app, options: ServerOptions) -> None:
    """Refuse foreign requests before any route runs; turn a ``?token=`` into a cookie."""
    from flask import request

    @app.before_request
    def _guard():
        refusal = _access_refusal(options, request)
        return None if refusal is None else (refusal, 403)

    @app.after_request
    def _remember_token(resp):
        if options.token is not None and request.args.get("token") == options.token:
            resp.set_cookie(TOKEN_COOKIE, options.token, httponly=True, samesite="Strict")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp


def _json_body(request) -> dict | None:
    """The request's JSON object, or None; a body over the cap raises 413 here."""
    # A JSON content type is also what keeps other sites out: they cannot send one without a
    # CORS preflight, which this server never grants.
    if not request.is_json:
        return None
    try:
        data = strict_json(request.get_data(cache=False))
    except (UnicodeDecodeError, ValueError):  # not JSON, NaN, nested too deeply, 5,000 digits
        return None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class _Routes:
    """The page's endpoints over one session and, in video mode, its clip cache."""

    session: AnnotationSession
    clips: ClipCache | None
    options: ServerOptions

    def add_to(self, app) -> None:
        # Each endpoint is named after its method (index, config, next_question, answer, clip).
        app.get("/")(self.index)
        app.get("/api/config")(self.config)
        app.get("/api/next")(self.next_question)
        app.post("/api/answer")(self.answer)
        app.get("/clip/<question_id>")(self.clip)

    def index(self):
        from flask import send_file

        return send_file(STATIC_DIR / "index.html", mimetype="text/html", max_age=0)

    def config(self):
        from flask import jsonify

        return jsonify(mode=self.session.mode, questions=len(self.session.questions), title=self.options.title)

    def next_servable(self, annotator: str):
        """The next question whose clip (in video mode) is ready, the progress, and what was left out."""
        notices = []
        while True:
            q, progress = self.session.next_question(annotator)
            if q is None or self.clips is None:
                return q, progress, notices
            try:
                self.clips.get(q.clip_id, clip_seconds=q.clip_seconds)
                return q, progress, notices
            except ClipRefused as exc:  # never serve part of a clip: leave its questions out
                log.error("%s; its questions are left out", exc)
                self.session.clip_unavailable(q.clip_id)
                notices.append(f"A question was left out, its clip is not available: {exc}")

    def next_question(self):
        from flask import jsonify, request

        annotator = request.args.get("annotator", "")
        try:
            q, progress, notices = self.next_servable(annotator)
        except InvalidInput as exc:
            return jsonify(error=str(exc)), 400
        except ClipCacheError as exc:
            log.error("%s", exc)
            return jsonify(error=f"The clip cannot be prepared ({exc}); tell the organiser."), 503
        body = {"progress": asdict(progress), "done": q is None, "question": None, "notices": notices}
        if q is not None and self.clips is not None:
            after = self.session.following(annotator, q)
            if after is not None:
                self.clips.prefetch(after.clip_id, clip_seconds=after.clip_seconds)
        if q is not None:
            body["question"] = {"question_id": q.question_id, "before": q.before, "after": q.after,
                                "clip_url": f"/clip/{q.question_id}" if self.session.mode == "video" else None}
        return jsonify(body)

    def answer(self):
        from flask import jsonify, request

        data = _json_body(request)
        if data is None:
            return jsonify(error="The request must be a JSON object."), 400
        try:
            record = self.session.submit(data.get("annotator"), data.get("question_id"), data.get("answer"),
                                         data.get("seconds"), data.get("skipped", False))
        except Conflict as exc:
            return jsonify(error=str(exc)), 409
        except InvalidInput as exc:
            return jsonify(error=str(exc)), 400
        except (OSError, AnswerFileError) as exc:  # disk full, file edited by hand
            log.error("answer not saved: %s", exc)
            return jsonify(error=f"The answer was NOT saved ({exc}); tell the organiser."), 500
        return jsonify(record=asdict(record))

    def clip(self, question_id: str):
        from flask import abort, jsonify, send_file

        q = self.session.question(question_id) if self.session.mode == "video" else None
        if q is None:
            abort(404)
        try:
            path = self.clips.get(q.clip_id, clip_seconds=q.clip_seconds)
        except ClipRefused as exc:
            return jsonify(error=f"The clip of this question is not available: {exc}"), 404
        except ClipCacheError as exc:
            log.error("%s", exc)
            return jsonify(error=f"The clip cannot be prepared ({exc}); tell the organiser."), 503
        resp = send_file(path, mimetype="video/webm", conditional=True, max_age=3600)
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp


def _listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (werkzeug duplicates it, so the caller closes this one)."""
    # The family werkzeug will assume for the socket: IPv6 for an address with ':', else IPv4.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    info = socket.getaddrinfo(host.strip("[]"), port, family, socket.SOCK_STREAM)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as werkzeug does: restart at once
        sock.bind(info[4])
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class HumanServer:
    """A threaded WSGI server for the application, startable in the background (tests, scripts)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        """Listen on ``host:port`` (0: a free port); a port in use or a bad host raise ``OSError``."""
        from werkzeug.serving import make_server

        # Bound here, not by werkzeug: on a port in use werkzeug prints two lines and calls sys.exit(1).
        with _listen(host, port) as sock:
            self._server = make_server(host, port, app, threaded=True, fd=sock.fileno())
        self.host, self.port = host, self._server.port
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{'localhost' if is_loopback(self.host) else host}:{self.port}/"

    def serve_forever(self) -> None:
        self._server.serve_forever()

    def start(self) -> HumanServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="moviefib-human",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> HumanServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _check_cache_dir(folder: Path) -> None:
    if folder.exists() and not folder.is_dir():
        raise ClipError(f"{folder}: the clip cache (--cache-dir) is not a folder")
    blocker = file_in_the_way(folder)
    if blocker is not None:
        raise ClipError(f"cannot create the clip cache {folder} (--cache-dir): {blocker} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ClipError(f"{folder}: cannot create the clip cache (--cache-dir): {exc.strerror or exc}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ClipError(f"{folder}: the clip cache (--cache-dir) is not writable")


def served_questions(dataset: str | os.PathLike, split: str, *, sample: int | None = None,
                     seed: int = 0) -> tuple[list[HumanQuestion], list[HumanQuestion]]:
    """The questions served (the split, or its seeded sample) and all questions of the split."""
    from .questions import load_questions, sample_questions

    split_questions = load_questions(dataset, split, seed=seed)
    questions = split_questions if sample is None else sample_questions(split_questions, sample)
    return questions, split_questions


def open_clip_cache(video_root: str | os.PathLike | None, cache_dir: str | os.PathLike | None,
                    questions: list[HumanQuestion], *,
                    tolerance: DurationTolerance = DurationTolerance()) -> ClipCache:
    """The clip cache for ``questions``, refused (``ClipError``) unless every clip has its file."""
    if video_root is None:
        raise ClipError("video mode needs the folder of the clips (--video-root)")
    if not Path(video_root).is_dir():
        raise ClipError(f"{video_root}: no such video folder")
    clips = ClipCache(video_root, cache_dir or default_cache_dir(), tolerance=tolerance)
    _check_cache_dir(clips.cache_dir)  # fail now, not at the first clip
    missing = [q.clip_id for q in questions if not clips.source(q.clip_id).is_file()]
    if missing:
        raise ClipError(f"{len(missing)} of {len(questions)} questions have no clip under "
                        f"{video_root}, e.g. {clips.source(missing[0])}")
    return clips


def make_app(dataset: str | os.PathLike, split: str, mode: str, answers: str | os.PathLike, *,
             video_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             sample: int | None = None, seed: int = 0, token: str | None = None,
             host: str = "127.0.0.1", tolerance: DurationTolerance = DurationTolerance()):
    """Load the questions, open the answer file and build the application (what the CLI serves).

    Each error has a one-line reason: a bad dataset or split (``DatasetError``, ``QuestionError``), a
    bad answer file (``AnswerFileError``), a missing video root, missing clips or clip ids leading
    outside it (``ClipError``), a non-loopback ``host`` without a token (``ValueError``).
    """
    loopback = is_loopback(host)
    if not loopback and not token:
        raise ValueError(f"serving on {host} (not this machine only) needs a token (--token)")
    questions, split_questions = served_questions(dataset, split, sample=sample, seed=seed)
    clips = open_clip_cache(video_root, cache_dir, questions, tolerance=tolerance) if mode == "video" else None
    session = AnnotationSession(questions, mode, answers, split_questions=split_questions)
    return create_app(session, clips, ServerOptions(token=token, loopback=loopback,
                                                    title=f"{Path(dataset).name} / {split}"))
