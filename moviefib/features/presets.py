"""Named feature presets: an extractor (from the registry) plus how frames are sampled for it.

Baseline recipes name these presets; a store's provenance records the preset name. Sampling strings
(``--sampling`` on the command line) are parsed by :func:`parse_sampling`:

* ``every:K`` — every K-th frame (:class:`moviefib.video.EveryKth`);
* ``uniform:N`` — N frames spread uniformly (:class:`moviefib.video.Uniform`);
* ``windows:W[,fps=F][,stride=S][,last=pad|shift|drop]`` — windows of W frames
  (:class:`moviefib.video.Windows`); ``windows:1,fps=F`` is one frame per step at F frames/s, the one
  window a 2D extractor can take, as it reads one frame per step;
* ``ffmpeg-fps:F`` — the frames FFmpeg's ``fps=F`` filter outputs, one per step, F a number or a ratio
  (``30000/1001``) (:class:`moviefib.video.FpsFilter`; ``frozenbilm_clip``: ``ffmpeg-fps:1``).

This module does not import torch (a preset's feature size, read from its extractor's record, does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..video import EveryKth, FpsFilter, Sampling, Uniform, Windows


@dataclass(frozen=True, kw_only=True)
class Preset:
    """A named recipe for a feature store: an extractor and how frames are sampled for it.

    What the features are (size, kind, the decoder's short side) is the extractor's record
    (:func:`moviefib.features.registry.extractor_meta`), read by the properties below; reading them
    imports the model families, hence torch.

    Attributes:
        name: preset name (``paper_2d``...).
        extractor: registry name of the extractor.
        sampling: how steps are taken from a clip.
        options: extractor options (e.g. ``{"layer": "fc6"}`` for C3D), passed to ``create_extractor``.
        description: one line for ``--help`` and the data card.
    """

    name: str
    extractor: str
    sampling: Sampling
    options: dict = field(default_factory=dict)
    description: str = ""

    @property
    def meta(self):
        """The extractor's :class:`~moviefib.features.registry.ExtractorMeta`."""
        from .registry import extractor_meta

        return extractor_meta(self.extractor)

    @property
    def dim(self) -> int:
        """The feature size the preset produces."""
        return self.meta.dim

    @property
    def kind(self) -> str:
        """``2d`` or ``3d``, the extractor's."""
        return self.meta.kind

    @property
    def decode_short_side(self) -> int:
        """Frames are scaled by the decoder (FFmpeg's scaler, bicubic) to this short side before
        preprocessing, the extractor's own resize, so that its preprocessing then only crops: much
        cheaper than resizing full frames in torch."""
        return self.meta.decode_short_side


PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset(name="paper_2d", extractor="googlenet", sampling=EveryKth(3),
           description="the paper's 2D features: GoogLeNet pool5 on every 3rd frame"),
    Preset(name="paper_3d", extractor="c3d", sampling=Windows(16, stride=16, last="pad"),
           options={"layer": "fc6"},
           description="the paper's 3D features: C3D fc6 on non-overlapping 16-frame chunks"),
    Preset(name="efficientnet_lite0", extractor="efficientnet_lite0", sampling=EveryKth(3),
           description="EfficientNet-Lite0 ImageNet pooled features on every 3rd frame; weights available "
                       "offline"),
    Preset(name="i3d", extractor="i3d", sampling=Windows(16, fps=25, stride=16, last="pad"),
           description="I3D Kinetics-400 Mixed_5c pooled on non-overlapping 16-frame windows at 25 fps; "
                       "weights available offline"),
    Preset(name="r2plus1d_18", extractor="r2plus1d_18", sampling=Windows(16, stride=16, last="pad"),
           description="R(2+1)D-18 Kinetics-400 on non-overlapping 16-frame chunks"),
    # The frames FrozenBiLM's extract/video_loader.py takes: FFmpeg's fps=1 filter, reproduced (what
    # else differs from their extraction: moviefib.features.frozenbilm's documentation).
    Preset(name="frozenbilm_clip", extractor="clip_vitl14", sampling=FpsFilter(1.0),
           description="FrozenBiLM's visual feature: CLIP ViT-L/14 (224 px) image embeddings, 768-d, "
                       "at 1 frame/s, the frames of FFmpeg's fps=1 filter (their models read at most 10 per clip)"),
)}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; KeyError listing the valid names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise KeyError(f"unknown feature preset {name!r}; valid presets: {', '.join(PRESETS)}") from None


def parse_sampling(text: str) -> Sampling:
    """Parse ``every:K``, ``uniform:N``, ``windows:W[,fps=F][,stride=S][,last=R]`` or ``ffmpeg-fps:F``;
    ValueError if bad."""
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
        if kind == "ffmpeg-fps" and len(parts) == 1:
            return FpsFilter(_rate(parts[0]))
    except ValueError as exc:
        raise ValueError(f"bad sampling {text!r}: {exc}") from None
    raise ValueError(f"bad sampling {text!r}; expected every:K, uniform:N, "
                     f"windows:W[,fps=F][,stride=S][,last=pad|shift|drop] or ffmpeg-fps:F")


def _rate(text: str) -> float:
    """A frame rate as FFmpeg's fps option takes it: a number or a ratio (``30000/1001``)."""
    num, slash, den = text.partition("/")
    if not slash:
        return float(text)
    if float(den) == 0:
        raise ValueError(f"frame rate {text} divides by zero")
    return float(num) / float(den)
