"""A sanity check of extracted features: the extractor's own classifier on the clip-averaged features of
a store's first clips (``moviefib extract --check``). A pretrained model that sees the frames right
names plausible classes; a broken preprocess or random weights do not."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ClipClasses:
    """The top classes of one clip: ``(label, probability)``, most likely first."""

    clip_id: str
    top: tuple[tuple[str, float], ...]


def classifier_problem(extractor) -> str | None:
    """Why ``extractor`` cannot classify its features (None when it can)."""
    if extractor.classify is None or not extractor.labels:
        return (f"extractor {extractor.name} has no classifier for these features "
                f"(random init or a layer without a head)")
    return None


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def top_classes(store_path: str | os.PathLike, extractor, n: int, *, device: str = "cpu",
                k: int = 5) -> list[ClipClasses]:
    """The ``k`` most likely classes of the clip-averaged features of the first ``n`` clips of a store.

    ``extractor`` is the one that made the store, on ``device``; ValueError when it has no classifier
    (see :func:`classifier_problem`), for ``n < 0`` or ``k < 1`` (a slice ``[:-1]`` would drop the last
    clip silently), and when the classifier's outputs are not one per label.
    """
    problem = classifier_problem(extractor)
    if problem is not None:
        raise ValueError(problem)
    if not (_whole(n) and _whole(k) and n >= 0 and k >= 1):
        raise ValueError(f"top_classes: n={n!r}, k={k!r}: expected whole numbers n >= 0 and k >= 1")
    import torch

    from .store import open_store

    result = []
    with open_store(store_path) as store, torch.inference_mode():
        for clip_id in store.clip_ids()[:n]:
            feats = torch.from_numpy(store.get(clip_id).features.astype("float32")).mean(0, keepdim=True)
            probs = extractor.classify(feats.to(device)).softmax(-1)[0].cpu()
            if len(probs) != len(extractor.labels):  # an index past the labels, or a wrong name
                raise ValueError(f"extractor {extractor.name}: its classifier gives {len(probs)} classes "
                                 f"for {len(extractor.labels)} labels")
            top = probs.topk(min(k, len(probs)))
            result.append(ClipClasses(clip_id, tuple((extractor.labels[i], p)
                                                     for p, i in zip(top.values.tolist(), top.indices.tolist()))))
    return result
