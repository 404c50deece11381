"""The prompt a Video-LLM gets for one question: documented, versioned, replaceable by a file.

The prompt is plain UTF-8 text with two placeholders, replaced literally (other braces stay as they
are, so a prompt may hold JSON examples):

* ``{question}`` (required, once): the question, the sentence with its blank written ``_____``;
* ``{frames}`` (optional): how many frames come with it.

The frames go first in the user message, as JPEG images, then the rendered text; there is no system
message (several open models ignore or refuse one next to images). The built-in prompt is
``moviefib/vlm/prompts/v1.txt`` (:data:`PROMPT_VERSION`); its version and the SHA-256 of whichever
prompt text was used are written beside the submission, so a change of wording is never silent.
Stdlib only.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

PROMPT_VERSION = "moviefib-vlm-prompt-1"
BUILTIN_PROMPT = "prompts/v1.txt"
QUESTION_FIELD = "{question}"
FRAMES_FIELD = "{frames}"
# A prompt is a few sentences; a file far larger than that is the wrong file (a video, a log).
MAX_PROMPT_BYTES = 64 * 1024


class PromptError(ValueError):
    """A prompt file that cannot be used: names the file and says why."""


@dataclass(frozen=True)
class Prompt:
    """A prompt template.

    Attributes:
        text: the template, with ``{question}`` once and optionally ``{frames}``.
        version: :data:`PROMPT_VERSION` for the built-in prompt, ``file`` for a prompt file.
        source: ``builtin`` or the prompt file's path.
    """

    text: str
    version: str
    source: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def render(self, *, question: str, frames: int) -> str:
        """The text of one request: the placeholders replaced literally."""
        return self.text.replace(FRAMES_FIELD, str(frames)).replace(QUESTION_FIELD, question)

    def to_dict(self) -> dict:
        return {"version": self.version, "source": self.source, "sha256": self.sha256, "text": self.text}


def default_prompt() -> Prompt:
    """The built-in prompt (:data:`PROMPT_VERSION`)."""
    text = resources.files(__package__).joinpath(BUILTIN_PROMPT).read_text(encoding="utf-8")
    return Prompt(text, PROMPT_VERSION, "builtin")


def load_prompt(path: str | os.PathLike) -> Prompt:
    """A prompt file; :class:`PromptError` (one line naming the file) when it cannot be one."""
    path = Path(path)
    try:
        st = path.stat()
    except OSError as exc:
        raise PromptError(f"prompt file {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise PromptError(f"prompt file {path}: not a regular file")
    if st.st_size > MAX_PROMPT_BYTES:
        raise PromptError(f"prompt file {path}: {st.st_size:,} bytes, more than a prompt "
                          f"({MAX_PROMPT_BYTES:,} at most)")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise PromptError(f"prompt file {path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise PromptError(f"prompt file {path}: {exc.strerror or exc}") from None
    return Prompt(_checked_text(text, path), "file", str(path))


def _checked_text(text: str, path: Path) -> str:
    """The template of ``path`` once it holds the question placeholder once and no control character."""
    if not text.strip():
        raise PromptError(f"prompt file {path}: empty")
    bad = next((c for c in text if ord(c) < 32 and c not in "\n\t\r"), None)
    if bad is not None:
        raise PromptError(f"prompt file {path}: holds the control character {bad!r}")
    n = text.count(QUESTION_FIELD)
    if n != 1:
        raise PromptError(f"prompt file {path}: needs the placeholder {QUESTION_FIELD} exactly once "
                          f"(found {n} times); {FRAMES_FIELD} is optional")
    return text
