"""The web application (Flask) that shows one blanked question at a time and records the answers.

Endpoints (JSON unless said otherwise):

* ``GET /`` the page (plain HTML/JS/CSS from ``static/``);
* ``GET /api/config`` the served mode and the number of questions;
* ``GET /api/next?annotator=ID`` the next question for that annotator (its text around the blank and,
  in video mode, the URL of its clip) and their progress, or ``done``;
* ``POST /api/answer`` ``{annotator, question_id, answer, seconds, skipped}``: 200 with the record,
  400 with ``error`` (a message for the page) for invalid input, 409 when the protocol refuses it;
* ``GET /clip/<question_id>`` the question's clip as WebM (video mode only; range requests work).

Bound to a loopback address without a token, only ``Host: localhost|127.0.0.1|[::1]`` is accepted (a
web page elsewhere cannot reach the server through DNS rebinding). With a token, every request must
carry it: ``?token=`` on the first visit sets a cookie for the rest.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

from .answers import AnswerFileError, InvalidInput
from .clips import ClipCache, ClipError
from .protocol import AnnotationSession, Conflict

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).with_name("static")
TOKEN_COOKIE = "moviefib_human_token"
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]", "::1"}


def is_loopback(host: str) -> bool:
    """Whether a bind address only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    from flask import Flask, abort, jsonify, request, send_file

    if session.mode == "video" and clips is None:
        raise ValueError("video mode needs a ClipCache")
    app = Flask(__name__, static_folder=str(STATIC_DIR), static_url_path="/static")
    app.json.sort_keys = False

    @app.before_request
    def _guard():
        if options.token is None:
            if options.loopback and request.host.rsplit(":", 1)[0] not in _LOCAL_HOSTS:
                return "Forbidden: open this page as http://localhost:<port>/\n", 403
            return None
        given = (request.headers.get("X-MovieFIB-Token") or request.cookies.get(TOKEN_COOKIE)
                 or request.args.get("token") or "")
        if not hmac.compare_digest(given.encode(), options.token.encode()):
            message = ("Forbidden: this server needs a token; open the URL that `moviefib human serve` "
                       "printed (it ends with ?token=...).\n")
            return message, 403
        return None

    @app.after_request
    def _remember_token(resp):
        if options.token is not None and request.args.get("token") == options.token:
            resp.set_cookie(TOKEN_COOKIE, options.token, httponly=True, samesite="Strict")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.errorhandler(AnswerFileError)
    def _bad_answer_file(exc):  # someone edited the file under a running server
        log.error("%s", exc)
        return jsonify(error=f"The answer file is broken: {exc}"), 500

    @app.get("/")
    def index():
        return send_file(STATIC_DIR / "index.html", mimetype="text/html", max_age=0)

    @app.get("/api/config")
    def config():
        return jsonify(mode=session.mode, questions=len(session.questions), title=options.title)

    @app.get("/api/next")
    def next_question():
        try:
            q, progress = session.next_question(request.args.get("annotator", ""))
        except InvalidInput as exc:
            return jsonify(error=str(exc)), 400
        body = {"progress": asdict(progress), "done": q is None, "question": None}
        if q is not None and clips is not None:
            after = session.following(request.args.get("annotator", ""), q)
            if after is not None:
                clips.prefetch(after.clip_id)
        if q is not None:
            body["question"] = {"question_id": q.question_id, "before": q.before, "after": q.after,
                                "clip_url": f"/clip/{q.question_id}" if session.mode == "video" else None}
        return jsonify(body)

    @app.post("/api/answer")
    def answer():
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            # A JSON body is also what keeps other sites out: they cannot send one without a CORS
            # preflight, which this server never grants.
            return jsonify(error="The request must be a JSON object."), 400
        try:
            record = session.submit(data.get("annotator"), data.get("question_id"), data.get("answer"),
                                    data.get("seconds"), data.get("skipped", False))
        except Conflict as exc:
            return jsonify(error=str(exc)), 409
        except InvalidInput as exc:
            return jsonify(error=str(exc)), 400
        except (OSError, AnswerFileError) as exc:  # disk full, file edited by hand
            log.error("answer not saved: %s", exc)
            return jsonify(error=f"The answer was NOT saved ({exc}); tell the organiser."), 500
        return jsonify(record=asdict(record))

    @app.get("/clip/<question_id>")
    def clip(question_id: str):
        q = session.question(question_id) if session.mode == "video" else None
        if q is None:
            abort(404)
        try:
            path = clips.get(q.clip_id)
        except ClipError as exc:
            log.error("%s", exc)
            return str(exc), 500
        resp = send_file(path, mimetype="video/webm", conditional=True, max_age=3600)
        resp.headers["Cache-Control"] = "private, max-age=3600"
        return resp

    return app


class HumanServer:
    """A threaded WSGI server for the application, startable in the background (tests, scripts)."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        from werkzeug.serving import make_server

        self._server = make_server(host, port, app, threaded=True)
        self.host, self.port = host, self._server.server_port
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


def make_app(dataset: str | os.PathLike, split: str, mode: str, answers: str | os.PathLike, *,
             video_root: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
             sample: int | None = None, seed: int = 0, token: str | None = None,
             host: str = "127.0.0.1"):
    """Load the questions, open the answer file and build the application (what the CLI serves).

    Each error has a one-line reason: a bad dataset or split (``DatasetError``, ``QuestionError``), a
    bad answer file (``AnswerFileError``), a missing video root or missing clips (``ClipError``), a
    non-loopback ``host`` without a token (``ValueError``).
    """
    from .questions import load_questions, sample_questions

    loopback = is_loopback(host)
    if not loopback and not token:
        raise ValueError(f"serving on {host} (not this machine only) needs a token (--token)")
    split_questions = load_questions(dataset, split, seed=seed)
    questions = split_questions if sample is None else sample_questions(split_questions, sample)
    clips = None
    if mode == "video":
        if video_root is None:
            raise ClipError("video mode needs the folder of the clips (--video-root)")
        if not Path(video_root).is_dir():
            raise ClipError(f"{video_root}: no such video folder")
        clips = ClipCache(video_root, cache_dir or default_cache_dir())
        clips.cache_dir.mkdir(parents=True, exist_ok=True)  # fail now, not at the first clip
        missing = [q.clip_id for q in questions if not clips.source(q.clip_id).is_file()]
        if missing:
            raise ClipError(f"{len(missing)} of {len(questions)} questions have no clip under "
                            f"{video_root}, e.g. {clips.source(missing[0])}")
    session = AnnotationSession(questions, mode, answers, split_questions=split_questions)
    return create_app(session, clips, ServerOptions(token=token, loopback=loopback,
                                                    title=f"{Path(dataset).name} / {split}"))
