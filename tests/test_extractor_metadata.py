"""Extractor records (ExtractorMeta, declared once at registration): every preset agrees with its
extractor's record, every record names weights that exist, and the registry refuses what is malformed.

What a built extractor gives against its record (kind, size, window, input) is checked where each one
is built at random: tests/test_extractors.py and tests/test_extractors_pytorchvideo.py.
"""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

pytest.importorskip("torch")
pytest.importorskip("torchvision")

from moviefib.features import weights as W  # noqa: E402
from moviefib.features.presets import PRESETS, get_preset  # noqa: E402
from moviefib.features.registry import (  # noqa: E402
    _REGISTRY,
    WEIGHTS_SOURCES,
    ExtractorMeta,
    UnknownExtractorError,
    extractor_meta,
    list_extractors,
    register_extractor,
)
from moviefib.video import EveryKth, Windows  # noqa: E402


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_fits_its_extractor(name):
    preset = get_preset(name)
    assert preset.extractor in list_extractors()
    meta = extractor_meta(preset.extractor)
    assert (preset.dim, preset.kind, preset.decode_short_side) == (meta.dim, meta.kind, meta.decode_short_side)
    if meta.kind == "3d":
        # One window of the sampling is one input of the model, at the size the model is built for.
        assert isinstance(preset.sampling, Windows)
        assert preset.sampling.window == preset.options.get("window", meta.window)
    else:
        # A 2D model reads one frame per step: a window only of one frame (a rate), or one frame per step
        # of FFmpeg's fps filter (frozenbilm_clip's).
        assert not isinstance(preset.sampling, Windows) or preset.sampling.window == 1
    factory = _REGISTRY[preset.extractor].factory
    assert set(preset.options) <= set(inspect.signature(factory).parameters)


@pytest.mark.parametrize("name", list_extractors())
def test_every_record_names_weights_that_exist(name):
    meta = extractor_meta(name)
    source, ident = meta.weights_source, meta.weights_id
    assert source in WEIGHTS_SOURCES and meta.description
    if source == "torchvision":
        from torchvision.models import get_weight

        transforms = get_weight(ident).transforms()  # the enum the factory loads
        assert meta.resize == (transforms.resize_size[0] if meta.kind == "2d" else tuple(transforms.resize_size))
    elif source == "package-index":
        assert ident in W.SOURCES
    elif source == "pytorchvideo":
        assert ident == name  # the hub builder of that name
    elif source == "transformers":
        from moviefib.features.models_2d import CLIP_DEFAULT, CLIP_VITL14_META

        assert ident == {"clip": CLIP_DEFAULT, "clip_vitl14": CLIP_VITL14_META.weights_id}[name]
    else:
        assert source == "file" and name == "c3d"


@pytest.mark.parametrize("name", list_extractors())
def test_default_sampling_is_one_model_input_per_step(name):
    meta = extractor_meta(name)
    if meta.kind == "2d":
        assert meta.default_sampling == EveryKth(1) and meta.window == 1 and meta.fps is None
    else:
        assert meta.default_sampling == Windows(meta.window, fps=meta.fps)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownExtractorError) as info:
        extractor_meta("vgg16")
    message = str(info.value)
    assert "'vgg16'" in message and "googlenet" in message and "x3d_m" in message and "\n" not in message


_GOOD = {"kind": "3d", "dim": 8, "layer": "pool", "weights": "file:x.pth", "resize": 32, "input_size": 28,
         "window": 4}


@pytest.mark.parametrize("change, says", [
    ({"kind": "4d"}, "kind must be '2d' or '3d'"),
    ({"dim": 0}, "dim and window must be >= 1"),
    ({"window": 0}, "dim and window must be >= 1"),
    ({"kind": "2d"}, "2D extractor has window 1"),
    ({"kind": "2d", "window": 1, "fps": 25.0}, "2D extractor has window 1 and no frame rate"),
    ({"weights": "x.pth"}, "expected <source>:<id>"),
    ({"weights": "hub:x"}, "expected <source>:<id>"),
    ({"weights": "torchvision:"}, "expected <source>:<id>"),
])
def test_a_malformed_record_is_refused(change, says):
    with pytest.raises(ValueError, match=says):
        ExtractorMeta(**{**_GOOD, **change})


def test_decode_short_side_is_the_preprocessing_short_side():
    assert ExtractorMeta(**_GOOD).decode_short_side == 32
    assert ExtractorMeta(**{**_GOOD, "resize": (128, 171)}).decode_short_side == 128


def test_registration_needs_a_record_and_a_free_name():
    with pytest.raises(TypeError, match="must be an ExtractorMeta"):
        register_extractor("nothing", meta={"dim": 3})
    with pytest.raises(ValueError, match="already registered by moviefib.features.models_i3d"):
        register_extractor("i3d", meta=ExtractorMeta(**_GOOD))(lambda **kw: None)
    assert "nothing" not in list_extractors()


def test_presets_and_sampling_strings_need_no_torch():
    # A torch-free process can read what a preset samples; only its size needs the model families.
    code = ("import sys\n"
            "from moviefib.features.presets import get_preset, parse_sampling\n"
            "p = get_preset('i3d'); s = parse_sampling('windows:16,fps=25,stride=16')\n"
            "assert s == p.sampling, (s, p.sampling)\n"
            "assert parse_sampling('ffmpeg-fps:1') == get_preset('frozenbilm_clip').sampling\n"
            "assert 'torch' not in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
