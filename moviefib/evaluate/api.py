"""The one implementation behind ``moviefib evaluate``, ``scripts/evaluate.py`` and :func:`evaluate`."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..fileio import sha256_file
from ..schema import ANSWER_COUNTS_FILE
from .bootstrap import Interval, PairedComparison, accuracy_intervals, paired_comparison
from .errors import SubmissionInvalid, UsageError
from .human import PUBLISHED_HUMAN, HumanModeResult, PublishedHuman, compare_humans, read_human_answers
from .key import AnswerKey, load_key
from .metrics import (
    NORMALISATION,
    GroupScore,
    Outcomes,
    Summary,
    breakdown,
    groupings,
    score,
    sentence_codes,
    summarise,
)
from .protocol import OFFICIAL, ProtocolRows, ProtocolScore, protocol_rows, score_protocol
from .submission import ValidationReport, read_ordered_submission, read_submission, validate

log = logging.getLogger(__name__)

# Resamples of one bootstrap: the draws are held in memory at once (resamples x sentences), and
# 100,000 is already far past the point where the interval stops moving.
MAX_BOOTSTRAP = 100_000


@dataclass(frozen=True, eq=False)
class SubmissionResult:
    """The evaluation of one submission.

    Attributes:
        name: a short name (the file name, or the path when two file names clash).
        path: the file. format: ``tsv``, ``json`` or ``list``. sha256: fingerprint of the file.
        validation: what validation found (tolerated problems included).
        summary: counts and accuracies over the whole split.
        intervals: ``exact`` / ``normalised`` -> bootstrap interval (empty when bootstrap is off).
        breakdowns: grouping name (``pos_group``, ``answer_pos``, ``frequency_band``, ``movie``,
            ``label:<col>``) -> one score per group.
        outcomes: per-question results, aligned with the key's rows.
        protocol: the score under the evaluation's protocol (``frozenbilm``), or None for the official
            all-rows score alone.
    """

    name: str
    path: str
    format: str
    sha256: str
    validation: ValidationReport
    summary: Summary
    intervals: dict[str, Interval]
    breakdowns: dict[str, tuple[GroupScore, ...]]
    outcomes: Outcomes = field(repr=False)
    protocol: ProtocolScore | None = None

    def group_accuracy(self, grouping: str) -> dict[str, float]:
        """Exact-match accuracy (:attr:`Summary.accuracy`) per group of a breakdown, in report order.

        ``grouping``: a label column the evaluation was asked to break down by (``by=("question_type",)``
        gives ``"question_type"``, also reachable as ``"label:question_type"``) or a built-in breakdown
        (``pos_group``, ``answer_pos``, ``frequency_band``, ``movie``). The overall accuracy is
        ``summary.accuracy``. Raises UsageError naming the breakdowns there are.
        """
        if grouping in self.breakdowns and f"label:{grouping}" in self.breakdowns:
            # A label column named like a built-in breakdown: either answer would be a guess.
            raise UsageError(f"breakdown {grouping!r} is both a built-in one and a label column's: ask for "
                             f"'label:{grouping}' (the column), or read breakdowns[{grouping!r}] (the built-in)")
        name = grouping if grouping in self.breakdowns else f"label:{grouping}"
        if name not in self.breakdowns:
            raise UsageError(f"no breakdown {grouping!r} in this evaluation (have: {', '.join(self.breakdowns)}); "
                             + _how_to_get(grouping))
        return {g.group: g.summary.accuracy for g in self.breakdowns[name]}

    def to_dict(self) -> dict:
        out = {
            "name": self.name, "path": self.path, "format": self.format, "sha256": self.sha256,
            **self.summary.to_dict(),
            "confidence_intervals": {k: v.to_dict() for k, v in self.intervals.items()},
            "validation": self.validation.to_dict(),
            "breakdowns": {name: [{"group": g.group, **g.summary.to_dict()} for g in groups]
                           for name, groups in self.breakdowns.items()},
        }
        if self.protocol is not None:
            out["protocol"] = {self.protocol.protocol: self.protocol.to_dict()}
        return out


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Everything an evaluation found; :mod:`moviefib.evaluate.report` renders it.

    Attributes:
        dataset: the dataset folder. split: the split scored.
        n_questions, n_sentences, n_movies: size of the split.
        fingerprints: path -> sha256 of the dataset table, key and answer-count files used.
        submissions: one result per submission, in the order given.
        comparisons: paired comparisons of the first submission with each other one (exact, normalised).
        humans: measured human results per mode (empty without a human-answer file).
        human_file: the human-answer file and its sha256, or None.
        published_human: the published human figures, always reported as published.
        settings: the options used (bootstrap size, seed, level, tolerances, lemma, by, normalisation).
        protocol: the rows a protocol other than the official one scores (``frozenbilm``), or None.
    """

    dataset: str
    split: str
    n_questions: int
    n_sentences: int
    n_movies: int
    fingerprints: dict[str, str]
    submissions: tuple[SubmissionResult, ...]
    comparisons: tuple[PairedComparison, ...]
    humans: tuple[HumanModeResult, ...]
    human_file: tuple[str, str] | None
    published_human: tuple[PublishedHuman, ...]
    settings: dict
    protocol: ProtocolRows | None = None

    def to_dict(self) -> dict:
        out = {
            "moviefib_version": __version__,
            "dataset": {"path": self.dataset, "split": self.split, "n_questions": self.n_questions,
                        "n_sentences": self.n_sentences, "n_movies": self.n_movies,
                        "sha256": dict(self.fingerprints)},
            "settings": dict(self.settings),
            "submissions": [s.to_dict() for s in self.submissions],
            "comparisons": [c.to_dict() for c in self.comparisons],
            "humans": {
                "published": [{"mode": p.mode, "accuracy": p.accuracy, "source": p.source,
                               "measured_here": False} for p in self.published_human],
                "file": None if self.human_file is None else {"path": self.human_file[0],
                                                              "sha256": self.human_file[1]},
                "measured": [h.to_dict() for h in self.humans],
            },
        }
        if self.protocol is not None:
            out["protocol"] = self.protocol.to_dict()
        return out


def _how_to_get(grouping) -> str:
    """How an evaluation would have the breakdown ``grouping`` that this one lacks."""
    if grouping == "frequency_band":  # the one built-in breakdown that may be absent
        return f"it needs the training answers' counts, {ANSWER_COUNTS_FILE} in the dataset folder"
    return f"evaluate with by=({grouping!r},) to break accuracy down by that label column"


def _label_columns(by: Sequence[str] | str) -> tuple[str, ...]:
    """``by`` as distinct column names: one name is one column, not a sequence of one-letter ones."""
    return (by,) if isinstance(by, str) else tuple(dict.fromkeys(by))


def _names(paths: Sequence[Path]) -> list[str]:
    names = [p.name for p in paths]
    return [str(p) if names.count(p.name) > 1 else p.name for p in paths]


def _check_options(submissions, bootstrap: int, seed: int, level: float) -> None:
    if not submissions:
        raise UsageError("no submission given")
    if not 0 <= bootstrap <= MAX_BOOTSTRAP:
        raise UsageError(f"--bootstrap must be between 0 and {MAX_BOOTSTRAP:,}, not {bootstrap}")
    if seed < 0:  # numpy's generators take no negative seed
        raise UsageError(f"--seed must be >= 0, not {seed}")
    if not 0 < level < 1:
        raise UsageError(f"confidence level must be in (0, 1), not {level}")


def _read_all(paths: Sequence[Path], key: AnswerKey, order_of, *, allow_missing: bool, allow_invalid: bool):
    """Every submission read and validated before any is scored: all problems are reported at once."""
    subs, reports = [], []
    for path in paths:
        sub = (read_ordered_submission(path, order_of, key) if order_of is not None
               else read_submission(path))
        subs.append(sub)
        reports.append(validate(sub, key, allow_missing=allow_missing, allow_invalid=allow_invalid))
    if any(not r.ok for r in reports):
        raise SubmissionInvalid([r for r in reports if not r.ok])
    return subs, reports


def _comparisons(results: Sequence[SubmissionResult], sent, *, bootstrap: int, seed: int, level: float
                 ) -> tuple[PairedComparison, ...]:
    """The first submission compared, paired by sentence, with each other one (exact, normalised)."""
    if not bootstrap:
        return ()
    first = results[0]
    return tuple(paired_comparison(sent, getattr(first.outcomes, metric), getattr(other.outcomes, metric),
                                   names=(first.name, other.name), metric=metric, n_resamples=bootstrap,
                                   seed=seed, level=level)
                 for other in results[1:] for metric in ("exact", "normalised"))


def _human_results(key: AnswerKey, human_answers, results, groups) -> tuple[HumanModeResult, ...]:
    if human_answers is None:
        return ()
    pos = next(g for g in groups if g.name == "pos_group")
    pos_of_row = [pos.labels[c] for c in pos.codes]
    return tuple(compare_humans(
        key, human_answers, {r.name: (r.outcomes.exact, r.outcomes.normalised) for r in results},
        pos_of_row))


def evaluate_key(key: AnswerKey, submissions: Sequence[str | os.PathLike], *, dataset: str = "",
                 order_of: str | os.PathLike | None = None, allow_missing: bool = False,
                 allow_invalid: bool = False, by: Sequence[str] | str = (),
                 humans: str | os.PathLike | None = None, bootstrap: int = 1000, seed: int = 0,
                 level: float = 0.95, lemma: bool = False, protocol: str = OFFICIAL,
                 fib_file: str | os.PathLike | None = None, train_fib_file: str | os.PathLike | None = None
                 ) -> Evaluation:
    """Evaluate submission files against a loaded key (see :func:`evaluate` for the options)."""
    _check_options(submissions, bootstrap, seed, level)
    paths = [Path(p) for p in submissions]
    by = _label_columns(by)
    groups = groupings(key, by)
    if protocol != OFFICIAL and not dataset:
        raise UsageError(f"--protocol {protocol} reads the dataset folder: pass dataset=")
    rows = protocol_rows(protocol, dataset, key, fib_file=fib_file, train_fib_file=train_fib_file)
    human_answers = read_human_answers(humans, key) if humans is not None else None
    subs, reports = _read_all(paths, key, order_of, allow_missing=allow_missing, allow_invalid=allow_invalid)

    sent = sentence_codes(key)
    results = []
    for name, path, sub, report in zip(_names(paths), paths, subs, reports):
        outcomes = score(key, sub.answers, invalid_ids=report.invalid_ids, lemma=lemma)
        indicators = {"exact": outcomes.exact, "normalised": outcomes.normalised}
        intervals = (accuracy_intervals(sent, indicators, n_resamples=bootstrap, seed=seed, level=level)
                     if bootstrap else {})
        results.append(SubmissionResult(
            name, str(path), sub.format, sha256_file(path), report, summarise(outcomes), intervals,
            {g.name: breakdown(g, outcomes) for g in groups}, outcomes,
            None if rows is None else score_protocol(rows, key, sub.answers, invalid_ids=report.invalid_ids)))
        log.debug("%s: accuracy %.4f", name, results[-1].summary.accuracy)

    import pyarrow.compute as pc

    settings = {"bootstrap": bootstrap, "seed": seed, "level": level, "resampling_unit": "sentence",
                "allow_missing": allow_missing, "allow_invalid": allow_invalid, "lemma": lemma,
                "by": list(by), "order_of": None if order_of is None else str(order_of),
                "normalisation": NORMALISATION}
    fingerprints = {str(p): sha256_file(p) for p in key.sources}
    if rows is not None:  # only then: the official settings and fingerprints stay as they were
        settings["protocol"] = protocol
        fingerprints.update({str(p): sha256_file(p) for p in (fib_file, train_fib_file) if p is not None})
    return Evaluation(
        dataset=dataset, split=key.split, n_questions=len(key), n_sentences=int(sent.max()) + 1,
        n_movies=pc.count_distinct(key.table.column("movie")).as_py(),
        fingerprints=fingerprints,
        submissions=tuple(results),
        comparisons=_comparisons(results, sent, bootstrap=bootstrap, seed=seed, level=level),
        humans=_human_results(key, human_answers, results, groups),
        human_file=None if humans is None else (str(humans), sha256_file(humans)),
        published_human=PUBLISHED_HUMAN, settings=settings, protocol=rows)


def evaluate(dataset: str | os.PathLike, submissions: Sequence[str | os.PathLike] | str | os.PathLike,
             *, split: str = "val", key_file: str | os.PathLike | None = None,
             order_of: str | os.PathLike | None = None, allow_missing: bool = False,
             allow_invalid: bool = False, by: Sequence[str] | str = (), humans: str | os.PathLike | None = None,
             bootstrap: int = 1000, seed: int = 0, level: float = 0.95, lemma: bool = False,
             protocol: str = OFFICIAL, fib_file: str | os.PathLike | None = None,
             train_fib_file: str | os.PathLike | None = None) -> Evaluation:
    """Validate and score one or more submissions on a split of a dataset folder.

    Args:
        dataset: a dataset folder (``moviefib build`` output).
        submissions: one path, or several (the first is compared with each other one, paired).
        split: the split to score. key_file: the answer key of a blind split (default
            ``<folder>.keys/<split>.parquet``).
        order_of: an official FIB file; the submissions are then plain lists of answers in its row order.
        allow_missing: score missing answers as wrong instead of rejecting the submission.
        allow_invalid: score empty and multi-word answers as wrong instead of rejecting it.
        by: label columns of the dataset to break the accuracy down by (one name: that column).
        humans: a human-answer JSONL file to compare with.
        bootstrap: resamples for the confidence intervals and comparisons (0 turns them off).
        seed: the bootstrap's random seed. level: the intervals' coverage.
        lemma: also report the lemma match (loads spaCy's English model).
        protocol: ``official`` (every row, always reported) or ``frozenbilm``: also score the rows
            FrozenBiLM's code scores (:mod:`moviefib.evaluate.protocol`), beside the official score.
        fib_file, train_fib_file: with ``frozenbilm``, the official FIB file of the split and the
            training one, read as FrozenBiLM reads them (default: rebuilt from an imported dataset).

    Raises:
        SubmissionInvalid: a submission failed validation (all problems are in ``.reports``).
        MissingInput: a missing file, folder, split or key. UsageError: bad options. InputError: a
            malformed table, key, FIB or human-answer file (a FIB file that is not the one the dataset was
            imported from, included). ResourceUnavailable: ``lemma`` without spaCy's model, ``frozenbilm``
            without pandas.
    """
    if isinstance(submissions, (str, os.PathLike)):
        submissions = [submissions]
    key = load_key(dataset, split, key_file=key_file)
    return evaluate_key(key, submissions, dataset=str(dataset), order_of=order_of,
                        allow_missing=allow_missing, allow_invalid=allow_invalid, by=by, humans=humans,
                        bootstrap=bootstrap, seed=seed, level=level, lemma=lemma, protocol=protocol,
                        fib_file=fib_file, train_fib_file=train_fib_file)
