"""FADA (Wang et al., ECCV 2020; official code: JDAI-CV/FADA): fine-grained (class-aware) adversarial
alignment of segmentor features.

A PixelDiscriminator on ``out.feat`` predicts 2C logits (C "source, class k" + C "target, class k"),
upsampled to the input image size (the same for both domains). Soft class labels
``a = clip(softmax(z / T), 0.9)`` (T = 1.8, clipped without renormalising) come from the detached
logits at that size.

* generator (``target_loss``, D frozen): ``lambda_adv * SoftCE(D(f_t), [a_t, 0])``;
* discriminator (``adversary_step``, detached features):
  ``0.5 * SoftCE(D(f_s), [a_s, 0]) + 0.5 * SoftCE(D(f_t), [0, a_t])``; Adam 1e-4, betas (0.9, 0.99).
* As in the paper the source segmentation CE uses the tempered logits ``z / T``
  (``source_logits``; ``temper_seg=False`` turns that off). The active-label CE on the target uses
  plain logits. Test-time predictions use plain logits (argmax is unchanged by T).

Not here: the paper's self-distillation stage (train a fresh model on the adapted model's hard
pseudo-labels) and its BN freezing, which is the segmentor's default (``Segmentor.freeze``).
The feature tap is the segmentor's ``feat``: with the DeepLabV2 head the last backbone stage (320-d for
efficientnet_lite0, 2048-d for ResNet-101 as in the paper); with the default DeepLabV3+ head the
decoder feature the classifier reads (128-d at stride 4).
"""
from __future__ import annotations

from core.methods.adversarial import (DiscriminatorMixin, PixelDiscriminator, domain_targets, feat_channels,
                                      soft_ce, soft_labels)
from core.methods.base import Method
from core.models.segmentor import upsample


class FADA(DiscriminatorMixin, Method):
    name = "fada"
    summary = "fine-grained class-level adversarial alignment (Wang et al., ECCV 2020)"
    exclusive = frozenset({"generator_adversary"})

    def __init__(self, lambda_adv: float = 1e-3, T: float = 1.8, clip: float = 0.9, lr_d: float = 1e-4,
                 betas=(0.9, 0.99), temper_seg: bool = True):
        self.lambda_adv, self.T, self.clip = lambda_adv, T, clip
        self.lr_d, self.betas, self.temper_seg = lr_d, tuple(betas), temper_seg

    def setup(self, ctx):
        self.build_discriminator(ctx, PixelDiscriminator(feat_channels(ctx.model), ctx.model.num_classes))

    def source_logits(self, ctx, logits):
        return logits / self.T if self.temper_seg else logits

    def target_loss(self, ctx, batch, out):
        size = batch["image"].shape[-2:]
        a_t = soft_labels(upsample(out.logits, size), self.T, self.clip)
        d = upsample(self.frozen_d()(out.feat), size)
        return {"adv_t": self.lambda_adv * soft_ce(d, domain_targets(a_t, source=True))}

    def adversary_step(self, ctx, batch_s, batch_t, out_s, out_t):
        if out_t is None:
            return {}
        ss, st = batch_s["image"].shape[-2:], batch_t["image"].shape[-2:]
        a_s = soft_labels(upsample(out_s.logits.detach().float(), ss), self.T, self.clip)
        a_t = soft_labels(upsample(out_t.logits.detach().float(), st), self.T, self.clip)
        f_s, f_t = out_s.feat.detach().float(), out_t.feat.detach().float()

        def loss(D):
            return (0.5 * soft_ce(upsample(D(f_s), ss), domain_targets(a_s, source=True))
                    + 0.5 * soft_ce(upsample(D(f_t), st), domain_targets(a_t, source=False)))
        return {"d_adv": self.d_update(ctx, loss)}

    def state_dict(self):
        return self.d_state()

    def load_state_dict(self, state):
        self.load_d_state(state)
