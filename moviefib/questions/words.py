"""Blank units, the stop lists and the blank-selection rules of the two modes (stdlib only).

The unit that can be blanked is a **whitespace-separated word** with its surrounding punctuation
stripped (as the original MovieFIB did), never a sub-word piece of the tagger: ``t-shirt`` and
``doesn't`` are one word each, and ``man`` can never be blanked inside ``woman``.

A word's part of speech is the Penn tag of its **main token**, the tagger token that carries the word's
meaning: the first alphanumeric token that follows the word's last hyphen and is not a clitic
(``'s``, ``n't``, ``'ll``...). So ``t-shirt`` -> ``shirt`` (NN), ``well-dressed`` -> ``dressed`` (VBN),
``doesn't`` -> ``does`` (VBZ), ``someone's`` -> ``someone``. A word without such a token takes the tag of
its first alphanumeric token; a word with no alphanumeric character is never blanked.

Modes:

``clean`` (default): the documented rule of the paper without the original script's bugs. A word is
blanked when its tag is a noun, verb, adjective or adverb/particle (Penn ``NN*``, ``VB*``, ``JJ*``,
``RB*``, ``RP``), it is not on :data:`CLEAN_STOP_WORDS` (the documented list, ``then`` and ``before``
included), it is not a ``SOMEONE`` placeholder or ``UNK`` and it is in the blank vocabulary.

``compat``: as close to the released questions as we could get with spaCy instead of NLTK's perceptron
tagger (measured by ``scripts/bench_fidelity.py``). On top of ``clean`` it also accepts the words the
original tagger marked RB/RP but spaCy tags IN (:data:`COMPAT_PARTICLES`: over, around, down...), the
object pronouns ``her``/``him`` that the release blanks, and uses :data:`COMPAT_STOP_WORDS`, which does
not stop ``then``/``before`` (the release's missing-comma bug) nor the auxiliaries ``are``/``has``;
it looks words up in a case-sensitive vocabulary (below) and skips a word whose text first occurs
inside another word (:func:`select_blanks`).

Stop lists and ``SOMEONE``/``UNK`` are compared case-insensitively. The blank vocabulary is
case-insensitive in ``clean`` mode; in ``compat`` mode it is case-sensitive, as the release's was, and
the first word of a sentence is looked up capitalised (LSMDC sentences start with a capital letter;
lower-cased copies such as the shared val files lost it). That is why the release blanks a sentence-
initial ``Outside`` or ``Turning`` (frequent at the start of sentences) but not a sentence-initial
``People`` or ``Her``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Mode = Literal["clean", "compat"]
MODES: tuple[str, ...] = ("clean", "compat")

# Penn Treebank tags of the blankable parts of speech (N*, V*, J*, R* of the paper, spelled out so that
# spaCy's extra tags NFP, -RRB- etc. never sneak in through a prefix test).
CONTENT_TAGS = frozenset({
    "NN", "NNS", "NNP", "NNPS",
    "VB", "VBD", "VBG", "VBN", "VBP", "VBZ",
    "JJ", "JJR", "JJS",
    "RB", "RBR", "RBS", "RP",
})

# Placeholders of the data, never blanked in either mode.
SOMEONE_FORMS = frozenset({"someone", "someone's", "someones", "someone’s"})
UNKNOWN_TOKEN = "unk"

# The stop list of the original script as documented (REFERENCE §2), with the auxiliaries that ``be``
# and ``does`` stand for and their contractions, so that a grammatical word never becomes a question
# (a contraction is one whitespace word, tagged by its main token, e.g. ``doesn't`` -> VBZ).
CLEAN_STOP_WORDS = frozenset({
    "someone", "someone's", "is", "there", "new", "up", "now", "later", "then", "before", "mr", "mrs",
    "it", "not", "meanwhile", "while", "them", "something", "aside", "be", "as", "who", "in", "the",
    "does", "other", "on", "a", "dr", "off", "out",
    # auxiliary and copula forms
    "am", "are", "was", "were", "been", "being", "do", "did", "doing", "has", "have", "had", "having",
    "'s", "n't", "isn't", "aren't", "wasn't", "weren't", "don't", "doesn't", "didn't", "hasn't", "haven't",
    "hadn't", "can't", "cannot", "won't",
})

# The release's stop list: the documented one minus ``then``/``before`` (its missing-comma bug) and without
# the auxiliaries added above (the release blanks ``are`` and ``has``); its blank vocabulary does the rest.
COMPAT_STOP_WORDS = frozenset({
    "someone", "someone's", "is", "there", "new", "up", "now", "later", "mr", "mrs", "it", "not",
    "meanwhile", "while", "them", "something", "aside", "be", "as", "who", "in", "the", "does", "other",
    "on", "a", "dr", "off", "out",
})

# Words NLTK's tagger marks RB/RP (hence blanked by the release) that spaCy tags IN.
COMPAT_PARTICLES = frozenset({
    "over", "around", "down", "towards", "toward", "beside", "past", "outside", "inside", "through",
    "across", "along", "away", "back", "behind", "above", "below", "under", "underneath", "beneath",
    "by", "about", "after", "forward", "onto", "into", "upstairs", "downstairs", "near", "round",
})
COMPAT_PRONOUNS = frozenset({"her", "him"})

_WORD_RE = re.compile(r"\S+")
_CLITICS = frozenset({"'s", "n't", "'ll", "'re", "'ve", "'d", "'m", "’s", "n’t", "’ll", "’re", "’ve",
                      "’d", "’m", "s"})
_HYPHENS = frozenset("-‐‑–—")


@dataclass(frozen=True)
class Word:
    """One whitespace-separated word of a sentence, stripped of surrounding punctuation.

    Attributes:
        index: position among the sentence's whitespace-separated words (0-based).
        text: the word without its surrounding punctuation, original casing (empty for pure punctuation).
        char_start: offset of ``text`` in the sentence.
        char_end: offset just after ``text`` (exclusive).
        tag: Penn tag of the word's main token ("" when the word has no alphanumeric character).
    """

    index: int
    text: str
    char_start: int
    char_end: int
    tag: str


def word_spans(sentence: str) -> list[tuple[int, int, int]]:
    """``(index, start, end)`` of each whitespace word with surrounding non-alphanumerics stripped.

    A word made only of punctuation gets an empty span at its start.
    """
    spans = []
    for i, m in enumerate(_WORD_RE.finditer(sentence)):
        s, e = m.start(), m.end()
        while s < e and not sentence[s].isalnum():
            s += 1
        while e > s and not sentence[e - 1].isalnum():
            e -= 1
        spans.append((i, s, e) if s < e else (i, m.start(), m.start()))
    return spans


def _main_token(tokens: Sequence[tuple[int, int, str]], sentence: str) -> str:
    """Tag of the main token among a word's ``(start, end, tag)`` tokens (rule: module docstring)."""
    alnum = [(s, e, t) for s, e, t in tokens if any(c.isalnum() for c in sentence[s:e])]
    if not alnum:
        return ""
    last_hyphen = max((s for s, e, t in tokens if sentence[s:e] in _HYPHENS), default=-1)
    for s, e, t in alnum:
        if s > last_hyphen and sentence[s:e].lower() not in _CLITICS:
            return t
    return alnum[0][2]


def align(sentence: str, tokens: Sequence[tuple[int, int, str]]) -> list[Word]:
    """Map tagger tokens ``(start, end, tag)`` (sorted, non-overlapping) onto the sentence's words."""
    words = []
    k = 0
    for index, s, e in word_spans(sentence):
        while k < len(tokens) and tokens[k][1] <= s:
            k += 1
        mine = []
        j = k
        while j < len(tokens) and tokens[j][0] < e:
            mine.append(tokens[j])
            j += 1
        if e == s:
            tag = ""
        elif len(mine) == 1:  # the common case: one token covers the whole stripped word
            tag = mine[0][2]
        else:
            tag = _main_token(mine, sentence)
        words.append(Word(index, sentence[s:e], s, e, tag))
    return words


def is_placeholder(word: str) -> bool:
    """``SOMEONE``, ``SOMEONE's`` (any casing) or the rare-word token ``UNK``."""
    w = word.lower()
    return w in SOMEONE_FORMS or w == UNKNOWN_TOKEN


def stop_words(mode: Mode) -> frozenset[str]:
    if mode == "clean":
        return CLEAN_STOP_WORDS
    if mode == "compat":
        return COMPAT_STOP_WORDS
    raise ValueError(f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")


def passes_rule(word: Word, mode: Mode) -> bool:
    """Whether ``word`` may be blanked by the mode's tag and stop-list rule (vocabulary not applied)."""
    if not word.text or not any(c.isalpha() for c in word.text) or is_placeholder(word.text):
        return False
    w = word.text.lower()
    if w in stop_words(mode):
        return False
    if word.tag in CONTENT_TAGS:
        return True
    if mode == "compat":
        return (word.tag == "IN" and w in COMPAT_PARTICLES) or (w in COMPAT_PRONOUNS)
    return False


def vocab_key(word: Word, mode: Mode) -> str:
    """The form of ``word`` looked up in (and counted into) the blank vocabulary of ``mode``."""
    if mode == "compat":
        return word.text[:1].upper() + word.text[1:] if word.index == 0 else word.text
    return word.text.lower()


def first_found_inside_word(sentence: str, word: Word) -> bool:
    """Whether the first occurrence of ``word.text`` in ``sentence`` (as a substring) lies inside another
    word, as ``her`` in ``mother her`` or ``over`` in ``hovers over``."""
    i = sentence.find(word.text)
    j = i + len(word.text)
    return i >= 0 and ((i > 0 and sentence[i - 1].isalnum()) or (j < len(sentence) and sentence[j].isalnum()))


def candidates(words: Iterable[Word], mode: Mode, sentence: str = "") -> list[Word]:
    """The words of ``sentence`` that the mode's rule allows to blank, before the vocabulary.

    In ``compat`` mode a word whose text first occurs inside another word of the sentence is skipped:
    the release blanked by string split, which put that blank inside the other word, and such broken
    questions are absent from the (reconstructed) release, so the closest match is no question.
    """
    return [w for w in words if passes_rule(w, mode)
            and not (mode == "compat" and first_found_inside_word(sentence, w))]


def select_blanks(words: Iterable[Word], mode: Mode, blank_vocab: frozenset[str] | None,
                  sentence: str = "") -> list[Word]:
    """The words of ``sentence`` that become questions (one question each), in reading order:
    :func:`candidates` that are in ``blank_vocab`` (words in the form of :func:`vocab_key`; None means
    no vocabulary restriction)."""
    return [w for w in candidates(words, mode, sentence)
            if blank_vocab is None or vocab_key(w, mode) in blank_vocab]
