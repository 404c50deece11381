"""Bootstrap confidence intervals resampled by sentence, and paired comparisons.

The questions of one sentence share a clip and most of their words, so they are not independent: the
resampling unit is the sentence. A resample draws S sentences with replacement among the S of the split
and scores all their questions.

Only per-sentence aggregates matter (questions, correct answers), and few distinct aggregates exist (a
sentence has at most a dozen questions). Sentences are grouped by their aggregate; drawing S sentences
uniformly then amounts to a multinomial draw of how many come from each group, which is exactly the same
distribution as drawing sentence indices, at a cost of B x (distinct aggregates) instead of B x S.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interval:
    """A percentile bootstrap interval of an accuracy.

    Attributes:
        low, high: the interval bounds (fractions). level: its coverage (0.95).
        std: standard deviation of the bootstrap distribution.
        n_resamples, seed: how it was drawn.
    """

    low: float
    high: float
    level: float
    std: float
    n_resamples: int
    seed: int

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "level": self.level, "std": self.std,
                "n_resamples": self.n_resamples, "seed": self.seed, "unit": "sentence"}


@dataclass(frozen=True)
class PairedComparison:
    """Accuracy of submission A minus that of B, resampled by sentence on the same draws.

    Attributes:
        a, b: the submissions' names. difference: observed accuracy(A) - accuracy(B).
        interval: bootstrap interval of the difference.
        p_value: two-sided bootstrap p-value of "no difference" (share of resamples on the other side
            of zero, doubled, capped at 1).
        a_only, b_only: questions only A (only B) answers correctly.
        metric: ``exact`` or ``normalised``.
    """

    a: str
    b: str
    metric: str
    difference: float
    interval: Interval
    p_value: float
    a_only: int
    b_only: int

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "metric": self.metric, "difference": self.difference,
                "interval": self.interval.to_dict(), "p_value": self.p_value,
                "a_only_correct": self.a_only, "b_only_correct": self.b_only}


def sentence_aggregates(codes: np.ndarray, *indicators: np.ndarray) -> np.ndarray:
    """Per sentence: [questions, sum of each indicator], an int64 array of shape (S, 1 + k)."""
    n_sent = int(codes.max()) + 1 if codes.size else 0
    cols = [np.bincount(codes, minlength=n_sent)]
    cols += [np.bincount(codes, weights=ind.astype(np.float64), minlength=n_sent) for ind in indicators]
    return np.stack(cols, axis=1).astype(np.int64)


def resample_totals(aggregates: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column totals of ``n_resamples`` resamples of the rows (sentences), shape (B, columns)."""
    n_sent = aggregates.shape[0]
    # One integer per row (mixed radix) makes the grouping a 1-D unique, much faster than axis=0.
    radix = int(aggregates.max()) + 1 if aggregates.size else 1
    if radix ** aggregates.shape[1] < 2 ** 62:
        packed = aggregates @ (radix ** np.arange(aggregates.shape[1], dtype=np.int64))
        _, first, counts = np.unique(packed, return_index=True, return_counts=True)
        kinds = aggregates[first]
    else:  # sentences of millions of questions: the packed integer would overflow
        kinds, counts = np.unique(aggregates, axis=0, return_counts=True)
    draws = rng.multinomial(n_sent, counts / n_sent, size=n_resamples)
    return draws @ kinds


def _interval(values: np.ndarray, level: float, n_resamples: int, seed: int) -> Interval:
    alpha = (1 - level) / 2
    low, high = np.quantile(values, [alpha, 1 - alpha])
    return Interval(float(low), float(high), level, float(values.std()), n_resamples, seed)


def accuracy_intervals(codes: np.ndarray, indicators: dict[str, np.ndarray], *, n_resamples: int = 1000,
                       seed: int = 0, level: float = 0.95) -> dict[str, Interval]:
    """One interval per indicator (``{"exact": bool array, ...}``), all from the same resamples."""
    names = list(indicators)
    agg = sentence_aggregates(codes, *indicators.values())
    totals = resample_totals(agg, n_resamples, np.random.default_rng(seed))
    acc = totals[:, 1:] / totals[:, :1]
    return {name: _interval(acc[:, j], level, n_resamples, seed) for j, name in enumerate(names)}


def paired_comparison(codes: np.ndarray, a: np.ndarray, b: np.ndarray, *, names: tuple[str, str],
                      metric: str = "exact", n_resamples: int = 1000, seed: int = 0,
                      level: float = 0.95) -> PairedComparison:
    """Compare two submissions' correctness arrays on the same questions, resampled by sentence."""
    agg = sentence_aggregates(codes, a, b)
    totals = resample_totals(agg, n_resamples, np.random.default_rng(seed))
    diff = (totals[:, 1] - totals[:, 2]) / totals[:, 0]
    observed = float((a.sum() - b.sum()) / a.size)
    p = min(1.0, 2 * min(float((diff <= 0).mean()), float((diff >= 0).mean())))
    return PairedComparison(names[0], names[1], metric, observed, _interval(diff, level, n_resamples, seed),
                            p, int((a & ~b).sum()), int((b & ~a).sum()))
