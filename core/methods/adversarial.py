"""Discriminators and helpers shared by the adversarial methods (ADVENT, FADA, CRA).

* ``FCDiscriminator`` (AdaptSegNet/ADVENT): 4 x [conv4x4 s2 (ndf, 2ndf, 4ndf, 8ndf) + LeakyReLU 0.2],
  then conv4x4 s2 -> 1 channel. Input (B,C,H,W) maps; output (B,1,~H/32,~W/32) logits.
* ``PixelDiscriminator`` (FADA fine-grained): conv3x3 D->256, LReLU; conv3x3 256->128, LReLU; two
  conv3x3 heads 128->C (source, target), concatenated to 2C logits.
* ``DiscriminatorMixin``: owns the discriminator and its Adam optimiser (lr 1e-4, betas (0.9, 0.99),
  poly-decayed like the segmentor), freezes it for the generator step (``frozen_d``) and updates it
  on detached inputs only (``d_update``); its state (weights + optimiser) goes into the method's
  ``state_dict`` and so into the training checkpoint. Under DDP the initial weights are broadcast
  from rank 0 and its gradients are averaged over ranks.

(DESIGN.md places discriminators under core/models; they live here until that room exists.)
"""
from __future__ import annotations

import torch
import torch.nn as nn

from core.methods.services import allreduce_grads, broadcast_module, eval_mode, set_requires_grad


class FCDiscriminator(nn.Module):
    def __init__(self, in_ch: int, ndf: int = 64):
        super().__init__()
        chans = [in_ch, ndf, ndf * 2, ndf * 4, ndf * 8]
        layers = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
        layers.append(nn.Conv2d(chans[-1], 1, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


class PixelDiscriminator(nn.Module):
    def __init__(self, in_ch: int, num_classes: int, mid: tuple[int, int] = (256, 128)):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_ch, mid[0], 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(mid[0], mid[1], 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.src = nn.Conv2d(mid[1], num_classes, 3, padding=1)
        self.tgt = nn.Conv2d(mid[1], num_classes, 3, padding=1)

    def forward(self, x):
        h = self.body(x)
        return torch.cat([self.src(h), self.tgt(h)], 1)


def entropy_map(logits: torch.Tensor) -> torch.Tensor:
    """ADVENT's weighted self-information ``I = -p * log2(p) / log2(C)``, (B,C,H,W)."""
    p = logits.float().softmax(1)
    C = p.shape[1]
    return -p * torch.log2(p + 1e-30) / torch.log2(torch.tensor(float(C)))


def soft_labels(logits: torch.Tensor, T: float = 1.8, clip: float = 0.9) -> torch.Tensor:
    """FADA/CRA soft class labels: softmax(z / T) clipped at ``clip`` without renormalising."""
    return (logits.detach().float() / T).softmax(1).clamp(max=clip)


def soft_ce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """mean over pixels (inside ``mask``) of ``-sum_k q_k log softmax(logits)_k``; 0 (in the graph) if empty."""
    per_pixel = -(target * logits.float().log_softmax(1)).sum(1)
    if mask is None:
        return per_pixel.mean()
    if not mask.any():
        return per_pixel.sum() * 0
    return per_pixel[mask].mean()


def domain_targets(a: torch.Tensor, source: bool) -> torch.Tensor:
    """2C-channel soft domain labels: [a, 0] (source) or [0, a] (target)."""
    z = torch.zeros_like(a)
    return torch.cat([a, z], 1) if source else torch.cat([z, a], 1)


def feat_channels(model: nn.Module) -> int:
    """Channels of ``model(x).feat`` (the segmentor's ``feat_channels`` when it has one, else a dry run in
    eval mode)."""
    if hasattr(model, "feat_channels"):
        return int(model.feat_channels)
    with eval_mode(model), torch.no_grad():
        dev = next(model.parameters()).device
        return int(model(torch.zeros(1, 3, 64, 64, device=dev)).feat.shape[1])


class DiscriminatorMixin:
    """Discriminator ownership for a Method (see the module docstring)."""

    lr_d: float = 1e-4
    betas: tuple = (0.9, 0.99)

    def build_discriminator(self, ctx, disc: nn.Module) -> None:
        self.disc = disc.to(ctx.device)
        broadcast_module(self.disc)
        self.opt_d = torch.optim.Adam(self.disc.parameters(), lr=self.lr_d, betas=self.betas)
        set_requires_grad(self.disc, False)

    def frozen_d(self) -> nn.Module:
        """The discriminator for the generator step: parameters frozen (no gradient reaches them)."""
        set_requires_grad(self.disc, False)
        return self.disc

    def d_update(self, ctx, loss_fn) -> float:
        """One discriminator step: ``loss_fn(disc)`` on detached inputs; poly lr like the segmentor."""
        cfg = ctx.cfg
        f = (1 - ctx.iteration / max(cfg.iterations, 1)) ** cfg.poly_power
        for g in self.opt_d.param_groups:
            g["lr"] = self.lr_d * f
        set_requires_grad(self.disc, True)
        with torch.autocast(ctx.device.type, enabled=False):
            loss = loss_fn(self.disc)
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        allreduce_grads(self.disc)
        self.opt_d.step()
        self.opt_d.zero_grad(set_to_none=True)
        set_requires_grad(self.disc, False)
        return float(loss.detach())

    def d_state(self) -> dict:
        return {"disc": self.disc.state_dict(), "opt_d": self.opt_d.state_dict()}

    def load_d_state(self, state: dict) -> None:
        if "disc" in state:
            self.disc.load_state_dict(state["disc"])
            self.opt_d.load_state_dict(state["opt_d"])
