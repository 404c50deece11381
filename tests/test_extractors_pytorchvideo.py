"""pytorchvideo's X3D and SlowFast extractors (optional dependency): random-init forward passes on tiny
inputs, features equal to what pytorchvideo's own models feed their classifier, local checkpoints,
and the one-line failures (pytorchvideo missing, weights hub unreachable or silent)."""

from __future__ import annotations

import functools
import importlib.util
import pickle
import socket
import sys
import time

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from moviefib.features import models_pytorchvideo as PTV  # noqa: E402
from moviefib.features.registry import create_extractor, extractor_meta, list_extractors  # noqa: E402
from moviefib.features.weights import WeightsUnavailableError, sha256_file  # noqa: E402

# pytorchvideo decorates layers with torch.jit.script, which torch deprecates; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")

needs_pytorchvideo = pytest.mark.skipif(
    importlib.util.find_spec("pytorchvideo") is None,
    reason="pytorchvideo not installed (pip install 'moviefib[pytorchvideo]')")

NAMES = ("x3d_xs", "x3d_s", "x3d_m", "slowfast_r50")
# A tiny input per extractor (any window works); what each gives is its registry record.
TINY = {
    "x3d_xs": (2, 3, 4, 32, 32),
    "x3d_s": (1, 3, 5, 32, 48),
    "x3d_m": (1, 3, 3, 32, 32),
    "slowfast_r50": (1, 3, 8, 32, 32),
}


@functools.cache
def _random(name):
    torch.manual_seed(0)
    return create_extractor(name, weights=None, memory_format="contiguous")


def _one_line_unavailable(name, **kwargs) -> str:
    with pytest.raises(WeightsUnavailableError) as info:
        create_extractor(name, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_names_are_registered_even_without_pytorchvideo():
    assert set(NAMES) <= set(list_extractors())


def test_missing_pytorchvideo_is_one_line(monkeypatch):
    for module in ("pytorchvideo", "pytorchvideo.models", "pytorchvideo.models.hub"):
        monkeypatch.setitem(sys.modules, module, None)  # what `import` sees when it is not installed
    for name in NAMES:
        message = _one_line_unavailable(name, weights=None)
        assert "pip install 'moviefib[pytorchvideo]'" in message


@needs_pytorchvideo
@pytest.mark.parametrize("name", NAMES)
def test_random_init_forward(name):
    shape, meta = TINY[name], extractor_meta(name)
    ex = _random(name)
    assert (ex.name, ex.kind, ex.dim, ex.window, ex.fps) == (name, "3d", meta.dim, meta.window, meta.fps)
    assert ex.preprocess.resize == meta.resize and ex.preprocess.crop_size == (meta.input_size,) * 2
    assert ex.provenance["sha256"] == ex.provenance["weights"] == "random-init"
    assert "pytorchvideo" in ex.provenance["versions"]
    assert ex.classify is None and ex.labels is None and not ex.model.training
    with torch.no_grad():
        out = ex.model(torch.randn(*shape))
    assert tuple(out.shape) == (shape[0], meta.dim) and torch.isfinite(out).all()


@needs_pytorchvideo
def test_channels_last_wrapping_gives_the_same_features():
    torch.manual_seed(0)
    ex = create_extractor("x3d_xs", weights=None)  # channels_last by default
    plain = ex.model.model
    x = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ex.model(x), plain(x.contiguous()), atol=1e-4)
    assert ex.provenance["memory_format"] == "channels_last"


@needs_pytorchvideo
@pytest.mark.parametrize("name", ["x3d_m", "slowfast_r50"])
def test_preprocess_follows_the_hub_recipe(name):
    ex = _random(name)
    frames = torch.full((ex.window, 90, 160, 3), 255, dtype=torch.uint8)
    out = pickle.loads(pickle.dumps(ex.preprocess))(frames)  # DataLoader workers receive it pickled
    assert tuple(out.shape) == (3, ex.window, 256, 256) and out.dtype == torch.float32
    assert torch.allclose(out, torch.full_like(out, (1 - 0.45) / 0.225))
    assert ex.provenance["crop"] == "centre 256x256" and "30 fps" in ex.provenance["sampling"]


@needs_pytorchvideo
def test_x3d_features_are_what_its_classifier_reads():
    from pytorchvideo.models.x3d import create_x3d

    torch.manual_seed(1)
    net = create_x3d(input_clip_length=4, input_crop_size=64).eval()  # X3D-XS, head pool kernel (4, 2, 2)
    wrapper = PTV.X3DFeatures(net).eval()
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        feats = wrapper(x)
        assert feats.shape == (1, PTV.X3D_XS_META.dim) and (feats >= 0).all()  # after the projected pool's ReLU
        probs = wrapper.head()(feats).softmax(-1)
        assert torch.allclose(probs, net(x), atol=1e-5)  # the hub model ends in a softmax


@needs_pytorchvideo
def test_slowfast_features_are_what_its_classifier_reads():
    from pytorchvideo.models import hub

    torch.manual_seed(2)
    net = hub.slowfast_r50(pretrained=False, head_pool_kernel_sizes=((2, 2, 2), (8, 2, 2))).eval()
    wrapper = PTV.SlowFastFeatures(net).eval()
    x = torch.randn(1, 3, 8, 64, 64)
    with torch.no_grad():
        feats = wrapper(x)
        slow = x[:, :, [0, 7]]  # T / alpha = 2 frames spread over the window
        assert feats.shape == (1, PTV.SLOWFAST_R50_META.dim)
        assert torch.allclose(wrapper.head()(feats), net([slow, x]), atol=1e-4)
        with pytest.raises(ValueError, match="multiple of 4"):
            wrapper(torch.randn(1, 3, 6, 64, 64))


@needs_pytorchvideo
def test_slowfast_window_must_be_a_multiple_of_alpha():
    with pytest.raises(ValueError, match="multiple of 4"):
        create_extractor("slowfast_r50", weights=None, window=30)
    with pytest.raises(ValueError, match="at least 1 frame"):
        create_extractor("x3d_xs", weights=None, window=0)


@needs_pytorchvideo
def test_local_checkpoint_loads_with_labels(tmp_path):
    reference = _random("x3d_xs")
    path = tmp_path / "X3D_XS.pyth"
    torch.save({"model_state": reference.model.net.state_dict()}, path)  # pytorchvideo's layout
    ex = create_extractor("x3d_xs", weights=path, memory_format="contiguous")
    assert ex.provenance["weights"] == str(path) and ex.provenance["sha256"] == sha256_file(path)
    assert len(ex.labels) == 400 and ex.labels[5] == "archery"
    x = torch.randn(1, 3, 4, 32, 32)
    with torch.no_grad():
        feats = ex.model(x)
        assert torch.equal(feats, reference.model(x))
        assert ex.classify(feats).shape == (1, 400)


@needs_pytorchvideo
def test_checkpoint_of_another_model_is_rejected(tmp_path):
    path = tmp_path / "other.pyth"
    torch.save({"model_state": {"blocks.0.conv.weight": torch.zeros(1)}}, path)
    with pytest.raises(ValueError, match="other.pyth does not fit the architecture"):
        create_extractor("x3d_xs", weights=path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@needs_pytorchvideo
def test_default_weights_offline_is_one_line_and_fast(monkeypatch, tmp_path):
    from pytorchvideo.models import hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: the checkpoint must be downloaded
    url = f"http://127.0.0.1:{_closed_port()}/X3D_XS.pyth"
    monkeypatch.setitem(hub.x3d.checkpoint_paths, "x3d_xs", url)
    start = time.monotonic()
    message = _one_line_unavailable("x3d_xs")
    assert time.monotonic() - start < 10
    assert "x3d_xs" in message and url in message and "weights" in message
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())  # nothing half-downloaded left


@needs_pytorchvideo
def test_a_silent_server_times_out_instead_of_hanging(monkeypatch, tmp_path):
    from pytorchvideo.models import hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(PTV, "DOWNLOAD_TIMEOUT_S", 0.5)
    with socket.socket() as server:  # accepts connections (backlog) and never answers
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/SLOWFAST_8x8_R50.pyth"
        monkeypatch.setitem(hub.slowfast.checkpoint_paths, "slowfast_r50", url)
        start = time.monotonic()
        message = _one_line_unavailable("slowfast_r50")
        assert time.monotonic() - start < 10
    assert "slowfast_r50" in message and "timed out" in message
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())


@needs_pytorchvideo
def test_default_weights_come_from_the_torch_hub_cache(monkeypatch, tmp_path):
    from pytorchvideo.models import hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    cached = tmp_path / "hub" / "checkpoints" / "X3D_XS.pyth"
    cached.parent.mkdir(parents=True)
    torch.save({"model_state": _random("x3d_xs").model.net.state_dict()}, cached)
    # A cached file is used as is: the (unreachable) URL is never asked.
    monkeypatch.setitem(hub.x3d.checkpoint_paths, "x3d_xs", f"http://127.0.0.1:{_closed_port()}/X3D_XS.pyth")
    ex = create_extractor("x3d_xs", memory_format="contiguous")
    assert ex.provenance["weights"].startswith("pytorchvideo:http://127.0.0.1")
    assert ex.provenance["sha256"] == sha256_file(cached) and ex.labels is not None


@needs_pytorchvideo
def test_a_cut_download_leaves_nothing_that_looks_cached(monkeypatch, tmp_path):
    import threading

    from pytorchvideo.models import hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def serve_half_a_file():
            conn, _ = server.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)

        thread = threading.Thread(target=serve_half_a_file, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/X3D_M.pyth"
        monkeypatch.setitem(hub.x3d.checkpoint_paths, "x3d_m", url)
        message = _one_line_unavailable("x3d_m")
        thread.join(5)
    assert "x3d_m" in message and "cut after 10 of 1000 bytes" in message
    assert not any((tmp_path / "hub" / "checkpoints").iterdir())


@needs_pytorchvideo
def test_default_weights_download_into_the_cache(monkeypatch, tmp_path):
    import http.server
    import threading

    from pytorchvideo.models import hub

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    served = tmp_path / "served"
    served.mkdir()
    torch.save({"model_state": _random("x3d_xs").model.net.state_dict()}, served / "X3D_XS.pyth")
    handler = functools.partial(QuietHandler, directory=str(served))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/X3D_XS.pyth"
        monkeypatch.setitem(hub.x3d.checkpoint_paths, "x3d_xs", url)
        try:
            ex = create_extractor("x3d_xs", memory_format="contiguous")
        finally:
            server.shutdown()
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "X3D_XS.pyth"
    assert [p.name for p in cached.parent.iterdir()] == ["X3D_XS.pyth"]  # no temporary file left
    assert ex.provenance["weights"] == f"pytorchvideo:{url}"
    assert ex.provenance["sha256"] == sha256_file(cached) == sha256_file(served / "X3D_XS.pyth")
    assert ex.classify is not None and len(ex.labels) == 400
