"""The segmentor: a timm backbone (``features_only``) + a segmentation head chosen by name.

``forward(img) -> SegOut(logits[B,C,h,w], feat[B,D,h,w], extra)``. The caller upsamples the logits
(bilinear) to the label size. Heads (``HEADS``, a registry by name):

* ``deeplabv3plus`` (the CPU default; RIPU's DeepLabV3+ rows): ASPP (1x1 + three 3x3 dilated
  convolutions + image pooling, 128 channels each, projected to 128) on the backbone's last feature
  (stride = output stride), upsampled and concatenated with a 48-channel projection of the stride-4
  feature, then two 3x3 convolutions with 128 channels. ``feat`` is that decoder feature (D = 128,
  stride 4) and ``logits`` are at stride 4 (a 1x1 classifier on ``feat``). Plain (not depthwise-
  separable) convolutions: a separable variant was about 20 % cheaper per iteration on the CPU but
  reached 39.3 instead of 53.3 target-supervised mIoU after 1000 iterations (README, "Domain gap").
* ``deeplabv2`` (the papers' head, for reproduction): the sum of 3x3 convolutions at dilations
  6/12/18/24 on the last feature. ``feat`` is the backbone's last feature (D = its channels, e.g. 320
  for efficientnet_lite0) and ``logits`` are at the output stride (8 or 16).

BatchNorm of the backbone is frozen (batch 2 per domain, as in the papers): its layers stay in eval
mode and their affine parameters have ``requires_grad=False``, whatever ``train()`` is called with.
What trains is the segmentor's own rule (``Segmentor.freeze``, one of ``FREEZE_SCOPES``): by default
the backbone's BatchNorm is frozen (the papers: batch 2 per domain) and the head's BatchNorm trains;
``train()`` keeps frozen BatchNorm in eval mode, so evaluation and post-hoc stages never un-freeze it.
"""
from __future__ import annotations

import contextlib

from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegOut:
    """What ``Segmentor.forward`` returns. ``logits``: float (B, num_classes, H/s, W/s), unnormalised
    class scores at the head's stride s (deeplabv3plus 4, deeplabv2 the output stride); upsample them
    (``upsample``) to the label size for a loss or a prediction. ``feat``: float (B, feat_channels,
    H/s, W/s), the features the classifier reads (FADA/CRA discriminators, prototypes). ``extra``:
    anything a head adds (empty for both heads)."""
    logits: torch.Tensor
    feat: torch.Tensor
    extra: dict = field(default_factory=dict)


def _conv_bn_relu(cin: int, cout: int, k: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=dilation * (k // 2), dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DeepLabV2Head(nn.Module):
    """DeepLabV2 classifier: the sum of 3x3 convolutions at several dilations (6/12/18/24 in the papers).
    In: ``feats[-1]`` (B, Cin, H/os, W/os). Out: logits (B, C, H/os, W/os), feat = ``feats[-1]``."""

    low_level = False

    def __init__(self, in_channels: list[int], num_classes: int, output_stride: int, dilations=(6, 12, 18, 24)):
        super().__init__()
        cin = in_channels[-1]
        self.branches = nn.ModuleList(
            nn.Conv2d(cin, num_classes, 3, padding=d, dilation=d) for d in dilations)
        for b in self.branches:
            nn.init.normal_(b.weight, 0, 0.01)
            nn.init.zeros_(b.bias)
        self.feat_channels = cin

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = feats[-1]
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        return out, x


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling (DeepLabV3): 1x1, three dilated 3x3 and an image-pooling branch,
    concatenated and projected to ``channels``. (B, Cin, h, w) -> (B, channels, h, w)."""

    def __init__(self, cin: int, channels: int, rates: tuple[int, int, int]):
        super().__init__()
        self.branches = nn.ModuleList([_conv_bn_relu(cin, channels, 1)] +
                                      [_conv_bn_relu(cin, channels, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, channels, 1, bias=False), nn.ReLU(inplace=True))
        self.project = _conv_bn_relu(channels * (len(rates) + 2), channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, *x.shape[-2:]))
        return self.project(torch.cat(outs, 1))


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+ decoder: ASPP on the last feature + a 48-channel projection of the stride-4 feature,
    two 3x3 convolutions (``channels``) and a 1x1 classifier. In: the backbone's features, the first
    at stride 4. Out: logits (B, C, H/4, W/4), feat (B, channels, H/4, W/4)."""

    low_level = True

    def __init__(self, in_channels: list[int], num_classes: int, output_stride: int, channels: int = 128,
                 low_channels: int = 48):
        super().__init__()
        rates = (6, 12, 18) if output_stride == 16 else (12, 24, 36)
        self.aspp = ASPP(in_channels[-1], channels, rates)
        self.low = _conv_bn_relu(in_channels[0], low_channels, 1)
        self.fuse = nn.Sequential(_conv_bn_relu(channels + low_channels, channels, 3),
                                  _conv_bn_relu(channels, channels, 3))
        self.classifier = nn.Conv2d(channels, num_classes, 1)
        self.feat_channels = channels

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.low(feats[0])
        x = upsample(self.aspp(feats[-1]), low.shape[-2:])
        feat = self.fuse(torch.cat([x, low], 1))
        return self.classifier(feat), feat


HEADS = {"deeplabv3plus": DeepLabV3PlusHead, "deeplabv2": DeepLabV2Head}


def known_backbones() -> list[str]:
    import timm

    return timm.list_models()


def upsample(x: torch.Tensor, size) -> torch.Tensor:
    """(B, C, h, w) float -> (B, C, *size): bilinear, align_corners=False, as the papers' code upsamples
    logits and features. The one upsampling of scores in the project."""
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


# what does not train, by scope (Segmentor.freeze)
FREEZE_SCOPES = {
    "none": "nothing is frozen",
    "backbone": "the backbone's BatchNorm (eval mode, no gradient); the default, as the papers",
    "all": "every BatchNorm, the head's too (its statistics stay as adapted)",
    "classifier": "everything but the head's classifier (deeplabv3plus: the 1x1 conv; deeplabv2: the whole "
                  "head); every BatchNorm in eval mode; the CR stage",
}


class FreezeScopes:
    """``freezing(scope)`` for a module with ``freeze(scope)`` and ``frozen`` (Segmentor, HRDA's wrapper)."""

    @contextlib.contextmanager
    def freezing(self, scope: str):
        """``freeze(scope)`` inside the block (e.g. a post-hoc stage), the previous scope after it."""
        before = self.frozen
        self.freeze(scope)
        try:
            yield self
        finally:
            self.freeze(before)


class Segmentor(FreezeScopes, nn.Module):
    """timm backbone + head by name (see the module docstring for shapes and strides).

    ``weights``: "imagenet" (the packaged efficientnet_lite0 weights, or the --weights file resolved by
    core.models.weights), a path, or None for random initialisation. Raises ValueError for an unknown
    head or an output stride other than 8/16, WeightsError for a missing or mismatched weight file.
    Input: uint8 or [0, 1] float RGB (B, 3, H, W); the normalisation (the backbone's pretrained_cfg
    mean/std) lives in the model. ``cache_dir``: where the timm-named copy of the weights is kept
    (core.models.weights.weight_file; default $SEGSTUDIO_CACHE or ~/.cache/segstudio).
    """

    def __init__(self, num_classes: int, backbone: str = "efficientnet_lite0", output_stride: int = 16,
                 head: str = "deeplabv3plus", weights: str | None = "imagenet", freeze: str = "backbone",
                 cache_dir: str | None = None):
        super().__init__()
        import timm

        if output_stride not in (8, 16):
            raise ValueError("output_stride must be 8 or 16")
        if head not in HEADS:
            raise ValueError(f"unknown head {head!r} (choose from {', '.join(HEADS)})")
        self.backbone_name, self.head_name, self.output_stride = backbone, head, output_stride
        probe = timm.create_model(backbone, features_only=True, pretrained=False)
        reductions = probe.feature_info.reduction()
        del probe
        out_indices = (len(reductions) - 1,)
        if HEADS[head].low_level:
            if 4 not in reductions:
                raise ValueError(f"backbone {backbone} has no stride-4 feature for the {head} head")
            out_indices = (reductions.index(4), len(reductions) - 1)
        kw = dict(features_only=True, out_indices=out_indices, output_stride=output_stride)
        if weights is None:
            self.backbone = timm.create_model(backbone, pretrained=False, **kw)
        else:   # timm's own loading, from a local file (core.models.weights); nothing is downloaded
            from core.models.weights import WeightsError, check_covers, weight_file

            file = weight_file(backbone, None if weights == "imagenet" else weights, cache_dir)
            try:
                self.backbone = timm.create_model(backbone, pretrained=True,
                                                  pretrained_cfg_overlay=dict(file=str(file)), **kw)
            except RuntimeError as e:   # shape mismatch while loading
                raise WeightsError(f"weight file does not fit backbone {backbone}: "
                                   f"{str(e).splitlines()[-1].strip()}") from None
            check_covers(self.backbone, file, backbone)
        self.head = HEADS[head](self.backbone.feature_info.channels(), num_classes, output_stride)
        self.num_classes = num_classes
        self.feat_channels = self.head.feat_channels
        cfg = getattr(self.backbone, "pretrained_cfg", None) or {}   # the statistics the weights were trained with
        self.register_buffer("mean", torch.tensor(cfg.get("mean", IMAGENET_MEAN)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.get("std", IMAGENET_STD)).view(1, 3, 1, 1), persistent=False)
        self.frozen = "none"
        self.freeze(freeze)

    def _bn_layers(self, scope: str):
        roots = {"none": [], "backbone": [self.backbone]}.get(scope, [self.backbone, self.head])
        return [m for r in roots for m in r.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def freeze(self, scope: str = "backbone") -> None:
        """Set what does not train (``FREEZE_SCOPES``): frozen parameters get no gradient, frozen
        BatchNorm stays in eval mode through ``train()``; everything else trains. Replaces the previous
        scope. Raises ValueError for an unknown scope."""
        if scope not in FREEZE_SCOPES:
            raise ValueError(f"freeze scope must be one of {', '.join(FREEZE_SCOPES)}, got {scope!r}")
        frozen = {id(p) for m in self._bn_layers(scope) for p in m.parameters()}
        if scope == "classifier":
            classifier = getattr(self.head, "classifier", self.head)   # deeplabv2: the head is the classifier
            keep = {id(p) for p in classifier.parameters()}
            frozen = {id(p) for p in self.parameters() if id(p) not in keep}
        for p in self.parameters():
            p.requires_grad_(id(p) not in frozen)
        self.frozen = scope
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self._bn_layers(self.frozen):
            m.eval()
        return self

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] float RGB (B,3,H,W) -> normalised float."""
        if img.dtype == torch.uint8:
            img = img.float().div_(255)
        return (img - self.mean) / self.std

    def forward(self, img: torch.Tensor) -> SegOut:
        logits, feat = self.head(self.backbone(self.normalize(img)))
        return SegOut(logits, feat)

    def param_groups(self, lr: float):
        """The papers' split: backbone at lr, head (and anything added later) at 10x lr."""
        bb = list(self.backbone.parameters())
        ids = {id(p) for p in bb}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [dict(params=bb, lr=lr, base_lr=lr), dict(params=rest, lr=10 * lr, base_lr=10 * lr)]
