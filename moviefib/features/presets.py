"""Named feature presets: an extractor (from the registry) plus how frames are sampled for it.

Baseline recipes name these presets; a store's provenance records the preset name. Sampling strings
(``--sampling`` on the command line) are parsed by :func:`parse_sampling`:

* ``every:K`` — every K-th frame (:class:`moviefib.video.EveryKth`);
* ``uniform:N`` — N frames spread uniformly (:class:`moviefib.video.Uniform`);
* ``windows:W[,fps=F][,stride=S][,last=pad|shift|drop]`` — windows of W frames
  (:class:`moviefib.video.Windows`).

This module does not import torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..video import EveryKth, Sampling, Uniform, Windows


@dataclass(frozen=True)
class Preset:
    """A named recipe for a feature store.

    Attributes:
        name: preset name (``paper_2d``...).
        extractor: registry name of the extractor.
        sampling: how steps are taken from a clip.
        dim: the feature size the preset produces (checked against the extractor).
        options: extractor options (e.g. ``{"layer": "fc6"}`` for C3D), passed to ``create_extractor``.
        decode_short_side: frames are scaled by the decoder (FFmpeg's scaler, bicubic) to this short side
            before preprocessing, which is much cheaper than resizing full frames in torch; chosen equal
            to the extractor's own resize so its preprocessing then only crops. None: full frames.
        description: one line for ``--help`` and the data card.
    """

    name: str
    extractor: str
    sampling: Sampling
    dim: int
    options: dict = field(default_factory=dict)
    decode_short_side: int | None = None
    description: str = ""


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("paper_2d", "googlenet", EveryKth(3), 1024, decode_short_side=256,
           description="the paper's 2D features: GoogLeNet pool5 (1024-d) on every 3rd frame"),
    Preset("paper_3d", "c3d", Windows(16, stride=16, last="pad"), 4096, options={"layer": "fc6"},
           decode_short_side=128,
           description="the paper's 3D features: C3D fc6 (4096-d) on non-overlapping 16-frame chunks"),
    Preset("efficientnet_lite0", "efficientnet_lite0", EveryKth(3), 1280, decode_short_side=256,
           description="EfficientNet-Lite0 ImageNet pooled features (1280-d) on every 3rd frame; "
                       "weights available offline"),
    Preset("i3d", "i3d", Windows(16, fps=25, stride=16, last="pad"), 1024, decode_short_side=256,
           description="I3D Kinetics-400 Mixed_5c pooled (1024-d) on non-overlapping 16-frame windows "
                       "at 25 fps; weights available offline"),
    Preset("r2plus1d_18", "r2plus1d_18", Windows(16, stride=16, last="pad"), 512, decode_short_side=128,
           description="R(2+1)D-18 Kinetics-400 (512-d) on non-overlapping 16-frame chunks"),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; KeyError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown feature preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def list_presets() -> list[str]:
    return list(PRESETS)


def parse_sampling(text: str) -> Sampling:
    """Parse ``every:K``, ``uniform:N`` or ``windows:W[,fps=F][,stride=S][,last=R]``; ValueError if bad."""
    kind, _, rest = text.strip().partition(":")
    parts = [p.strip() for p in rest.split(",") if p.strip()]
    try:
        if kind == "every" and len(parts) == 1:
            return EveryKth(int(parts[0]))
        if kind == "uniform" and len(parts) == 1:
            return Uniform(int(parts[0]))
        if kind == "windows" and parts:
            kwargs: dict = {"window": int(parts[0])}
            for p in parts[1:]:
                key, eq, value = p.partition("=")
                if not eq or key not in ("fps", "stride", "last"):
                    raise ValueError(f"unknown window option {p!r}")
                kwargs[key] = float(value) if key == "fps" else int(value) if key == "stride" else value
            return Windows(**kwargs)
    except ValueError as exc:
        raise ValueError(f"bad sampling {text!r}: {exc}") from None
    raise ValueError(f"bad sampling {text!r}; expected every:K, uniform:N or "
                     f"windows:W[,fps=F][,stride=S][,last=pad|shift|drop]")
