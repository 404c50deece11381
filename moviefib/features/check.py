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


def top_classes(store_path: str | os.PathLike, extractor, n: int, *, device: str = "cpu",
                k: int = 5) -> list[ClipClasses]:
    """The ``k`` most likely classes of the clip-averaged features of the first ``n`` clips of a store.

    ``extractor`` is the one that made the store, on ``device``; ValueError when it has no classifier
    (see :func:`classifier_problem`).
    """
    problem = classifier_problem(extractor)
    if problem is not None:
        raise ValueError(problem)
    import torch

    from .store import open_store

    result = []
    with open_store(store_path) as store, torch.inference_mode():
        for clip_id in store.clip_ids()[:n]:
            feats = torch.from_numpy(store.get(clip_id).features.astype("float32")).mean(0, keepdim=True)
            probs = extractor.classify(feats.to(device)).softmax(-1)[0].cpu()
            top = probs.topk(min(k, len(probs)))
            result.append(ClipClasses(clip_id, tuple((extractor.labels[i], p)
                                                     for p, i in zip(top.values.tolist(), top.indices.tolist()))))
    return result
