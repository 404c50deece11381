"""MovieFIB: video fill-in-the-blank question answering on described video (LSMDC 2016).

Heavy dependencies (datasets, torch, spaCy, PyAV) are imported lazily, so ``import moviefib`` is fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["load_dataset", "__version__"]


def load_dataset(path, **kwargs):
    """Load a MovieFIB dataset folder as a ``datasets.DatasetDict`` (offline)."""
    from .dataset import load_dataset as _load

    return _load(path, **kwargs)
