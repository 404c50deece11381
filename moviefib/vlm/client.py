"""Chat-completions requests through the official ``openai`` client, with our own retries.

The ``openai`` client is built with ``max_retries=0``: it would otherwise retry on its own (twice by
default) under every retry of ours, and a 429 would be answered by up to three times the requests the
server asked us not to send. Retries (:class:`RetryPolicy`):

* **429** (rate limit): wait what ``Retry-After`` says (seconds or an HTTP date; ``retry-after-ms``
  too), or the back-off when it says nothing; a wait longer than ``max_retry_after`` is given up on.
* **5xx**, **408**, a **timeout** (``timeout`` seconds per request), a **refused or broken
  connection** and a **reply that is not the JSON of a chat completion**: exponential back-off,
  ``base * 2**(attempt - 1)`` seconds capped at ``cap``, times a random factor in [0.5, 1] so that
  the concurrent requests do not come back in step (``Retry-After`` is honoured here too).
* Any other status (400, 401, 403, 404, 413, 422...) is not retried: :class:`RequestRefused`.

After ``attempts`` requests without a reply: :class:`EndpointUnavailable` (the command's exit 5).
Each request carries the header ``X-MovieFIB-Question: <question id>``, for the server's logs.
Needs the ``vlm`` extra (``openai``).
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

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
    """How hard to try (see the module documentation); seconds throughout."""

    attempts: int = 8
    base: float = 1.0
    cap: float = 60.0
    timeout: float = 120.0
    max_retry_after: float = 600.0

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
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Sends one question's request and returns its :class:`Reply`, retrying as documented.

    ``sleep`` is the waiting function (a test may record the waits instead of sleeping them).
    Thread-safe: one client serves every concurrent request.
    """

    def __init__(self, *, endpoint: str, model: str, api_key: str, retry: RetryPolicy,
                 max_tokens: int, temperature: float, sleep: Callable[[float], None] = time.sleep):
        import openai

        self.endpoint, self.model, self.retry, self.sleep = endpoint, model, retry, sleep
        self.max_tokens, self.temperature = max_tokens, temperature
        # max_retries=0: the retries are ours (see the module documentation).
        self._client = openai.OpenAI(base_url=endpoint, api_key=api_key, max_retries=0,
                                     timeout=retry.timeout)

    def ask(self, *, question_id: str, content: list[dict]) -> Reply:
        """Send one user message of ``content`` parts until a reply comes or the retries run out."""
        retried: list[str] = []
        for attempt in range(1, self.retry.attempts + 1):
            outcome = self._attempt(question_id, content)
            if not isinstance(outcome, _Failed):
                text, finish, model = outcome
                return Reply(text, finish, model, attempt, tuple(retried))
            retried.append(outcome.kind)
            if attempt == self.retry.attempts:
                break
            self.sleep(self._wait(outcome, attempt))
        raise EndpointUnavailable(f"{self.endpoint}: no reply for question {question_id} after "
                                  f"{self.retry.attempts} attempts (last: {outcome.detail})")

    def _wait(self, failed: _Failed, attempt: int) -> float:
        if failed.retry_after is None:
            return self.retry.backoff(attempt)
        if failed.retry_after > self.retry.max_retry_after:
            raise EndpointUnavailable(f"{self.endpoint}: asks to wait {failed.retry_after:.0f} s "
                                      f"(Retry-After), more than {self.retry.max_retry_after:.0f} s")
        return failed.retry_after

    def _attempt(self, question_id: str, content: list[dict]) -> tuple | _Failed:
        """One request: (text, finish_reason, model), or the :class:`_Failed` to retry after."""
        import openai

        try:
            response = self._client.chat.completions.create(
                model=self.model, messages=[{"role": "user", "content": content}],
                max_tokens=self.max_tokens, temperature=self.temperature,
                extra_headers={QUESTION_HEADER: question_id})
        except openai.APITimeoutError:
            return _Failed("timeout", f"no reply within {self.retry.timeout:g} s")
        except openai.APIConnectionError as exc:
            return _Failed("connection", f"cannot connect ({exc.__cause__ or exc})")
        except openai.APIStatusError as exc:
            return self._status_failure(exc)
        except json.JSONDecodeError as exc:  # the body of a 200 is not JSON (a proxy's page, a torn reply)
            return _Failed("malformed", f"a reply that is not JSON ({exc})")
        return _first_choice(response)

    def _status_failure(self, exc) -> _Failed:
        status = exc.status_code
        message = _server_message(exc)
        wait = retry_after_seconds(exc.response.headers if exc.response is not None else None)
        if status == 429 or status >= 500 or status in _RETRIED_STATUSES:
            return _Failed(str(status), f"HTTP {status}: {message}", wait)
        hint = {401: "; is the API key's variable set (--api-key-env)?",
                404: "; is the URL the API's base (ending in /v1) and the model name one it serves?"}
        raise RequestRefused(f"{self.endpoint}: HTTP {status}: {message}{hint.get(status, '')}", status)


def _server_message(exc) -> str:
    """The server's own error message, on one line and short."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    text = str(message or exc.message or "")
    return " ".join(text.split())[:300]


def _first_choice(response) -> tuple | _Failed:
    """(text, finish_reason, model) of the first choice, or :class:`_Failed` for a JSON reply that is
    not a chat completion (no choices, no message)."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        return _Failed("malformed", "a reply without choices")
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None) if message is not None else None
    if message is None or not (text is None or isinstance(text, str)):
        return _Failed("malformed", "a reply whose first choice has no message text")
    model = getattr(response, "model", None)
    return text, getattr(choices[0], "finish_reason", None), model if isinstance(model, str) else None
