"""Device names (``cpu``, ``cuda``, ``cuda:N``, ``mps``, ``auto``): checked once for every command.

A device asked for but absent (CUDA on a machine without a GPU) is a resource that is unavailable, not
bad input, and must be said before any work starts, not as torch's traceback halfway through a run.
"""

from __future__ import annotations

import re

DEVICE_NAMES = "auto, cpu, mps, cuda or cuda:N"
_DEVICE_RE = re.compile(r"auto|cpu|mps|cuda(?::(0|[1-9][0-9]*))?")  # torch refuses cuda:01
# torch keeps a device index in a signed byte: cuda:128 would be cuda:-128, cuda:255 plain cuda.
MAX_DEVICE_INDEX = 127


class DeviceUnavailableError(RuntimeError):
    """The device asked for is not on this machine (CUDA without a GPU): a resource, not bad input."""


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device name (None when it is one): checked without importing torch."""
    match = _DEVICE_RE.fullmatch(name)
    if match is None:
        return f"{name!r}: expected {DEVICE_NAMES}"
    index = match.group(1)
    if index is not None and (len(index) > 3 or int(index) > MAX_DEVICE_INDEX):
        return f"{name!r}: a device index is at most {MAX_DEVICE_INDEX}"
    return None


def resolve_device(name: str):
    """The ``torch.device`` for ``name`` (``auto``: CUDA when present), or :class:`DeviceUnavailableError`.

    ValueError for a name that is no device (see :func:`device_problem`).
    """
    import torch

    problem = device_problem(name)
    if problem:
        raise ValueError(f"device {problem}")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceUnavailableError(f"device {name!r} asked for, but CUDA is not available on this machine")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise DeviceUnavailableError(f"device {name!r} asked for, but this machine has "
                                     f"{torch.cuda.device_count()} CUDA device(s)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailableError(f"device {name!r} asked for, but MPS is not available on this machine")
    return device
