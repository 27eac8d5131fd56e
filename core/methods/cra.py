"""CRA (Cross-Region Adaptation, Wang et al., CVIU 2023; official code: zhijiew/CRA): split target
pixels into trusted and untrusted regions by entropy, self-train on the trusted ones and align the
untrusted ones to the trusted ones with FADA's fine-grained discriminator.

Trust rule (reused from core.acquisition.confidence, the CRA trust-map helpers): per pixel
``E = mean_c(-p_c log2 p_c) / log2 C`` of the pseudo-label softmax; classes whose predicted-pixel share
is < 1% (rare) have their E halved on the pixels predicted as them (equivalently, their threshold is
doubled); trusted = ``E <= 0.01``. Active-labelled pixels are always trusted with their label.

* ``refine_pseudo_labels``: sets ``pl.trusted`` and ``pl.label = 255`` on untrusted pixels (so a
  composed mixer, e.g. DACS, also trains on trusted pixels only).
* ``target_loss``: ``lambda_st * CE(z/T, y_pl on trusted, non-active pixels)`` (T = 1.8; active
  pixels are already in the loop's ``ce_t``) + generator term ``lambda_adv * SoftCE(D(f), [a, 0])``
  averaged over the untrusted pixels, D frozen; ``a = clip(softmax(z/T), 0.9)``.
* ``adversary_step``: ``0.5 * SoftCE(D(f), [a, 0])`` on trusted + ``0.5 * SoftCE(D(f), [0, a])`` on
  untrusted pixels of the same (detached) target features.

Two uses:
* **method** (``cra``, online): pseudo-labels from the fit's EMA teacher when another method made
  one, else from the student's own detached prediction; the rare-class shares accumulate over the
  run (``ClassEntropyStats``).
* **stage** (``stage()``, or ``'a>cra'`` in a spec; after any method): the paper's offline pass --
  one sweep of the adapted ("CDA") model over the target pool fixes the rare classes, and a frozen
  copy of that model (an EMATeacher with alpha 1) gives the pseudo-labels and entropies, like the
  paper's cached maps; then ``stage_iterations`` of training through the one loop. Deviation: the
  loop keeps the source CE during the stage (the paper trains on target only), which keeps the
  small benchmark from drifting; the paper's self-distillation stage is not part of CRA here.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.evaluate import predict_logits
from core.acquisition.confidence import (CRA_ENT_THRESH, CRA_RARE_FACTOR, CRA_RARE_PCT, ClassEntropyStats,
                                         cra_trust_mask)
from core.methods.adversarial import (DiscriminatorMixin, PixelDiscriminator, domain_targets, feat_channels,
                                      soft_ce, soft_labels)
from core.methods.base import Method, StagePlan
from core.methods.services import IGNORE, ema_teacher, eval_mode
from core.models.segmentor import upsample


def trust_masks(prob: torch.Tensor, class_thresholds) -> torch.Tensor:
    """(B,C,H,W) softmax -> (B,H,W) bool trusted, by core.acquisition's CRA rule."""
    p = prob.detach().float().cpu().numpy()
    t = np.stack([cra_trust_mask(pi, class_thresholds) for pi in p])
    return torch.from_numpy(t).to(prob.device)


class CRA(DiscriminatorMixin, Method):
    name = "cra"
    summary = "cross-region adaptation: trusted/untrusted target regions (Wang et al., CVIU 2023)"
    exclusive = frozenset({"generator_adversary"})
    needs_pseudo_labels = True
    order = 80   # split the pseudo-labels after other refiners (IA), before mixing (DACS) uses them

    def __init__(self, ent_thresh: float = CRA_ENT_THRESH, rare_pct: float = CRA_RARE_PCT,
                 rare_factor: float = CRA_RARE_FACTOR, T: float = 1.8, clip: float = 0.9,
                 lambda_adv: float = 1e-3, lambda_st: float = 1.0, lr_d: float = 1e-4, betas=(0.9, 0.99),
                 class_thresholds=None, frozen_labeller: bool = False, stage_iterations: int | None = None,
                 stage_max_images: int | None = None):
        self.ent_thresh, self.rare_pct, self.rare_factor = ent_thresh, rare_pct, rare_factor
        self.T, self.clip, self.lambda_adv, self.lambda_st = T, clip, lambda_adv, lambda_st
        self.lr_d, self.betas = lr_d, tuple(betas)
        self.class_thresholds = None if class_thresholds is None else np.asarray(class_thresholds, np.float64)
        self.frozen_labeller = frozen_labeller
        self.stage_iterations, self.stage_max_images = stage_iterations, stage_max_images
        self.stats: ClassEntropyStats | None = None

    def _kwargs(self) -> dict:
        return dict(ent_thresh=self.ent_thresh, rare_pct=self.rare_pct, rare_factor=self.rare_factor, T=self.T,
                    clip=self.clip, lambda_adv=self.lambda_adv, lambda_st=self.lambda_st, lr_d=self.lr_d,
                    betas=self.betas)

    def setup(self, ctx):
        C = ctx.model.num_classes
        self.stats = ClassEntropyStats(C, self.ent_thresh, self.rare_pct, self.rare_factor)
        self.build_discriminator(ctx, PixelDiscriminator(feat_channels(ctx.model), C))
        self.labeller = ema_teacher(ctx, alpha=1.0, ramp=False) if self.frozen_labeller else None
        # ^ a frozen copy of the starting (CDA) model: the stage's "offline" pseudo-labels

    def thresholds(self) -> np.ndarray:
        return self.class_thresholds if self.class_thresholds is not None else self.stats.class_thresholds()

    def refine_pseudo_labels(self, ctx, batch_t, pl):
        if self.class_thresholds is None:
            for p in pl.prob.detach().float().cpu().numpy():
                self.stats.update(p)
        trusted = trust_masks(pl.prob, self.thresholds()) | pl.active
        pl.trusted = trusted
        pl.label = torch.where(trusted, pl.label, torch.full_like(pl.label, IGNORE))
        return pl

    def target_loss(self, ctx, batch, out):
        pl = batch["pseudo"]
        size = batch["label"].shape[-2:]
        logits = upsample(out.logits, size).float()
        st_label = torch.where(pl.active, torch.full_like(pl.label, IGNORE), pl.label)
        if (st_label != IGNORE).any():
            st = F.cross_entropy(logits / self.T, st_label, ignore_index=IGNORE)
        else:
            st = logits.sum() * 0
        a = soft_labels(logits, self.T, self.clip)
        d = upsample(self.frozen_d()(out.feat), size)
        adv = soft_ce(d, domain_targets(a, source=True), ~pl.trusted)
        return {"st_t": self.lambda_st * st, "adv_t": self.lambda_adv * adv}

    def adversary_step(self, ctx, batch_s, batch_t, out_s, out_t):
        if out_t is None or "pseudo" not in batch_t:
            return {}
        pl = batch_t["pseudo"]
        size = batch_t["label"].shape[-2:]
        a = soft_labels(upsample(out_t.logits.detach().float(), size), self.T, self.clip)
        f = out_t.feat.detach().float()

        def loss(D):
            d = upsample(D(f), size)
            return (0.5 * soft_ce(d, domain_targets(a, source=True), pl.trusted)
                    + 0.5 * soft_ce(d, domain_targets(a, source=False), ~pl.trusted))
        return {"d_adv": self.d_update(ctx, loss)}

    def state_dict(self):
        s = self.d_state()
        if self.stats is not None:
            s["stats_counts"] = torch.from_numpy(self.stats.counts.copy())
            s["stats_ent"] = torch.from_numpy(self.stats.ent_sums.copy())
        if getattr(self, "labeller", None) is not None:
            s["labeller"] = self.labeller.state_dict()
        return s

    def load_state_dict(self, state):
        self.load_d_state(state)
        if "stats_counts" in state and self.stats is not None:
            self.stats.counts = state["stats_counts"].numpy().astype(np.int64)
            self.stats.ent_sums = state["stats_ent"].numpy().astype(np.float64)
        if "labeller" in state and getattr(self, "labeller", None) is not None:
            self.labeller.load_state_dict(state["labeller"])

    # ------------------------------------------------------------------ post-hoc stage
    @torch.no_grad()
    def pool_thresholds(self, model, target, window, device, max_images=None) -> np.ndarray:
        """One sweep of ``model`` over the target pool -> per-class thresholds (rare classes doubled)."""
        stats = ClassEntropyStats(model.num_classes, self.ent_thresh, self.rare_pct, self.rare_factor)
        n = len(target) if max_images is None else min(len(target), max_images)
        with eval_mode(model):
            for i in range(n):
                logits = predict_logits(model, target[i]["image"], window=window, device=device)
                stats.update(logits.float().softmax(0).cpu().numpy())
        return stats.class_thresholds()

    def plan_stage(self, model, source, target, cfg, device):
        """Thresholds from one sweep over the target pool, then CRA with a frozen labeller."""
        thr = self.pool_thresholds(model, target, cfg.infer_window, device, self.stage_max_images)
        inner = CRA(**self._kwargs(), class_thresholds=thr, frozen_labeller=True)
        return StagePlan(methods=[inner], iterations=self.stage_iterations, desc="cra stage",
                         result={"cra_thresholds": thr, "cra_rare": thr > self.ent_thresh})
