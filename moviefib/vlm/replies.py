"""The body of a chat-completions response read as servers really send it, without trusting it.

:func:`read_completion` turns the bytes of a 200 response into a :class:`Completion` or says why it
cannot (:class:`NotACompletion`), judging by what the body is rather than by what the server claims:

* a JSON chat completion: ``choices[0].message.content`` as a string, ``null`` (no text: the reply
  is unparsed, e.g. a reasoning model that spent ``max_tokens`` thinking) or a **list of content
  parts** (``[{"type": "text", "text": ...}]``, as some servers send), whose text parts are joined;
* a **server-sent event stream** (``text/event-stream``: a server that streams whatever it is asked),
  whose ``choices[0].delta.content`` pieces are joined up to ``data: [DONE]``;
* anything else is not a completion: a body cut short or not JSON (``retry``: a torn reply can come
  right the next time), JSON without ``choices`` (``retry``), or a body of another type, such as the
  HTML page of a web server at the URL (not retried: it will not change, see ``retry``).

Bodies longer than :data:`MAX_REPLY_BYTES` are not read to their end (the caller stops there): a reply
to a request for a few tokens that size is not a reply to it, and holding it would fill the memory.
Stdlib only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

# A one-word reply is under 1 KB of JSON; a reasoning model's long thoughts stay far below this.
MAX_REPLY_BYTES = 4 * 1024 * 1024
_TEXT_PARTS = (None, "text", "output_text")


@dataclass(frozen=True)
class Completion:
    """The first choice of a chat completion: its text (None: none), ``finish_reason``, the model."""

    text: str | None
    finish_reason: str | None
    model: str | None


class NotACompletion(ValueError):
    """A 200 response whose body is not a chat completion.

    Attributes:
        retry: whether another attempt may get a completion (a torn or incomplete reply) or not (a
            body of another kind: an HTML page, plain text).
    """

    def __init__(self, message: str, *, retry: bool):
        super().__init__(message)
        self.retry = retry


def read_completion(body: bytes, content_type: str) -> Completion:
    """The completion in ``body`` (its ``Content-Type`` header given); :class:`NotACompletion` if none."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind == "text/event-stream" or body.lstrip().startswith(b"data:"):
        return _from_events(body)
    try:
        obj = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        if kind and "json" not in kind:
            raise NotACompletion(f"a reply of type {kind}, not JSON ({_preview(body)}): is the URL the "
                                 f"API's base, ending in /v1?", retry=False) from None
        raise NotACompletion(f"a reply that is not JSON ({exc})", retry=True) from None
    return _from_object(obj)


def _preview(body: bytes) -> str:
    text = " ".join(body[:200].decode("utf-8", "replace").split())
    return repr(text[:80]) if text else "an empty body"


def _from_object(obj) -> Completion:
    choices = obj.get("choices") if isinstance(obj, dict) else None
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        error = obj.get("error") if isinstance(obj, dict) else None
        why = f" (error: {_error_text(error)})" if error else ""
        raise NotACompletion(f"a reply without choices{why}", retry=True)
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise NotACompletion("a reply whose first choice has no message", retry=True)
    return Completion(_content_text(message.get("content")), _str_or_none(choices[0].get("finish_reason")),
                      _str_or_none(obj.get("model")))


def _from_events(body: bytes) -> Completion:
    """The completion streamed as server-sent events (``data: {...}`` lines, ``data: [DONE]``)."""
    pieces: list[str] = []
    finish = model = None
    events = 0
    for raw in body.decode("utf-8", "replace").splitlines():
        if not raw.startswith("data:"):
            continue  # comments, event names, ids, blank separators
        data = raw[5:].strip()
        if data == "[DONE]":
            break
        try:
            event = json.loads(data)
        except json.JSONDecodeError:
            raise NotACompletion(f"a streamed reply with an event that is not JSON ({data[:60]!r})",
                                 retry=True) from None
        events += 1
        choices = event.get("choices") if isinstance(event, dict) else None
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            delta = choices[0].get("delta") or choices[0].get("message") or {}
            text = _content_text(delta.get("content")) if isinstance(delta, dict) else None
            pieces.append(text or "")
            finish = _str_or_none(choices[0].get("finish_reason")) or finish
        model = _str_or_none(event.get("model")) if isinstance(event, dict) else model
    if not events:
        raise NotACompletion("a streamed reply without any event", retry=True)
    text = "".join(pieces)
    return Completion(text or None, finish, model)


def _content_text(content) -> str | None:
    """A message's content as text: a string, None, or the text parts of a list joined."""
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in _TEXT_PARTS]
        texts = [t for t in texts if isinstance(t, str)]
        return "".join(texts) if texts else None
    raise NotACompletion(f"a reply whose message content is a JSON {type(content).__name__}", retry=True)


def _str_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def _error_text(error) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return " ".join(str(message).split())[:200]
