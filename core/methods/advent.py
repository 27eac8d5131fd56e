"""ADVENT (Vu et al., CVPR 2019; official code: valeoai/ADVENT): entropy-map adversarial alignment.

The discriminator (FCDiscriminator, core/methods/adversarial.py) sees the weighted self-information map
``I = -p log2 p / log2 C`` of the softmax upsampled to the *input image* size of each domain (the same
for both; target labels may be stored at a larger size, which would give D a scale cue).
Domain labels: source 0, target 1. The input must be at least 32 pixels high and wide.

* generator (``target_loss``, D frozen): ``lambda_adv * BCE(D(I_t), 0)`` -- target maps must look
  like source maps;
* discriminator (``adversary_step``, detached maps, so the segmentor gets no gradient):
  ``0.5 * BCE(D(I_s), 0) + 0.5 * BCE(D(I_t), 1)``; Adam 1e-4, betas (0.9, 0.99), poly decay.

Defaults are the paper's (lambda_adv 1e-3 main output; this segmentor has no auxiliary output, so
the 2e-4 auxiliary term does not apply). Override with ``AdvEnt(lambda_adv=...)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.methods.adversarial import DiscriminatorMixin, FCDiscriminator, entropy_map
from core.methods.base import Method
from core.models.segmentor import upsample

SOURCE, TARGET = 0.0, 1.0


def _bce(d: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(d.float(), torch.full_like(d.float(), label))


class AdvEnt(DiscriminatorMixin, Method):
    name = "advent"
    summary = "adversarial alignment of entropy maps (Vu et al., CVPR 2019)"
    exclusive = frozenset({"generator_adversary"})

    def __init__(self, lambda_adv: float = 1e-3, lr_d: float = 1e-4, betas=(0.9, 0.99), ndf: int = 64):
        self.lambda_adv, self.lr_d, self.betas, self.ndf = lambda_adv, lr_d, tuple(betas), ndf

    def setup(self, ctx):
        self.build_discriminator(ctx, FCDiscriminator(ctx.model.num_classes, self.ndf))

    def target_loss(self, ctx, batch, out):
        d = self.frozen_d()(entropy_map(upsample(out.logits, batch["image"].shape[-2:])))
        return {"adv_t": self.lambda_adv * _bce(d, SOURCE)}

    def adversary_step(self, ctx, batch_s, batch_t, out_s, out_t):
        if out_t is None:
            return {}
        i_s = entropy_map(upsample(out_s.logits.detach().float(), batch_s["image"].shape[-2:]))
        i_t = entropy_map(upsample(out_t.logits.detach().float(), batch_t["image"].shape[-2:]))
        return {"d_adv": self.d_update(ctx, lambda D: 0.5 * _bce(D(i_s), SOURCE) + 0.5 * _bce(D(i_t), TARGET))}

    def state_dict(self):
        return self.d_state()

    def load_state_dict(self, state):
        self.load_d_state(state)
