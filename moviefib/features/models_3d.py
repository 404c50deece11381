"""3D (per-window) extractors: C3D (the paper's), torchvision's R(2+1)D-18, R3D-18 and S3D, and
pytorchvideo's X3D/SlowFast behind the optional ``pytorchvideo`` dependency. I3D has its own module.

Each model takes ``[B, 3, T, H, W]`` and gives ``[B, dim]``.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .hub import WeightsFileError, load_state_dict_file, torchvision_model
from .registry import Extractor, ExtractorMeta, build_extractor, register_extractor
from .transforms import FramePreprocess

_KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
_KINETICS_STD = (0.22803, 0.22145, 0.216989)


def _kinetics_labels() -> list[str]:
    from torchvision.models.video import R2Plus1D_18_Weights

    return list(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])


def _logits_pool(x: torch.Tensor) -> torch.Tensor:
    """I3D/S3D's Logits pooling: a 2x7x7 average (VALID, stride 1) then the mean over time; a linear
    head on it equals their 1x1x1 logits convolution. Smaller maps are pooled whole."""
    kernel = (min(2, x.shape[2]), min(7, x.shape[3]), min(7, x.shape[4]))
    return F.avg_pool3d(x, kernel, stride=1).mean(dim=(2, 3, 4))


def _conv_head_as_linear(conv: nn.Conv3d) -> nn.Linear:
    head = nn.Linear(conv.in_channels, conv.out_channels)
    with torch.no_grad():
        head.weight.copy_(conv.weight.flatten(1))
        head.bias.copy_(conv.bias)
    return head.eval()


# ---------------------------------------------------------------- C3D

C3D_WINDOW = 16
# Input convention of the Sports-1M weights. The Caffe model (facebook/C3D) was trained on frames read by
# OpenCV, so BGR, as unscaled 0-255 pixels minus the training mean cube, resized to 128x171 and cropped
# to 112x112. The PyTorch port (DavideA/c3d-pytorch's c3d.pickle) is a straight copy of those weights:
# the conversions it descends from (the Keras port of the Caffe model) transpose axes but never reorder
# conv1's input channels. The port's own demo (predict.py) feeds RGB without the mean and is "tested only
# qualitatively" by its README; we follow the training convention, which is what the paper's features saw.
# C3D_MEAN is the per-channel (B, G, R) average of the Sports-1M mean cube, the per-channel mean the
# common C3D ports subtract from OpenCV (BGR) frames (about 90, 98, 102).
C3D_CHANNEL_ORDER = "bgr"
C3D_MEAN = (90.25, 97.66, 101.41)


class C3D(nn.Module):
    """C3D (Tran et al. 2015) with the parameter names of the common PyTorch port of the Sports-1M weights
    (``c3d.pickle``: conv1, conv2, conv3a/b, conv4a/b, conv5a/b, fc6, fc7, fc8, weight and bias each).
    Input ``[B, 3, 16, 112, 112]`` (0-255 BGR pixels, mean subtracted); output fc6 or fc7 after ReLU
    (4096-d)."""

    def __init__(self, layer: str = "fc6", num_classes: int = 487):
        super().__init__()
        if layer not in ("fc6", "fc7"):
            raise ValueError(f"c3d: layer must be 'fc6' or 'fc7', not {layer!r}")
        self.layer = layer
        conv = lambda cin, cout: nn.Conv3d(cin, cout, 3, padding=1)  # noqa: E731
        self.conv1, self.conv2 = conv(3, 64), conv(64, 128)
        self.conv3a, self.conv3b = conv(128, 256), conv(256, 256)
        self.conv4a, self.conv4b = conv(256, 512), conv(512, 512)
        self.conv5a, self.conv5b = conv(512, 512), conv(512, 512)
        self.pool1 = nn.MaxPool3d((1, 2, 2), (1, 2, 2))
        self.pool = nn.MaxPool3d(2, 2)
        self.pool5 = nn.MaxPool3d(2, 2, padding=(0, 1, 1))
        self.fc6, self.fc7, self.fc8 = nn.Linear(8192, 4096), nn.Linear(4096, 4096), nn.Linear(4096, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[2:]) != (C3D_WINDOW, 112, 112):
            raise ValueError(f"c3d takes [B, 3, 16, 112, 112] windows, got {tuple(x.shape)}")
        relu = F.relu
        x = self.pool1(relu(self.conv1(x)))
        x = self.pool(relu(self.conv2(x)))
        x = self.pool(relu(self.conv3b(relu(self.conv3a(x)))))
        x = self.pool(relu(self.conv4b(relu(self.conv4a(x)))))
        x = self.pool5(relu(self.conv5b(relu(self.conv5a(x)))))
        x = relu(self.fc6(x.flatten(1)))
        return relu(self.fc7(x)) if self.layer == "fc7" else x

    def head(self) -> nn.Module:
        """The Sports-1M classifier on top of this model's feature layer."""
        if self.layer == "fc6":
            return nn.Sequential(self.fc7, nn.ReLU(), self.fc8).eval()
        return self.fc8.eval()


def _list(names: list[str], limit: int = 3) -> str:
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def load_c3d(path: Path, layer: str = "fc6") -> C3D:
    """A :class:`C3D` holding the state dict in ``path`` (``c3d.pickle`` or a file with the same keys).

    fc8 may have any number of classes (a fine-tuned head); everything else must match in name and
    shape. Raises WeightsFileError in one line naming the file and the first missing, unexpected or misshapen
    keys.
    """
    state = load_state_dict_file(path)
    fc8 = state.get("fc8.weight")
    num_classes = fc8.shape[0] if isinstance(fc8, torch.Tensor) and fc8.ndim == 2 else 487
    model = C3D(layer, num_classes=num_classes)
    want = model.state_dict()
    missing = [k for k in want if k not in state]
    unexpected = [k for k in state if k not in want]
    misshapen = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})" for k, v in want.items()
                 if k in state and (not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape)]
    if missing or unexpected or misshapen:
        problems = "; ".join(f"{what} {_list(keys)}" for what, keys in
                             (("missing", missing), ("unexpected", unexpected), ("wrong shape", misshapen))
                             if keys)
        raise WeightsFileError(f"c3d: {path} does not fit the architecture (expected the keys of the PyTorch "
                         f"port's c3d.pickle, conv1.weight ... fc8.bias): {problems}")
    model.load_state_dict(state, strict=True)
    return model


C3D_META = ExtractorMeta(
    kind="3d", dim=4096, layer="fc6 (after ReLU)", weights="file:c3d.pickle", resize=(128, 171),
    input_size=112, window=C3D_WINDOW,
    description="C3D Sports-1M fc6 on 16-frame windows: the paper's 3D feature (weights: pass c3d.pickle)")


@register_extractor("c3d", meta=C3D_META)
def create_c3d(*, weights="default", layer: str = "fc6", mean: tuple[float, float, float] = C3D_MEAN,
               channel_order: str = C3D_CHANNEL_ORDER) -> Extractor:
    """C3D fc6 (default, the paper's 3D feature, :data:`C3D_META`) or fc7 (same size), per 16-frame
    window.

    The Sports-1M weights are not on any index: pass the path of ``c3d.pickle`` (the widely used PyTorch
    port, a state dict) as ``weights``. "default" fails with a one-line explanation.
    ``channel_order`` and ``mean`` (0-255 units, in that channel order) default to the Caffe model's
    training input, BGR minus the Sports-1M mean (see ``C3D_MEAN``); ``channel_order="rgb",
    mean=(0, 0, 0)`` gives the pixels the port's predict.py feeds (which also resizes differently).
    """
    from .weights import WeightsUnavailableError, sha256_file

    if weights == "default":
        raise WeightsUnavailableError(
            "c3d has no downloadable default weights: pass the path of the Sports-1M c3d.pickle "
            "(PyTorch port of the Caffe model) as weights, or weights=None for random init")
    if weights is None:
        model = C3D(layer)
        weights_id = digest = "random-init"
    else:
        model = load_c3d(Path(weights), layer)
        weights_id, digest = str(weights), sha256_file(Path(weights))
    model.eval()
    preprocess = FramePreprocess(layout="3d", resize=C3D_META.resize, crop=C3D_META.input_size,
                                 mean=tuple(mean), std=(1.0, 1.0, 1.0), scale=1.0,
                                 interpolation="bilinear", channel_order=channel_order)
    return build_extractor("c3d", C3D_META, model=model, preprocess=preprocess, weights_id=weights_id,
                           digest=digest, layer=f"{layer} (after ReLU)",
                           classify=model.head() if weights is not None else None)


# ---------------------------------------------------------------- torchvision video models

_TV_FPS = 15.0  # torchvision's Kinetics recipes sample clips at 15 fps


class _TorchvisionVideo(nn.Module):
    def __init__(self, net: nn.Module, kind: str):
        super().__init__()
        self.net, self.kind = net, kind
        if kind == "resnet":
            net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "resnet":
            return self.net(x)
        return _logits_pool(self.net.features(x))


def _torchvision_3d(name: str, meta: ExtractorMeta, builder, weights, window: int) -> Extractor:
    from torchvision.models import get_weight

    default_weights = get_weight(meta.weights_id)
    net, weights_id, digest = torchvision_model(name, builder, default_weights, weights)
    if name == "s3d":
        kind, head = "s3d", _conv_head_as_linear(net.classifier[1])
    else:
        kind, head = "resnet", net.fc.eval()
    model = _TorchvisionVideo(net, kind).eval()
    transforms = default_weights.transforms()
    preprocess = FramePreprocess(layout="3d", resize=tuple(int(v) for v in transforms.resize_size),
                                 crop=tuple(int(v) for v in transforms.crop_size),
                                 mean=tuple(transforms.mean), std=tuple(transforms.std),
                                 interpolation="bilinear")
    pretrained = weights is not None
    return build_extractor(name, meta, model=model, preprocess=preprocess, weights_id=weights_id,
                           digest=digest, window=window, classify=head if pretrained else None,
                           labels=_kinetics_labels() if pretrained else None)


R2PLUS1D_18_META = ExtractorMeta(
    kind="3d", dim=512, layer="avgpool", weights="torchvision:R2Plus1D_18_Weights.KINETICS400_V1",
    resize=(128, 171), input_size=112, window=16, fps=_TV_FPS,
    description="R(2+1)D-18, Kinetics-400 (torchvision)")


@register_extractor("r2plus1d_18", meta=R2PLUS1D_18_META)
def create_r2plus1d_18(*, weights="default", window: int = R2PLUS1D_18_META.window) -> Extractor:
    """R(2+1)D-18, Kinetics-400 (torchvision, :data:`R2PLUS1D_18_META`), per window of ``window`` frames."""
    from torchvision.models.video import r2plus1d_18

    return _torchvision_3d("r2plus1d_18", R2PLUS1D_18_META, r2plus1d_18, weights, window)


R3D_18_META = ExtractorMeta(
    kind="3d", dim=512, layer="avgpool", weights="torchvision:R3D_18_Weights.KINETICS400_V1",
    resize=(128, 171), input_size=112, window=16, fps=_TV_FPS, description="R3D-18, Kinetics-400 (torchvision)")


@register_extractor("r3d_18", meta=R3D_18_META)
def create_r3d_18(*, weights="default", window: int = R3D_18_META.window) -> Extractor:
    """R3D-18, Kinetics-400 (torchvision, :data:`R3D_18_META`), per window of ``window`` frames."""
    from torchvision.models.video import r3d_18

    return _torchvision_3d("r3d_18", R3D_18_META, r3d_18, weights, window)


# 32 frames at 15 fps: about the 2 s of the shortest LSMDC clips.
S3D_META = ExtractorMeta(
    kind="3d", dim=1024, layer="features (2x7x7 avg pool, mean over time)",
    weights="torchvision:S3D_Weights.KINETICS400_V1", resize=(256, 256), input_size=224, window=32,
    fps=_TV_FPS, description="S3D, Kinetics-400 (torchvision); windows of at least 14 frames")


@register_extractor("s3d", meta=S3D_META)
def create_s3d(*, weights="default", window: int = S3D_META.window) -> Extractor:
    """S3D, Kinetics-400 (torchvision, :data:`S3D_META`), per window of ``window`` frames (the model needs
    at least 14)."""
    from torchvision.models.video import s3d

    if window < 14:
        raise ValueError(f"s3d needs windows of at least 14 frames, not {window}")
    return _torchvision_3d("s3d", S3D_META, s3d, weights, window)
