"""Loading weights for the extractors: torchvision's own download, local files, or random init."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import torch

from ..fileio import TORCH_LOAD_ERRORS
from .weights import WeightsUnavailableError, sha256_file


class WeightsFileError(ValueError):
    """A weights file given by the user (``--weights FILE``) that cannot be loaded or does not fit."""




def load_state_dict_file(path: Path) -> dict:
    """A state dict from a ``.pth``/``.pt`` file (plain, or wrapped as ``{"state_dict": ...}``).

    Loaded with ``weights_only=True``: a checkpoint cannot run code while it loads.
    """
    if Path(path).is_dir():
        raise WeightsFileError(f"{path}: is a directory, not a weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except TORCH_LOAD_ERRORS as exc:
        raise WeightsFileError(f"{path}: not a loadable PyTorch state dict ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsFileError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def load_into(model: torch.nn.Module, path: Path, name: str) -> None:
    """Load a state dict file into ``model`` strictly, naming the extractor and file on mismatch."""
    state = load_state_dict_file(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        raise WeightsFileError(f"{name}: {path} does not fit the architecture: {detail[:400]}") from None


def torchvision_model(name: str, builder: Callable[..., torch.nn.Module], default_weights, weights,
                      **builder_kwargs) -> tuple[torch.nn.Module, str, str]:
    """Build a torchvision model with ``weights`` = "default" | None | Path.

    "default" uses torchvision's own download (cached under ``torch.hub.get_dir()``); offline and not
    cached, it raises WeightsUnavailableError in one line. A local file must fit the architecture
    built with ``builder_kwargs`` exactly.
    Returns (model, weights id, sha256 or "random-init").
    """
    if weights is None:
        return builder(weights=None, **builder_kwargs), "random-init", "random-init"
    if weights == "default":
        try:
            model = builder(weights=default_weights, **builder_kwargs)
        except OSError as exc:  # URLError is an OSError
            reason = getattr(exc, "reason", exc)
            raise WeightsUnavailableError(
                f"{name}: cannot download torchvision weights {default_weights} from "
                f"{default_weights.url} ({reason}); on a machine without internet, download the file "
                f"elsewhere and pass its path as weights, or put it in "
                f"{Path(torch.hub.get_dir()) / 'checkpoints'}") from None
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(default_weights.url).path).name
        digest = sha256_file(cached) if cached.is_file() else "unknown"
        return model, f"torchvision:{default_weights}", digest
    model = builder(weights=None, **builder_kwargs)
    load_into(model, Path(weights), name)
    return model, str(weights), sha256_file(Path(weights))


class ChannelsLast(torch.nn.Module):
    """Runs ``model`` with channels-last weights and input.

    Measured on 2 CPU cores (random weights, busy machine, so relative figures only): EfficientNet-Lite0
    1.2-2x faster, GoogLeNet 1.6x, ResNet-50 1.35x, I3D (channels_last_3d) 1.46x; cuDNN also prefers
    this layout for convolutions in mixed precision.
    """

    def __init__(self, model: torch.nn.Module, ndim: int):
        super().__init__()
        self.format = torch.channels_last if ndim == 4 else torch.channels_last_3d
        self.model = model.to(memory_format=self.format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=self.format))
