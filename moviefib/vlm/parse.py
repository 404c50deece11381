"""The reply of a model reduced to one word: a documented rule (:data:`PARSE_RULE_VERSION`).

First the reply is *cleaned*: ``<think>...</think>`` reasoning blocks are dropped (and, when a reply
holds a ``</think>`` without its opening tag, as templates that open the block in the prompt give,
everything up to the last ``</think>``); special tokens that leaked out of a chat template
(``<|im_end|>``, ``</s>``, ``<eos>``, ``<end_of_turn>``) are dropped, other tags such as
``<answer>...</answer>`` or ``<b>...</b>`` (a pair) unwrapped, and ``\boxed{word}`` becomes ``word``.

Steps, in order (the first that yields one word wins):

1. A reply that is absent or empty once cleaned is *unparsed*. A ``<think>`` never closed (the model
   ran out of tokens while reasoning) is too.
2. **The reply after its lead-in** (``The answer is:``, ``Answer -``, ``The missing word is``,
   ``Word:``...): all of it, else its first line, else the first sentence of that line, each
   *cleaned of its wrapping*: surrounding quotes (``"`` ``'`` curly quotes, backticks), markdown
   emphasis (``*``, ``_``), a list bullet (``- ``), brackets, ``$`` and punctuation stripped,
   repeatedly. If what is left is one word (no whitespace), that is the answer. A reply that is
   nothing but a lead-in word (``Answer``) goes on to 3.
3. **The whole reply**, cleaned as in 2 (a bare word: ``red``, ``"Red."``, ``**red**``).
4. **The last lead-in** in a longer reply (``... so the answer is "red".``): what follows it, up to
   the end of its line, cleaned as in 2.
5. **The first line** of a reply of several lines, cleaned as in 2 (``Red.`` followed by an
   explanation).
6. **The only quoted or bold span** of the reply, when there is exactly one and it holds one word.
7. Otherwise the reply is *unparsed* (several words, a sentence, an explanation).

The word then gets the **case rule**: lower case (``Red`` -> ``red``: MovieFIB answers are lower
case), except a word written all in capitals with two letters or more, which is kept (LSMDC writes
characters as ``SOMEONE``). It is put in Unicode NFKC form (full-width ``ｒｅｄ`` -> ``red``, a
combining accent joined to its letter), invisible format characters (zero-width spaces, soft
hyphens) are removed and curly apostrophes become ``'`` (``don’t`` -> ``don't``). A word must hold a
letter or digit, no control character, be valid Unicode text (no lone surrogate) and at most
:data:`MAX_WORD_CHARS` characters long, else the reply is unparsed. The blank itself (``_____``) is
never an answer: it is all wrapping.

An unparsed reply is written to the submission as :data:`UNPARSED_ANSWER` (``?``): one "word" that
the evaluator accepts without ``--allow-invalid`` and that can never be right (every MovieFIB answer
holds a letter or digit, and ``?`` normalises to the empty string), so it scores wrong. The number of
unparsed replies is in the run's summary and settings; the raw replies are in the reply cache.
Stdlib only.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

PARSE_RULE_VERSION = 2
UNPARSED_ANSWER = "?"
MAX_WORD_CHARS = 64

_THINK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_THINK_END = re.compile(r"^.*</think>", re.IGNORECASE | re.DOTALL)  # greedy: up to the last one
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|\n]{0,40}\|>|</?(?:s|eos|bos|pad|unk|end_of_turn|start_of_turn)>",
                            re.IGNORECASE)
_TAG = re.compile(r"<([A-Za-z][\w-]{0,20})(?:\s[^<>]*)?>(.*?)</\1\s*>", re.DOTALL)  # a pair: its inside
_BOXED = re.compile(r"\\boxed\{([^{}\n]*)\}")
_BULLET = re.compile(r"^(?:[-\u2022]|>)\s+")
_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")
_LEAD_IN = (r"(?:the\s+)?(?:final\s+|correct\s+)?(?:answer|missing\s+word|word|blank)\b"
            r"(?:\s+(?:is|would\s+be|should\s+be))?\s*[:\-\u2013\u2014=]?\s*")
_LEAD_AT_START = re.compile(r"^\s*" + _LEAD_IN, re.IGNORECASE)
_LEAD_ANYWHERE = re.compile(r"\b" + _LEAD_IN, re.IGNORECASE)
# Quotes, emphasis, brackets and punctuation that wrap an answer: "red", **red**, `red`, (red), red.
_WRAPPING = "\"'`*_()[]{}<>$.,;:!?\u00ab\u00bb\u2018\u2019\u201c\u201d"
_SPANS = re.compile(r"\*\*([^*\n]+)\*\*|\"([^\"\n]+)\"|\u201c([^\u201d\n]+)\u201d|`([^`\n]+)`")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class Parsed:
    """One reply reduced to a word.

    Attributes:
        answer: the word, or None when the reply is unparsed.
        rule: which step gave it (``lead-in``, ``whole``, ``last lead-in``, ``quoted``) or why it is
            unparsed.
    """

    answer: str | None
    rule: str

    @property
    def submitted(self) -> str:
        """What the submission holds: the word, or :data:`UNPARSED_ANSWER`."""
        return UNPARSED_ANSWER if self.answer is None else self.answer


def parse_reply(reply: str | None) -> Parsed:
    """Reduce a model's reply to one word by the documented rule (see the module documentation)."""
    if reply is None:
        return Parsed(None, "unparsed: no reply text")
    text = _THINK.sub(" ", reply)
    if re.search(r"<think>", text, re.IGNORECASE):
        return Parsed(None, "unparsed: reasoning never finished (<think> not closed)")
    text = _TAG.sub(r" \2 ", _SPECIAL_TOKEN.sub(" ", _THINK_END.sub(" ", text)))
    text = _BOXED.sub(r"\1", text).strip()
    if not text:
        return Parsed(None, "unparsed: empty reply")
    for rule, candidates in (("lead-in", _after_lead_in(text)),
                             ("whole", (text,)),
                             ("last lead-in", (_after_last_lead_in(text),)),
                             ("first line", (_first_line(text),)),
                             ("quoted", (_only_span(text),))):
        for candidate in candidates:
            word = _one_word(candidate)
            if word is not None:
                return Parsed(word, rule)
    return Parsed(None, "unparsed: not one word")


def _after_lead_in(text: str) -> tuple[str, ...]:
    """After a lead-in at the start: all of it, its first line, that line's first sentence."""
    m = _LEAD_AT_START.match(text)
    if not m or m.end() >= len(text):
        return ()
    rest = text[m.end():]
    line = rest.split("\n", 1)[0]
    return rest, line, _SENTENCE_END.split(line, 1)[0]


def _first_line(text: str) -> str | None:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if len(lines) > 1 else None


def _after_last_lead_in(text: str) -> str | None:
    matches = list(_LEAD_ANYWHERE.finditer(text))
    if not matches:
        return None
    return text[matches[-1].end():].split("\n", 1)[0]


def _only_span(text: str) -> str | None:
    spans = [next(g for g in m.groups() if g is not None) for m in _SPANS.finditer(text)]
    return spans[0] if len(spans) == 1 else None


def _one_word(candidate: str | None) -> str | None:
    """``candidate`` cleaned of its wrapping, with the case rule, if it is one acceptable word."""
    if candidate is None:
        return None
    word = candidate.strip()
    while True:
        cleaned = _BULLET.sub("", word.strip(_WRAPPING)).strip()
        if cleaned == word:
            break
        word = cleaned
    if not word or any(c.isspace() for c in word) or len(word) > MAX_WORD_CHARS:
        return None
    if _CONTROL.search(word) or not _is_text(word):
        return None
    word = "".join(c for c in unicodedata.normalize("NFKC", word) if unicodedata.category(c) != "Cf")
    word = word.replace("\u2019", "'").strip(_WRAPPING)
    if not word or any(c.isspace() for c in word) or not any(c.isalnum() for c in word):
        return None
    keep_case = sum(c.isalpha() for c in word) >= 2 and word.isupper()
    return word if keep_case else word.lower()


def _is_text(word: str) -> bool:
    """Whether ``word`` can be written as UTF-8 (a reply's JSON may hold a lone surrogate)."""
    try:
        word.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
