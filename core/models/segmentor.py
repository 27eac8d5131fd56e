"""The segmentor: a timm backbone (``features_only``) + DeepLabV2 ASPP head.

``forward(img) -> SegOut(logits[B,C,h,w], feat[B,D,h,w], extra)``; logits are at the feature
resolution (stride 8 or 16) and are upsampled by the caller to the label size.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class SegOut:
    logits: torch.Tensor
    feat: torch.Tensor
    extra: dict = field(default_factory=dict)


class ASPPSum(nn.Module):
    """DeepLabV2 classifier: the sum of 3x3 convs at several dilations (6/12/18/24 in the papers)."""

    def __init__(self, in_ch: int, num_classes: int, dilations=(6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_ch, num_classes, 3, padding=d, dilation=d) for d in dilations)
        for b in self.branches:
            nn.init.normal_(b.weight, 0, 0.01)
            nn.init.zeros_(b.bias)

    def forward(self, x):
        out = self.branches[0](x)
        for b in self.branches[1:]:
            out = out + b(x)
        return out


def known_backbones() -> list[str]:
    import timm

    return timm.list_models()


class Segmentor(nn.Module):
    def __init__(self, num_classes: int, backbone: str = "efficientnet_lite0", output_stride: int = 8,
                 dilations=(6, 12, 18, 24), weights: str | None = "imagenet"):
        """``weights``: "imagenet" (packaged/--weights file resolved by core.models.weights), a path,
        or None for random initialisation."""
        super().__init__()
        import timm

        if output_stride not in (8, 16):
            raise ValueError("output_stride must be 8 or 16")
        self.backbone_name = backbone
        self.backbone = timm.create_model(backbone, features_only=True, out_indices=(-1,),
                                          output_stride=output_stride, pretrained=False)
        if weights is not None:
            from core.models.weights import load_backbone

            load_backbone(self.backbone, backbone, None if weights == "imagenet" else weights)
        ch = self.backbone.feature_info.channels()[-1]
        self.head = ASPPSum(ch, num_classes, dilations)
        self.num_classes = num_classes
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        """uint8 or [0,1] float RGB (B,3,H,W) -> normalised float."""
        if img.dtype == torch.uint8:
            img = img.float().div_(255)
        return (img - self.mean) / self.std

    def forward(self, img: torch.Tensor) -> SegOut:
        feat = self.backbone(self.normalize(img))[-1]
        return SegOut(self.head(feat), feat)

    def param_groups(self, lr: float):
        """The papers' split: backbone at lr, head (and anything added later) at 10x lr."""
        bb = list(self.backbone.parameters())
        ids = {id(p) for p in bb}
        rest = [p for p in self.parameters() if id(p) not in ids]
        return [dict(params=bb, lr=lr, base_lr=lr), dict(params=rest, lr=10 * lr, base_lr=10 * lr)]
