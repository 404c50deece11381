"""pytorchvideo's Kinetics-400 X3D (XS, S, M) and SlowFast R50 8x8, behind the optional ``pytorchvideo``
dependency (``pip install 'moviefib[pytorchvideo]'``).

pytorchvideo 0.1.5 (2022) is unmaintained: it is imported only when one of these extractors is created,
its architectures come from its hub builders (the configurations its checkpoints were trained with), and
none of ``pytorchvideo.transforms`` is used (it no longer imports with current torchvision): frames go
through :class:`FramePreprocess` with the settings of pytorchvideo's own hub recipe (short side resized,
centre crop, mean 0.45, std 0.225, frames taken every ``sampling_rate``-th of a 30 fps video).

Checkpoints are downloaded from pytorchvideo's hub URLs into torch's hub cache (where pytorchvideo's own
``pretrained=True`` puts them, so either reuses the other's file) with a socket timeout, so that offline a
creation fails in one line instead of hanging.

Features are the input of the Kinetics classifier, averaged over positions: X3D's 2048-d projected pool
(after its ReLU), SlowFast's 2304-d concatenation of the pooled slow (2048) and fast (256) pathways.
``classify`` is that classifier, so ``classify(features)`` are the model's logits averaged over positions
(X3D's hub model averages per-position softmaxes instead; at its training crop there is one position and
the two agree). Resizing is antialiased, where pytorchvideo's ``ShortSideScale`` is not: pixels differ
slightly from its recipe when downscaling.
"""

from __future__ import annotations

import http.client
import logging
import urllib.request
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import atomic_output
from .hub import load_state_dict_file
from .registry import Extractor, ExtractorMeta, build_extractor, library_versions, register_extractor
from .transforms import FramePreprocess
from .weights import WeightsUnavailableError, sha256_file

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'moviefib[pytorchvideo]'"
# Per socket operation (connect, each read): a dead network fails within it, a slow download goes on.
DOWNLOAD_TIMEOUT_S = 20.0

_MEAN = (0.45, 0.45, 0.45)
_STD = (0.225, 0.225, 0.225)
_SOURCE_FPS = 30.0  # pytorchvideo's recipes take every sampling_rate-th frame of 30 fps video


def _hub_meta(builder: str, *, frames: int, sampling_rate: int, side: int, dim: int, layer: str,
              description: str) -> ExtractorMeta:
    """The record of a hub model from pytorchvideo's test-time recipe: ``frames`` per window taken
    every ``sampling_rate``-th frame of a 30 fps video, short side resized to ``side`` and a centre
    crop of ``side`` (the hub's crop equals its short side)."""
    return ExtractorMeta(kind="3d", dim=dim, layer=layer, weights=f"pytorchvideo:{builder}", resize=side,
                         input_size=side, window=frames, fps=_SOURCE_FPS / sampling_rate,
                         description=description)


_X3D_LAYER = "head projected pool (2048-d after ReLU), averaged over positions"
X3D_XS_META = _hub_meta("x3d_xs", frames=4, sampling_rate=12, side=182, dim=2048, layer=_X3D_LAYER,
                        description="X3D-XS, Kinetics-400 (pytorchvideo)")
X3D_S_META = _hub_meta("x3d_s", frames=13, sampling_rate=6, side=182, dim=2048, layer=_X3D_LAYER,
                       description="X3D-S, Kinetics-400 (pytorchvideo)")
X3D_M_META = _hub_meta("x3d_m", frames=16, sampling_rate=5, side=256, dim=2048, layer=_X3D_LAYER,
                       description="X3D-M, Kinetics-400 (pytorchvideo)")
SLOWFAST_R50_META = _hub_meta(
    "slowfast_r50", frames=32, sampling_rate=2, side=256, dim=2304,
    layer="pooled slow (2048) + fast (256) pathways, averaged over positions",
    description="SlowFast R50 8x8, Kinetics-400 (pytorchvideo); the slow pathway sees 1 frame in 4")
SLOWFAST_ALPHA = 4  # fast/slow frame-rate ratio of SlowFast 8x8


def _import_hub():
    """``pytorchvideo.models.hub``, or a one-line WeightsUnavailableError saying how to install it."""
    try:
        with warnings.catch_warnings():
            # pytorchvideo decorates a few layers with torch.jit.script, which torch now deprecates.
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            from pytorchvideo.models import hub
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"the X3D and SlowFast extractors need pytorchvideo: {INSTALL_HINT} ({exc})") from None
    return hub


def _checkpoint_url(hub, builder: str) -> str:
    module = hub.slowfast if builder.startswith("slowfast") else hub.x3d
    return module.checkpoint_paths[builder]


def _download(name: str, url: str) -> Path:
    """The checkpoint at ``url`` from torch's hub cache, downloading it first if needed.

    Written to a temporary name and renamed when complete, so a killed or cut download never leaves a
    file that looks cached."""
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return cached
    hint = (f"on a machine without internet, download the file elsewhere and pass its path as weights, "
            f"or put it in {cached.parent}")
    log.info("%s: downloading %s", name, url)
    try:
        with atomic_output(cached, suffix=".partial") as tmp, open(tmp, "wb") as out, \
                urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            expected = response.headers.get("Content-Length")
            while chunk := response.read(1 << 20):
                out.write(chunk)
            # http.client ends a read quietly when the server closes early: only the length tells.
            if expected is not None and out.tell() != int(expected):
                raise WeightsUnavailableError(
                    f"{name}: download of {url} cut after {out.tell()} of {expected} bytes; {hint}")
    # URLError, timeouts and disk errors are OSErrors; http.client's own errors are not.
    except (OSError, http.client.HTTPException) as exc:
        reason = str(getattr(exc, "reason", None) or exc).strip()
        reason = reason.splitlines()[0] if reason else type(exc).__name__
        raise WeightsUnavailableError(
            f"{name}: cannot download pytorchvideo weights from {url} ({reason}); {hint}") from None
    return cached


def _load_checkpoint(net: nn.Module, path: Path, name: str) -> None:
    """Load a pytorchvideo checkpoint (``{"model_state": state_dict}``) or a plain state dict strictly."""
    state = load_state_dict_file(path)
    if isinstance(state.get("model_state"), dict):
        state = state["model_state"]
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).splitlines()[:3])
        raise ValueError(f"{name}: {path} does not fit the architecture: {detail[:400]}") from None


def _head_pool(x: torch.Tensor, kernel) -> torch.Tensor:
    """The hub head's pooling: an average over ``kernel`` (sized for the training crop and window) with
    stride 1; maps smaller than the kernel (short windows, small crops) are pooled whole."""
    kernel = tuple(min(k, s) for k, s in zip(kernel, x.shape[2:]))
    return F.avg_pool3d(x, kernel, stride=1)


class X3DFeatures(nn.Module):
    """pytorchvideo's X3D without its classifier: ``[B, 3, T, H, W]`` → ``[B, 2048]``.

    ``net`` is the hub model, kept whole (its state dict is the checkpoint's); forward runs its stem,
    stages and the head's projected pool, and stops before dropout and the linear classifier."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blocks = self.net.blocks
        for block in blocks[:-1]:
            x = block(x)
        pool = blocks[-1].pool
        x = pool.pre_conv(x)
        if pool.pre_norm is not None:
            x = pool.pre_norm(x)
        if pool.pre_act is not None:
            x = pool.pre_act(x)
        x = pool.post_conv(_head_pool(x, pool.pool.kernel_size))
        if pool.post_norm is not None:
            x = pool.post_norm(x)
        if pool.post_act is not None:
            x = pool.post_act(x)
        return x.mean(dim=(2, 3, 4))

    def head(self) -> nn.Module:
        return self.net.blocks[-1].proj


class SlowFastFeatures(nn.Module):
    """pytorchvideo's SlowFast without its classifier: ``[B, 3, T, H, W]`` → ``[B, 2304]``.

    The input is the fast pathway; the slow one is ``T / alpha`` frames picked uniformly from it, as in
    pytorchvideo's recipe. ``T`` must be a multiple of ``alpha`` so the lateral connections line up."""

    def __init__(self, net: nn.Module, alpha: int = SLOWFAST_ALPHA):
        super().__init__()
        self.net, self.alpha = net, alpha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[2]
        if frames < self.alpha or frames % self.alpha:
            raise ValueError(f"slowfast takes windows of a multiple of {self.alpha} frames, "
                             f"got {tuple(x.shape)}")
        index = torch.linspace(0, frames - 1, frames // self.alpha, device=x.device).long()
        pathways = [x.index_select(2, index), x]
        blocks = self.net.blocks
        for block in blocks[:-2]:
            pathways = block(pathways)
        pools = blocks[-2].pool
        # Pooled per pathway before concatenating: the pathways' maps differ in length when T is not
        # the trained 32 frames.
        pooled = [_head_pool(p, pool.kernel_size).mean(dim=(2, 3, 4)) for p, pool in zip(pathways, pools)]
        return torch.cat(pooled, 1)

    def head(self) -> nn.Module:
        return self.net.blocks[-1].proj


def _check_window(name: str, window: int) -> None:
    if name == "slowfast_r50":
        if window < SLOWFAST_ALPHA or window % SLOWFAST_ALPHA:
            raise ValueError(f"slowfast_r50 needs a window that is a multiple of {SLOWFAST_ALPHA} frames, "
                             f"not {window}")
    elif window < 1:
        raise ValueError(f"{name} needs a window of at least 1 frame, not {window}")


def _create(name: str, meta: ExtractorMeta, weights, window: int | None) -> Extractor:
    hub = _import_hub()
    import pytorchvideo

    window = meta.window if window is None else int(window)
    _check_window(name, window)
    builder = meta.weights_id
    net = getattr(hub, builder)(pretrained=False)
    if weights is None:
        weights_id = digest = "random-init"
    else:
        if weights == "default":
            url = _checkpoint_url(hub, builder)
            path, weights_id = _download(name, url), f"pytorchvideo:{url}"
        else:
            path = weights_id = Path(weights)
        _load_checkpoint(net, path, name)
        weights_id, digest = str(weights_id), sha256_file(path)
    wrapper = X3DFeatures(net) if name.startswith("x3d") else SlowFastFeatures(net)
    wrapper.eval()
    preprocess = FramePreprocess(layout="3d", resize=meta.resize, crop=meta.input_size, mean=_MEAN, std=_STD,
                                 interpolation="bilinear")
    more = {"sampling": f"1 frame in {round(_SOURCE_FPS / meta.fps)} of a 30 fps video"}
    if name == "slowfast_r50":
        more["slow_pathway"] = f"{window // SLOWFAST_ALPHA} of the {window} frames (alpha {SLOWFAST_ALPHA})"
    labels = None
    if weights is not None:
        from .models_3d import _kinetics_labels

        # pytorchvideo's Kinetics-400 class ids (kinetics_classnames.json) are the alphabetical order
        # torchvision uses too.
        labels = _kinetics_labels()
    return build_extractor(name, meta, model=wrapper, preprocess=preprocess, weights_id=weights_id,
                           digest=digest, window=window,
                           classify=wrapper.head().eval() if weights is not None else None, labels=labels,
                           versions={**library_versions(), "pytorchvideo": pytorchvideo.__version__},
                           **more)


@register_extractor("x3d_xs", meta=X3D_XS_META)
def create_x3d_xs(*, weights="default", window: int | None = None) -> Extractor:
    """X3D-XS (:data:`X3D_XS_META`): 4-frame windows at 2.5 fps, 182 px."""
    return _create("x3d_xs", X3D_XS_META, weights, window)


@register_extractor("x3d_s", meta=X3D_S_META)
def create_x3d_s(*, weights="default", window: int | None = None) -> Extractor:
    """X3D-S (:data:`X3D_S_META`): 13-frame windows at 5 fps, 182 px."""
    return _create("x3d_s", X3D_S_META, weights, window)


@register_extractor("x3d_m", meta=X3D_M_META)
def create_x3d_m(*, weights="default", window: int | None = None) -> Extractor:
    """X3D-M (:data:`X3D_M_META`): 16-frame windows at 6 fps, 256 px."""
    return _create("x3d_m", X3D_M_META, weights, window)


@register_extractor("slowfast_r50", meta=SLOWFAST_R50_META)
def create_slowfast_r50(*, weights="default", window: int | None = None) -> Extractor:
    """SlowFast R50 8x8 (:data:`SLOWFAST_R50_META`): 32-frame windows at 15 fps (the slow pathway sees
    8 of them), 256 px."""
    return _create("slowfast_r50", SLOWFAST_R50_META, weights, window)
