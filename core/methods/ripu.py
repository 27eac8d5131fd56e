"""RIPU's own losses (CVPR 2022), as the official code defines them (official code: BIT-DA/RIPU, train.py).

- ``L_cr^s`` (weight 0.1, source): at semantic-boundary pixels of the source label (label Laplacian
  != 0 with zero padding, label != 255), the L1 distance between a pixel's softmax and the 3x3 mean
  of softmaxes (replicate padding), summed over classes, averaged over those pixels.
- ``L_nl^t`` (weight 1.0, target, every pixel): negative learning on classes with p < tau (0.05):
  -sum 1[p<tau] log(1 - p + 1e-6) / sum 1[p<tau]; the mask is detached.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.methods.base import Method


def boundary_mask(label: torch.Tensor) -> torch.Tensor:
    """(B,H,W) int labels -> bool mask of pixels whose 8-neighbour Laplacian is non-zero (zero padding)."""
    y = label.float().unsqueeze(1)
    k = torch.full((1, 1, 3, 3), -1.0, device=y.device)
    k[0, 0, 1, 1] = 8.0
    lap = F.conv2d(y, k, padding=1).squeeze(1)
    return (lap != 0) & (label != 255)


def local_consistency_loss(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """``L_cr^s``; logits (B,C,H,W) at the label size."""
    p = logits.softmax(1)
    mean = F.avg_pool2d(F.pad(p, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    d = (p - mean).abs().sum(1)
    m = boundary_mask(label)
    if not m.any():
        return logits.sum() * 0
    return d[m].mean()


def negative_learning_loss(logits: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
    """``L_nl^t`` over all pixels and classes."""
    p = logits.softmax(1)
    mask = (p < tau).detach().float()
    return -(mask * torch.log(1 - p + 1e-6)).sum() / mask.sum().clamp_min(1)


class RIPULosses(Method):
    name = "ripu"
    summary = "RIPU's own losses: source boundary consistency + target negative learning (Xie et al., CVPR 2022)"

    def __init__(self, w_cr: float = 0.1, w_nl: float = 1.0, tau: float = 0.05):
        self.w_cr, self.w_nl, self.tau = w_cr, w_nl, tau

    def source_loss(self, ctx, batch, out):
        return {"cr_s": self.w_cr * local_consistency_loss(ctx.upsample(out.logits, batch["label"]), batch["label"])}

    def target_loss(self, ctx, batch, out):
        return {"nl_t": self.w_nl * negative_learning_loss(ctx.upsample(out.logits, batch["label"]), self.tau)}
