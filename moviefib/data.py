"""Questions joined with stored video features, as torch batches for the baselines.

* :func:`count_answers`, :func:`build_answer_vocab`: the output classes, from the training split
  (preset ``paper``: answers seen more than 50 times; ``topk``: the K most frequent, default 1,000).
  Answers outside the vocabulary keep ``answer_index == -1``: no training signal, always an error.
* :class:`WordVocab`: the input words of the training split.
* :class:`FIBDataset`: one sample per question; the clip's features are read from each stream's
  :class:`~moviefib.features.store.FeatureStore` (opened lazily in each DataLoader worker process),
  at most ``max_steps`` steps: uniform at test time, random stride and start while training. Several
  streams are aligned by timestamp: the stream with the fewest steps sets the clock and each other
  stream contributes its step nearest in time.
  Training draws each question's stride and start from :func:`step_draws`, a counter-based
  generator of (epoch seed, question index), by :func:`step_indices`: the resident path
  (:mod:`moviefib.training.resident`) applies the same rule to whole batches, so both give the same
  batches for a seed.
* :class:`Collator`: pads words and steps into a batch dict with lengths.

Imports torch (this is the training side of the package).
"""

from __future__ import annotations

import copy
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .training.config import ANSWER_PRESETS

log = logging.getLogger(__name__)

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
PAPER_MIN_COUNT = 50  # "more than 50 occurrences"


class VocabularyError(ValueError):
    """An answer vocabulary preset that is unknown, or that leaves no answer of the training split."""


class FeatureSetupError(ValueError):
    """The recipe's feature streams cannot be read as asked: no store folder for a preset name, or a
    store made with another preset, or whose feature size or kind is not the preset's."""


class MissingFeaturesError(KeyError):
    """Questions whose clip has no features in a store (and skipping was not asked for)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def count_answers(items: Iterable) -> Counter:
    """Answer -> number of questions, over items with an ``answer`` (blind items are ignored)."""
    return Counter(it.answer for it in items if it.answer is not None)


def build_answer_vocab(counts: Mapping[str, int], *, preset: str = "topk", k: int = 1000,
                       min_count: int = PAPER_MIN_COUNT) -> list[str]:
    """The answer vocabulary (most frequent first, ties by word) from training answer counts.

    ``paper``: answers with more than ``min_count`` occurrences; ``topk``: the ``k`` most frequent.
    """
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if preset == "paper":
        words = [w for w, c in ranked if c > min_count]
    elif preset == "topk":
        words = [w for w, _ in ranked[:k]]
    else:
        raise VocabularyError(f"unknown answer vocabulary preset {preset!r} (use one of {', '.join(ANSWER_PRESETS)})")
    if not words:
        raise VocabularyError(f"answer vocabulary preset {preset!r} leaves no answer "
                         f"({len(counts)} distinct training answers; try topk)")
    return words


@dataclass(frozen=True)
class WordVocab:
    """Input words. Index 0 is padding, 1 unknown words, 2/3 the sentence boundaries.

    Attributes:
        words: every word, by index.
        lowercase: whether words are lower-cased before look-up.
    """

    words: tuple[str, ...]
    lowercase: bool = True
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.words[:4] != (PAD, UNK, BOS, EOS):
            raise ValueError("a WordVocab starts with the special tokens <pad> <unk> <s> </s>")
        object.__setattr__(self, "_index", {w: i for i, w in enumerate(self.words)})

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Iterable[str]) -> list[int]:
        idx = self._index
        if self.lowercase:
            return [idx.get(w.lower(), 1) for w in words]
        return [idx.get(w, 1) for w in words]

    @classmethod
    def build(cls, items: Iterable, *, min_count: int = 1, lowercase: bool = True) -> WordVocab:
        """The words seen at least ``min_count`` times in the questions (blank excluded), by frequency."""
        counts: Counter = Counter()
        for it in items:
            for w in (*it.left, *it.right):
                counts[w.lower() if lowercase else w] += 1
        kept = sorted((w for w, c in counts.items() if c >= min_count and w not in (PAD, UNK, BOS, EOS)),
                      key=lambda w: (-counts[w], w))
        return cls((PAD, UNK, BOS, EOS, *kept), lowercase)


# splitmix64 (Steele et al. 2014): a counter-based generator, so the draws of question i in an epoch
# depend on (seed, i) alone, not on which process, worker or batch reads it, nor in which order.
_GOLDEN, _MIX1, _MIX2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):  # unsigned arithmetic wraps modulo 2**64, as the generator wants
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def step_draws(seed: int, index) -> np.ndarray:
    """uint64 ``[N, 2]``: the two random words (stride, start) of each question ``index`` under
    ``seed`` (an epoch's seed, see :func:`moviefib.training.loop.epoch_seed`)."""
    base = _splitmix64(np.array([seed % 2**64], dtype=np.uint64))
    counter = np.asarray(index, dtype=np.uint64).reshape(-1, 1) * np.uint64(2) + np.arange(2, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return _splitmix64(counter ^ base)


def step_indices(n: np.ndarray, max_steps: int, *, draws: np.ndarray | None = None) -> np.ndarray:
    """int64 ``[B, min(max(n), max_steps)]``: the steps taken of clips of ``n[b]`` steps, at most
    ``max_steps`` each: all of a short clip; of a longer one, uniformly spread without ``draws`` (test
    time), else a random stride (1 up to the largest that fits) and start drawn from ``draws``
    (:func:`step_draws`). A row's positions past ``min(n[b], max_steps)`` are padding (its last step).

    The one rule of both data paths (lazy and resident): vectorised, for whole batches."""
    n = np.asarray(n, dtype=np.int64)
    k = np.arange(min(int(n.max()), max_steps), dtype=np.int64)
    if draws is None:
        # np.round(np.linspace(0, n - 1, max_steps)), row by row: k * step with the last step exact.
        step = (n - 1) / max(max_steps - 1, 1)
        spread = np.round(k[None, :] * step[:, None]).astype(np.int64)
        if len(k) == max_steps > 1:
            spread[:, -1] = n - 1
    else:
        max_stride = (n - 1) // (max_steps - 1) if max_steps > 1 else np.ones_like(n)
        long = n > max_steps
        stride = np.where(long, 1 + (draws[:, 0] % np.maximum(max_stride, 1).astype(np.uint64)).astype(np.int64), 1)
        room = np.maximum(n - stride * (max_steps - 1), 1)  # starts that fit the span
        start = np.where(long, (draws[:, 1] % room.astype(np.uint64)).astype(np.int64), 0)
        spread = start[:, None] + stride[:, None] * k[None, :]
    return np.minimum(np.where((n > max_steps)[:, None], spread, k[None, :]), (n - 1)[:, None])


def sample_steps(n: int, max_steps: int, *, train: bool, generator: torch.Generator | None = None,
                 draws: np.ndarray | None = None) -> np.ndarray:
    """Indices of at most ``max_steps`` of ``n`` steps (:func:`step_indices` of one clip): uniform at
    test time; while training a random stride and start, from ``draws`` (``[2]`` words of
    :func:`step_draws`) or else drawn from ``generator`` (torch's global one when None)."""
    if train and draws is None:
        draws = torch.randint(0, 2**62, (2,), generator=generator).numpy().astype(np.uint64)
    rows = step_indices(np.array([n]), max_steps, draws=np.asarray(draws).reshape(1, 2) if train else None)
    return rows[0, :min(n, max_steps)]


def nearest_steps(timestamps: np.ndarray, at: np.ndarray) -> np.ndarray:
    """For each time in ``at``, the index of the nearest of the sorted ``timestamps``."""
    j = np.clip(np.searchsorted(timestamps, at), 1, len(timestamps) - 1) if len(timestamps) > 1 else None
    if j is None:
        return np.zeros(len(at), dtype=np.int64)
    left_closer = (at - timestamps[j - 1]) <= (timestamps[j] - at)
    return np.where(left_closer, j - 1, j)


class FIBDataset(torch.utils.data.Dataset):
    """Questions (``QuestionItem``\\ s) with their clip's features, read from the stores clip by clip (the
    lazy path; :mod:`moviefib.training.resident` holds them in memory instead when they fit).

    Args:
        items: the questions (e.g. a :class:`moviefib.dataset.QuestionView`).
        words: the input vocabulary.
        stores: feature stores by stream name, in the order the model concatenates them (empty for
            text-only models).
        max_steps: the most feature steps per clip (paper: 15).
        train: random stride and start (else uniform subsampling).
        missing: ``"error"`` raises :class:`MissingFeaturesError` naming the first clip without
            features; ``"skip"`` drops those questions and counts them in :attr:`skipped`.
        draw_seed: the seed of the training draws of stride and start (:func:`step_draws` of
            ``(draw_seed, sample index)``); :meth:`reseeded` gives the dataset of another epoch.

    Attributes:
        resident: the same samples held in memory (:class:`moviefib.training.resident.ResidentSplit`),
            set when the run's features fit its memory budget; None: read lazily.

    A sample is a dict: ``left`` (``<s>`` + words before the blank), ``right`` (``</s>`` + the words
    after it, reversed), ``left_words``/``right_words`` (the raw words, in reading order), ``video``
    (float16 ``[S, D]``, as stored, or None), ``answer`` (index, -1 when out of vocabulary or unknown),
    ``index``.
    """

    def __init__(self, items: Sequence, words: WordVocab, *, stores: Mapping | None = None, max_steps: int = 15,
                 train: bool = False, missing: str = "error", draw_seed: int = 0):
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip', not {missing!r}")
        if max_steps < 1:
            raise ValueError("max_steps must be at least 1")
        self.words, self.max_steps, self.train, self.draw_seed = words, int(max_steps), train, int(draw_seed)
        self.resident = None
        self.stores = dict(stores or {})
        self.skipped = 0
        self.skipped_clips: list[str] = []
        keep = list(range(len(items)))
        if self.stores:
            clip_ids = _clip_ids(items)
            present = {name: set(s.clip_ids()) for name, s in self.stores.items()}
            keep = []
            for i, clip in enumerate(clip_ids):
                absent = [name for name, ids in present.items() if clip not in ids]
                if not absent:
                    keep.append(i)
                    continue
                if missing == "error":
                    n_bad = sum(1 for c in clip_ids if any(c not in ids for ids in present.values()))
                    store = self.stores[absent[0]]
                    raise MissingFeaturesError(
                        f"clip {clip} has no {absent[0]} features in {getattr(store, 'path', store)} "
                        f"({n_bad} of {len(clip_ids)} questions lack features)")
                self.skipped += 1
                if clip not in self.skipped_clips[-1:]:
                    self.skipped_clips.append(clip)
            if self.skipped:
                log.warning("skipped %d questions of %d clips without features (first: %s)", self.skipped,
                            len(set(self.skipped_clips)), self.skipped_clips[0])
        self.items = items
        self.indices = keep

    def __len__(self) -> int:
        return len(self.indices)

    def clip_ids(self) -> list[str]:
        """The clip id of each sample, in order."""
        ids = _clip_ids(self.items)
        return [ids[i] for i in self.indices]

    def item(self, i: int):
        return self.items[self.indices[i]]

    def reseeded(self, seed: int) -> FIBDataset:
        """The same samples, read lazily, with the training draws of ``seed`` (one epoch's): a shallow
        copy without :attr:`resident`, which DataLoader workers need not receive."""
        other = copy.copy(self)
        other.draw_seed, other.resident = int(seed), None
        return other

    def words_of(self, i: int) -> tuple[list[int], list[int]]:
        """Sample ``i``'s word indices: ``<s>`` + the words before the blank, ``</s>`` + those after
        it, reversed."""
        it = self.item(i)
        return [2, *self.words.encode(it.left)], [3, *self.words.encode(reversed(it.right))]

    def __getitem__(self, i: int) -> dict:
        it = self.item(i)
        left, right = self.words_of(i)
        sample = {
            "left": left,
            "right": right,
            "left_words": it.left,
            "right_words": it.right,
            "answer": it.answer_index,
            "index": i,
            "video": self._video(it.clip_id, i) if self.stores else None,
        }
        return sample

    def _video(self, clip_id: str, i: int) -> np.ndarray:
        clips = [s.get(clip_id) for s in self.stores.values()]
        clock = min(range(len(clips)), key=lambda k: len(clips[k].timestamps))
        draws = step_draws(self.draw_seed, [i])[0] if self.train else None
        idx = sample_steps(len(clips[clock].timestamps), self.max_steps, train=self.train, draws=draws)
        times = clips[clock].timestamps[idx]
        parts = []
        for k, c in enumerate(clips):
            rows = idx if k == clock else nearest_steps(c.timestamps, times)
            parts.append(np.asarray(c.features[rows], dtype=np.float16))
        return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def video_statistics(dataset: FIBDataset, *, max_clips: int = 2000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of the video features of ``dataset``'s clips (the
    streams concatenated, as the model reads them), over at most ``max_clips`` clips drawn at random.

    CNN features after a ReLU sit mostly on a per-dimension offset (pretrained EfficientNet-Lite0 on
    the demo corpus: mean 0.31, spread within a dimension 0.38); standardising them gives the video
    LSTM inputs whose variation is on the scale of its weights, and puts 2D and 3D streams on one scale.
    """
    clips = sorted(set(dataset.clip_ids()))
    if len(clips) > max_clips:
        pick = np.random.default_rng(seed).choice(len(clips), max_clips, replace=False)
        clips = [clips[i] for i in sorted(pick)]
    means, stds = [], []
    for store in dataset.stores.values():
        total, total_sq, n = np.zeros(store.dim), np.zeros(store.dim), 0
        for clip in clips:
            x = np.asarray(store.get(clip).features, dtype=np.float64)
            total += x.sum(0)
            total_sq += (x * x).sum(0)
            n += len(x)
        means.append(total / n)
        stds.append(np.sqrt(np.maximum(total_sq / n - means[-1] ** 2, 0.0)))
    return np.concatenate(means).astype(np.float32), np.concatenate(stds).astype(np.float32)


def _clip_ids(items) -> list[str]:
    return items.clip_ids() if hasattr(items, "clip_ids") else [it.clip_id for it in items]


def _pad(seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    out = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for r, s in enumerate(seqs):
        out[r, :len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out, lengths


@dataclass(frozen=True)
class Collator:
    """Samples -> a batch dict of tensors (``left``/``right`` ``[B, L]`` + ``*_len``, ``answer``,
    ``index``, ``video [B, S, D]`` + ``video_len`` when present; video keeps the samples' type, float16
    from the stores, cast to float32 on the device by the training loop). ``tokenize`` (a model's, e.g.
    MiniLM) adds its own tensors from the raw words. Picklable, so DataLoader workers can run it."""

    tokenize: Callable | None = None

    def __call__(self, samples: list[dict]) -> dict:
        batch = {}
        batch["left"], batch["left_len"] = _pad([s["left"] for s in samples])
        batch["right"], batch["right_len"] = _pad([s["right"] for s in samples])
        batch["answer"] = torch.tensor([s["answer"] for s in samples], dtype=torch.long)
        batch["index"] = torch.tensor([s["index"] for s in samples], dtype=torch.long)
        if samples[0]["video"] is not None:
            lens = [len(s["video"]) for s in samples]
            video = np.zeros((len(samples), max(lens), samples[0]["video"].shape[1]), dtype=samples[0]["video"].dtype)
            for r, s in enumerate(samples):
                video[r, :lens[r]] = s["video"]
            batch["video"] = torch.from_numpy(video)
            batch["video_len"] = torch.tensor(lens, dtype=torch.long)
        if self.tokenize is not None:
            batch.update(self.tokenize([s["left_words"] for s in samples], [s["right_words"] for s in samples]))
        return batch


def store_path(features_dir: str | os.PathLike | None, preset_or_path: str) -> Path:
    """Where a stream's store lives: a ``.h5`` path as given, else ``<features_dir>/<preset>.h5``."""
    if preset_or_path.endswith((".h5", ".hdf5")):
        return Path(preset_or_path)
    if features_dir is None:
        raise FeatureSetupError(f"feature preset {preset_or_path!r} needs a features directory (features.dir "
                                f"or --features-dir)")
    return Path(features_dir) / f"{preset_or_path}.h5"


def check_store_preset(store, stream: str, name: str) -> None:
    """Refuse a store that is not what ``features.<stream> = name`` promises: made with another preset,
    or (``name`` a known preset) with another feature size or kind than the preset's. A path (``.h5``)
    is checked against the preset its provenance records, when that is a known one."""
    from .features.presets import PRESETS

    recorded = store.provenance.get("preset")
    is_path = name.endswith((".h5", ".hdf5"))
    if recorded is not None and not is_path and recorded != name:
        raise FeatureSetupError(f"{store.path}: store made with preset {recorded!r}, but features.{stream} "
                                f"names {name!r}")
    preset = PRESETS.get(recorded if is_path else name)
    if preset is None:
        return
    if store.dim != preset.dim:
        raise FeatureSetupError(f"{store.path}: {store.dim}-d features, but preset {preset.name!r} "
                                f"(features.{stream}) makes {preset.dim}-d ones")
    kind = store.provenance.get("kind")
    if kind is not None and kind != preset.kind:
        raise FeatureSetupError(f"{store.path}: {kind} features, but preset {preset.name!r} "
                                f"(features.{stream}) makes {preset.kind} ones")


def open_stream_stores(streams: Sequence[str], presets: Mapping[str, str],
                       features_dir: str | os.PathLike | None) -> dict:
    """Open the store of each stream (``presets[stream]`` names a preset or a file), checked by
    :func:`check_store_preset`: features of one extractor must not be read as another's."""
    from .features.store import open_store

    stores = {}
    for s in streams:
        if s not in presets:
            raise FeatureSetupError(f"no feature preset given for stream {s!r} (set features.{s})")
        path = store_path(features_dir, presets[s])
        if path.is_dir():
            raise FeatureSetupError(f"{path}: is a directory, not a feature store (features.{s} = {presets[s]!r})")
        store = open_store(path)
        check_store_preset(store, s, presets[s])
        stores[s] = store
    return stores
