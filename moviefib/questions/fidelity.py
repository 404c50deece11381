"""How close a rebuild comes to the released questions (used by ``scripts/bench_fidelity.py``).

A question is the triple (clip id, sentence, blanked word in lower case); both sides are multisets, so a
word blanked twice in a sentence counts twice and a duplicated release row counts as two questions
(a rebuild, which drops identical questions, then misses one). Only sentences present in both the
description file and the question file are compared.

The shared files carry one artefact of the release's repeated-word bug: a question on a word that occurs
twice has its SENTENCE cut before the second occurrence (one row per occurrence), and the reconstructed
description file lists such cut sentences as sentences of their own. :func:`canonical_rows` maps each
released row with a cut sentence back to the full sentence of the same clip, and the cut sentences are
not built from, so both sides are counted on the real, full sentences.

The blank vocabulary is taken *leave-movies-out*: the questions of each movie are built with the set of
answers that the release uses in the *other* movies (in the form of the mode's
:func:`~moviefib.questions.words.vocab_key`: a sentence-initial answer counts as capitalised in ``compat``),
so the vocabulary never comes from the movie being scored.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .builder import build_questions, imported_questions
from .inputs import ImportedRow, SentenceRecord
from .words import Mode, Word, vocab_key

Key = tuple[str, str, str]


@dataclass(frozen=True)
class Fidelity:
    """Precision / recall / F1 of built questions against the released ones.

    Attributes:
        mode: the builder mode measured.
        built, real, matched: question counts (multisets; ``matched`` = size of their intersection).
        missed: released questions not built, by lower-cased word (most common first).
        extra: built questions not released, by lower-cased word.
        missed_tags / extra_tags: the same by our Penn tag of the word.
    """

    mode: str
    built: int
    real: int
    matched: int
    missed: list[tuple[str, int]] = field(default_factory=list)
    extra: list[tuple[str, int]] = field(default_factory=list)
    missed_tags: list[tuple[str, int]] = field(default_factory=list)
    extra_tags: list[tuple[str, int]] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.matched / self.built if self.built else 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.real if self.real else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def compare(built: Iterable[Key], real: Iterable[Key], mode: str = "",
            tag_of: dict[Key, str] | None = None) -> Fidelity:
    """Multiset comparison of question keys (clip id, sentence, lower-case word)."""
    b, r = Counter(built), Counter(real)
    matched = sum((b & r).values())
    missed, extra = r - b, b - r
    tag_of = tag_of or {}

    def by(c: Counter, f) -> list[tuple[str, int]]:
        return Counter(f(k) for k in c.elements()).most_common()

    word, tag = (lambda k: k[2]), (lambda k: tag_of.get(k, "?"))
    return Fidelity(mode, sum(b.values()), sum(r.values()), matched, by(missed, word), by(extra, word),
                    by(missed, tag), by(extra, tag))


def truncated_sentences(records: Sequence[SentenceRecord]) -> dict[tuple[str, str], str]:
    """``(clip, cut sentence) -> full sentence`` for sentences that are a strict prefix of another
    sentence of the same clip (the shortest such longer sentence)."""
    by_clip: dict[str, set[str]] = {}
    for r in records:
        by_clip.setdefault(r.clip_id, set()).add(r.sentence)
    out = {}
    for clip, sents in by_clip.items():
        for s in sents:
            longer = [o for o in sents if len(o) > len(s) and o.startswith(s)]
            if longer:
                out[(clip, s)] = min(longer, key=len)
    return out


def canonical_rows(records: Sequence[SentenceRecord], real_rows: Sequence[ImportedRow]
                   ) -> tuple[list[SentenceRecord], list[ImportedRow], int]:
    """Drop cut sentences from the records and map released rows on them to the full sentence.

    Returns (records, rows, number of rows mapped).
    """
    from dataclasses import replace

    cut = truncated_sentences(records)
    kept = [r for r in records if (r.clip_id, r.sentence) not in cut]
    rows, mapped = [], 0
    for row in real_rows:
        full = cut.get((row.record.clip_id, row.record.sentence))
        if full is not None:
            row = replace(row, record=replace(row.record, sentence=full))
            mapped += 1
        rows.append(row)
    return kept, rows, mapped


def leave_movies_out(records: Sequence[SentenceRecord], real_rows: Sequence[ImportedRow],
                     tags: dict[str, list[Word]], mode: Mode) -> Fidelity:
    """Build each movie's questions with the release's answers of the other movies as blank vocabulary."""
    pairs = {(r.record.clip_id, r.record.sentence) for r in real_rows}
    records = [r for r in records if (r.clip_id, r.sentence) in pairs]
    described = {(r.clip_id, r.sentence) for r in records}
    real_rows = [r for r in real_rows if (r.record.clip_id, r.record.sentence) in described]
    answers_by_movie: dict[str, Counter] = {}
    for q in imported_questions(real_rows, tags):
        w = Word(q.word_index, q.answer, q.char_start, q.char_end, q.answer_pos)
        answers_by_movie.setdefault(q.record.movie, Counter())[vocab_key(w, mode)] += 1
    built: list[Key] = []
    tag_of: dict[Key, str] = {}
    for movie in sorted({r.movie for r in records}):
        vocab = frozenset(w for m, c in answers_by_movie.items() if m != movie for w in c)
        mine = [r for r in records if r.movie == movie]
        questions, _ = build_questions(mine, tags, mode, vocab)
        built += [(q.record.clip_id, q.record.sentence, q.answer.lower()) for q in questions]
    # Our tag of every word of the compared sentences, to group the differences by part of speech.
    for r in records:
        for w in tags[r.sentence]:
            tag_of.setdefault((r.clip_id, r.sentence, w.text.lower()), w.tag)
    real = [(r.record.clip_id, r.record.sentence, r.answer.lower()) for r in real_rows]
    return compare(built, real, mode, tag_of)
