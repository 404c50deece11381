"""Chat-completions requests through the official ``openai`` client, with our own retries.

The ``openai`` client is built with ``max_retries=0``: it would otherwise retry on its own (twice by
default) under every retry of ours, and a 429 would be answered by up to three times the requests the
server asked us not to send. Retries (:class:`RetryPolicy`):

* **429** (rate limit): wait what ``Retry-After`` says (seconds or an HTTP date; ``retry-after-ms``
  too), or the back-off when it says nothing or nonsense; a wait longer than ``max_retry_after`` is
  cut to it (a server asking for a day is asked again sooner, and the attempts still run out).
* **5xx**, **408**, a **timeout** (``timeout`` seconds per request: to connect, between two reads,
  and for the whole body, so a server that trickles bytes times out too), a **refused or broken
  connection** and a **reply that is not a chat completion but may be next time** (a body cut short,
  JSON without ``choices``; see :mod:`.replies`): exponential back-off, ``base * 2**(attempt - 1)``
  seconds capped at ``cap``, times a random factor in [0.5, 1] so that the concurrent requests do not
  come back in step (``Retry-After`` is honoured here too).
* Any other status (400, 401, 403, 404, 413, 422...) is not retried: :class:`RequestRefused`; nor is
  a 200 whose body is of another kind (an HTML page: the URL is not the API) or larger than
  :data:`~.replies.MAX_REPLY_BYTES` (status 200 in :class:`RequestRefused`).

After ``attempts`` requests without a reply: :class:`EndpointUnavailable` (the command's exit 5).
Each request carries the header ``X-MovieFIB-Question: <question id>``, for the server's logs. The
body is read as a stream, so that its size can be bounded. No message of this module holds the API
key: a server that echoes it in an error has it replaced by ``***``.
Needs the ``vlm`` extra (``openai``).
"""

from __future__ import annotations

import datetime
import email.utils
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .replies import MAX_REPLY_BYTES, Completion, NotACompletion, read_completion

log = logging.getLogger(__name__)

QUESTION_HEADER = "X-MovieFIB-Question"
_RETRIED_STATUSES = frozenset({408, 409})


class EndpointUnavailable(Exception):
    """No reply from the endpoint after every retry (or it asks to wait too long): one line."""


class RequestRefused(Exception):
    """The endpoint refused a request with a status that retrying cannot change (400, 401, 404...).

    Attributes:
        status: the HTTP status.
    """

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try (see the module documentation); seconds throughout.

    Attributes:
        attempts: requests per question at most (1: no retry).
        base, cap: the first back-off wait, and the longest.
        timeout: seconds per request (to connect, between reads, and for the whole body).
        max_retry_after: the longest wait a ``Retry-After`` gets (a longer one is cut to it).
    """

    attempts: int = 8
    base: float = 1.0
    cap: float = 60.0
    timeout: float = 120.0
    max_retry_after: float = 120.0

    def __post_init__(self):
        if not 1 <= self.attempts <= 100:
            raise ValueError(f"attempts must be 1 to 100, not {self.attempts}")
        for name in ("base", "cap", "timeout", "max_retry_after"):
            value = getattr(self, name)
            if not 0 <= value <= 86_400 or (name == "timeout" and value == 0):  # also refuses NaN
                raise ValueError(f"{name} must be a number of seconds in (0, 86400], not {value}")

    def backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based), jitter included."""
        return min(self.cap, self.base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Reply:
    """A chat completion's first choice.

    Attributes:
        text: its message text (None when it holds none).
        finish_reason: ``stop``, ``length``...
        model: the model the server says answered.
        attempts: requests it took.
        retried: why each earlier attempt failed (``429``, ``500``, ``timeout``, ``connection``,
            ``malformed``).
    """

    text: str | None
    finish_reason: str | None
    model: str | None
    attempts: int
    retried: tuple[str, ...]


@dataclass(frozen=True)
class _Failed:
    """One failed attempt: its kind (for counts), a description, and the wait the server asked for."""

    kind: str
    detail: str
    retry_after: float | None = None


def endpoint_problem(url: str) -> str | None:
    """Why ``url`` cannot be the base URL of an API, or None: an http(s) URL with a host, a port that
    is a number, no space or control character, no user name or password (the key goes in the
    environment) and not the URL of the chat-completions route itself."""
    if not url or any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        return "holds a space or a control character" if url else "is empty"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a port that is not a number or out of range, a broken [IPv6] host
        return f"is not a URL ({exc})"
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return "expected an http(s) URL such as http://localhost:8000/v1"
    if parts.username or parts.password:
        return "holds a user name or password; give the key in the environment (--api-key-env) instead"
    if port == 0:
        return "is not a URL (port 0)"
    if parts.path.rstrip("/").endswith("/chat/completions"):
        return "is the chat-completions route; give the API's base URL (ending in /v1)"
    return None


_SECRET_QUERY = ("key", "token", "secret", "sig", "password", "auth")


def shown_endpoint(url: str) -> str:
    """``url`` as written to files and messages: a user name and password replaced by ``***``, and
    the values of query fields that look like credentials (``?key=...``, ``&sig=...``) too; empty
    for a string that is not a URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""  # not a URL: nothing of it is shown
    if "@" in parts.netloc:
        parts = parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1])
    if parts.query:
        fields = [(k, "***" if any(w in k.lower() for w in _SECRET_QUERY) else v)
                  for k, v in parse_qsl(parts.query, keep_blank_values=True)]
        parts = parts._replace(query=urlencode(fields, safe="*"))
    return urlunsplit(parts)


def retry_after_seconds(headers) -> float | None:
    """The wait a response asks for: ``retry-after-ms``, ``Retry-After`` in seconds or as a date."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            seconds = _date_seconds(value)
        if seconds is not None and seconds == seconds and seconds >= 0:
            return seconds
    return None


def _date_seconds(value: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": a date in UTC whose zone is not given (RFC 5322)
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Sends one question's request and returns its :class:`Reply`, retrying as documented.

    ``sleep`` is the waiting function (a test may record the waits instead of sleeping them).
    Thread-safe: one client serves every concurrent request.
    """

    def __init__(self, *, endpoint: str, model: str, api_key: str, retry: RetryPolicy,
                 max_tokens: int, temperature: float, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.endpoint = shown_endpoint(endpoint)  # for messages
        self.model, self.retry, self.sleep = model, retry, sleep
        self.max_tokens, self.temperature = max_tokens, temperature
        self._secret = api_key
        # max_retries=0: the retries are ours (see the module documentation).
        self._client = openai.OpenAI(base_url=endpoint, api_key=api_key, max_retries=0,
                                     timeout=retry.timeout)

    def ask(self, *, question_id: str, content: list[dict]) -> Reply:
        """Send one user message of ``content`` parts until a reply comes or the retries run out."""
        retried: list[str] = []
        for attempt in range(1, self.retry.attempts + 1):
            outcome = self._attempt(question_id, content)
            if not isinstance(outcome, _Failed):
                return Reply(outcome.text, outcome.finish_reason, outcome.model, attempt, tuple(retried))
            retried.append(outcome.kind)
            if attempt == self.retry.attempts:
                break
            self.sleep(self._wait(outcome, attempt))
        raise EndpointUnavailable(self._redact(
            f"{self.endpoint}: no reply for question {question_id} after {self.retry.attempts} attempts "
            f"(last: {outcome.detail})"))

    def _redact(self, text: str) -> str:
        """``text`` without the API key (a server may echo it in an error message)."""
        if len(self._secret) < 4:
            return text
        for form in (self._secret, repr(self._secret)[1:-1]):
            text = text.replace(form, "***")
        return text

    def _wait(self, failed: _Failed, attempt: int) -> float:
        if failed.retry_after is None:
            return self.retry.backoff(attempt)
        if failed.retry_after > self.retry.max_retry_after:
            log.info("%s: asks to wait %.0f s (Retry-After); waiting %.0f s", self.endpoint,
                     failed.retry_after, self.retry.max_retry_after)
        return min(failed.retry_after, self.retry.max_retry_after)

    def _attempt(self, question_id: str, content: list[dict]) -> Completion | _Failed:
        """One request: its :class:`~.replies.Completion`, or the :class:`_Failed` to retry after."""
        import openai

        http = _http_module()
        try:
            with self._client.chat.completions.with_streaming_response.create(
                    model=self.model, messages=[{"role": "user", "content": content}],
                    max_tokens=self.max_tokens, temperature=self.temperature,
                    extra_headers={QUESTION_HEADER: question_id}) as response:
                body = self._read_body(response)
                content_type = response.headers.get("content-type", "")
        except openai.APITimeoutError:
            return _Failed("timeout", f"no reply within {self.retry.timeout:g} s")
        except openai.APIConnectionError as exc:
            return _Failed("connection", self._redact(f"cannot connect ({exc.__cause__ or exc})"))
        except openai.APIStatusError as exc:
            return self._status_failure(exc)
        except http.TimeoutException:  # while reading the body: the server stopped sending
            return _Failed("timeout", f"the reply stopped coming for {self.retry.timeout:g} s")
        except http.RequestError as exc:  # while reading the body: the connection broke, bad gzip...
            return _Failed("connection", self._redact(f"the reply broke off ({type(exc).__name__}: {exc})"))
        if isinstance(body, _Failed):
            return body
        try:
            return read_completion(body, content_type)
        except NotACompletion as exc:
            if not exc.retry:
                raise RequestRefused(self._redact(f"{self.endpoint}: {exc}"), 200) from None
            return _Failed("malformed", self._redact(str(exc)))

    def _read_body(self, response) -> bytes | _Failed:
        """The body, read within the request's timeout and up to :data:`~.replies.MAX_REPLY_BYTES`."""
        deadline = time.monotonic() + self.retry.timeout
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_REPLY_BYTES:
                raise RequestRefused(f"{self.endpoint}: a reply of more than {MAX_REPLY_BYTES // 2**20} MiB "
                                     f"to a request for {self.max_tokens} tokens: not a chat completion "
                                     f"of this request", 200)
            if time.monotonic() > deadline:
                return _Failed("timeout", f"the reply took longer than {self.retry.timeout:g} s to come")
            chunks.append(chunk)
        return b"".join(chunks)

    def _status_failure(self, exc) -> _Failed:
        status = exc.status_code
        message = self._redact(_server_message(exc))
        wait = retry_after_seconds(exc.response.headers if exc.response is not None else None)
        if status == 429 or status >= 500 or status in _RETRIED_STATUSES:
            return _Failed(str(status), f"HTTP {status}: {message}", wait)
        hint = {401: "; is the API key's variable set (--api-key-env)?",
                404: "; is the URL the API's base (ending in /v1) and the model name one it serves?"}
        raise RequestRefused(f"{self.endpoint}: HTTP {status}: {message}{hint.get(status, '')}", status)


def _http_module():
    """The HTTP library the installed ``openai`` is built on (``httpx``, or ``httpx2`` in later
    releases), whose exceptions escape while a streamed body is read."""
    from openai import _base_client

    return getattr(_base_client, "httpx2", None) or _base_client.httpx


def _server_message(exc) -> str:
    """The server's own error message, on one line and short."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or exc.message or "")
    return " ".join(text.split())[:300]
