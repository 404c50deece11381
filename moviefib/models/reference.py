"""Count-based reference baselines: cheap floors every learned model must beat.

Both are fitted on :class:`moviefib.dataset.QuestionItem`\\ s and predict answer indices; questions
whose answer is outside the vocabulary (``answer_index == -1``) are not counted.

* ``majority``: the most frequent training answer, always.
* ``context_lookup``: the most frequent answer seen between the same previous and next word; when
  that pair was never seen, the answer maximising ``P(a | previous word) + P(a | next word)``; when
  neither word was seen, the majority answer. Words are compared in lower case; the sentence
  boundaries count as words.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

from .registry import ModelSettings, register_model

START, END = "<s>", "</s>"


class _CountModel:
    streams: tuple[str, ...] = ()
    model_name = ""

    def __init__(self, *, n_answers: int, vocab_size: int | None = None, video_dims: dict | None = None,
                 settings: ModelSettings = ModelSettings()):
        # vocab_size, video_dims and settings are what the trainer gives every model; counts need none.
        self.n_answers = int(n_answers)
        self.majority = 0

    def _fit_majority(self, items) -> list:
        items = [it for it in items if it.answer_index >= 0]
        if not items:
            raise ValueError(f"{self.model_name}: no training question has an answer in the vocabulary")
        self.majority = Counter(it.answer_index for it in items).most_common(1)[0][0]
        return items


@register_model("majority")
class Majority(_CountModel):
    """Always the most frequent training answer."""

    def fit(self, items: Iterable) -> None:
        self._fit_majority(items)

    def predict(self, items: Sequence) -> list[int]:
        return [self.majority] * len(items)

    def state_dict(self) -> dict:
        return {"majority": self.majority}

    def load_state_dict(self, state: dict) -> None:
        self.majority = int(state["majority"])


def _context(item) -> tuple[str, str]:
    prev = item.left[-1].lower() if item.left else START
    nxt = item.right[0].lower() if item.right else END
    return prev, nxt


@register_model("context_lookup")
class ContextLookup(_CountModel):
    """The most frequent answer after the previous word / before the next word (see module doc)."""

    def __init__(self, *, n_answers: int, vocab_size: int | None = None, video_dims: dict | None = None,
                 settings: ModelSettings = ModelSettings()):
        super().__init__(n_answers=n_answers, vocab_size=vocab_size, video_dims=video_dims, settings=settings)
        self.pair: dict[tuple[str, str], int] = {}
        self.side_scores: dict[str, dict[str, dict[int, float]]] = {"prev": {}, "next": {}}

    def fit(self, items: Iterable) -> None:
        items = self._fit_majority(items)
        pair, prev, nxt = defaultdict(Counter), defaultdict(Counter), defaultdict(Counter)
        for it in items:
            p, n = _context(it)
            pair[p, n][it.answer_index] += 1
            prev[p][it.answer_index] += 1
            nxt[n][it.answer_index] += 1
        # Ties go to the answer seen first, so a refit on the same data gives the same model.
        self.pair = {k: c.most_common(1)[0][0] for k, c in pair.items()}
        self.side_scores = {
            side: {w: {a: k / sum(c.values()) for a, k in c.items()} for w, c in table.items()}
            for side, table in (("prev", prev), ("next", nxt))
        }

    def _predict_one(self, item) -> int:
        p, n = _context(item)
        hit = self.pair.get((p, n))
        if hit is not None:
            return hit
        scores: Counter = Counter()
        for side, word in (("prev", p), ("next", n)):
            for a, s in self.side_scores[side].get(word, {}).items():
                scores[a] += s
        return scores.most_common(1)[0][0] if scores else self.majority

    def predict(self, items: Sequence) -> list[int]:
        return [self._predict_one(it) for it in items]

    def state_dict(self) -> dict:
        return {"majority": self.majority, "pair": [[p, n, a] for (p, n), a in self.pair.items()],
                "side_scores": {side: {w: [[a, s] for a, s in d.items()] for w, d in t.items()}
                                for side, t in self.side_scores.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.majority = int(state["majority"])
        self.pair = {(p, n): int(a) for p, n, a in state["pair"]}
        self.side_scores = {side: {w: {int(a): float(s) for a, s in d} for w, d in t.items()}
                            for side, t in state["side_scores"].items()}
