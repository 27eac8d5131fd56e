"""BiDA, bi-directional pixel-prototype contrastive adaptation ("DASS", Lee et al., ECCV 2022),
implemented from the paper (the reference code, cvlab-yonsei/DASS, is GPL-3.0 and was not copied).

f: the segmentor's decoder feature ``SegOut.feat`` (the reference concatenates DeepLabV2's four ASPP
branch outputs); prototypes are masked class means of f at the feature size.

* **Static pseudo-labels** (``refine_pseudo_labels``): the labeller is the shared teacher (a frozen
  copy of the round's starting model unless another method made an EMA teacher: the paper regenerates
  its labels at the start of each round, and an active round is one). A pixel keeps its predicted
  class c if its confidence is above c's threshold (the confidence at the top ``cb_prop`` = 10 % of
  c's pixels over up to ``pool_images`` target images, measured once in ``setup``) or in its image's
  own top 10 % (OR-ed in, as the reference).
* **Dynamic (calibrated) pseudo-labels** and the **hybrid**: moving-average prototypes per domain
  (momentum 0.99), mu_s from source labels and mu_t from the static target labels; the source
  prototypes are shifted toward the target by the class-wise domain bias,
  ``mu_cal = mu_s + gamma * (mu_t - mu_s)`` with gamma ramping linearly from 0 to 1 over the fit (the
  paper's "gradually"; the exact schedule is not stated); each pixel's dynamic label is its most
  similar calibrated prototype (``softmax(10 cos)``), and it fills the pixels the static labels
  ignore where that probability exceeds 0.8.
* **Losses** (weights of the paper and reference: lambda_t 0.3, lambda_ent 0.4, lambda_fwd = lambda_bwd
  = 0.1): ``0.3 * CE(z_t, y^_t) + 0.4 * (H_s + 0.3 * H_t) + 0.1 * L_fwd + 0.1 * L_bwd`` where
  ``L_fwd = CE(10 * cos(c^s, f_t), y^_t)`` (target pixels against the batch's source prototypes),
  ``L_bwd = CE(10 * cos(c^t, f_s), y_s)`` (source pixels against the target prototypes), both over the
  classes present in both domains' batch (similarity -1 to an absent prototype), and
  ``H = mean_pixels -sum_c p_c log p_c`` with one softmax (the reference applies softmax twice).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from core.evaluate import predict_logits
from core.methods.base import Method
from core.methods.services import IGNORE, class_means, ema_teacher, eval_mode, labels_at
from core.models.segmentor import upsample


def class_thresholds(confidences: list[np.ndarray], preds: list[np.ndarray], num_classes: int,
                     prop: float = 0.1) -> np.ndarray:
    """Per class, the confidence at the top ``prop`` of the pixels predicted as that class (the
    reference's class-balanced thresholds); 1.0 (never kept) for a class never predicted."""
    conf, pred = np.concatenate([c.ravel() for c in confidences]), np.concatenate([p.ravel() for p in preds])
    thr = np.ones(num_classes, np.float32)
    for c in range(num_classes):
        v = conf[pred == c]
        if len(v):
            thr[c] = np.sort(v)[::-1][max(0, int(np.ceil(len(v) * prop)) - 1)]
    return thr


def proto_scores(feat: torch.Tensor, protos: torch.Tensor, present: torch.Tensor, scale: float = 10.0):
    """``scale * cos(prototype_c, f)``: (B,D,h,w), (C,D), (C,) bool -> (B,C,h,w); absent classes get
    ``scale * -1`` (the lowest similarity)."""
    s = torch.einsum("bdhw,cd->bchw", F.normalize(feat.float(), dim=1), F.normalize(protos.float(), dim=1))
    s = torch.where(present[None, :, None, None], s, torch.full_like(s, -1.0))
    return scale * s


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of ``-sum_c p_c log p_c``, p = softmax(logits) (once)."""
    return -(logits.float().softmax(1) * logits.float().log_softmax(1)).sum(1).mean()


class BiDA(Method):
    name = "bida"
    summary = "bi-directional pixel-prototype contrast with calibrated dynamic pseudo-labels (Lee et al., ECCV 2022)"
    needs_pseudo_labels = True
    order = 60   # set up after DACS/T2S (an EMA teacher of theirs is used as it is), refine before CRA (80)

    def __init__(self, lambda_t: float = 0.3, lambda_ent: float = 0.4, lambda_ent_t: float = 0.3,
                 lambda_fwd: float = 0.1, lambda_bwd: float = 0.1, scale: float = 10.0, cb_prop: float = 0.1,
                 image_prop: float = 0.1, dynamic_threshold: float = 0.8, proto_momentum: float = 0.99,
                 pool_images: int = 32):
        self.lambda_t, self.lambda_ent, self.lambda_ent_t = lambda_t, lambda_ent, lambda_ent_t
        self.lambda_fwd, self.lambda_bwd, self.scale = lambda_fwd, lambda_bwd, scale
        self.cb_prop, self.image_prop, self.dynamic_threshold = cb_prop, image_prop, dynamic_threshold
        self.proto_momentum, self.pool_images = proto_momentum, pool_images

    @torch.no_grad()
    def setup(self, ctx):
        if ctx.target is None:
            raise ValueError("bida needs the target images (its pseudo-labels)")
        C, D = ctx.model.num_classes, ctx.model.feat_channels
        self.teacher = ema_teacher(ctx, alpha=1.0, ramp=False)   # the round's starting model, or the fit's EMA
        confs, preds = [], []
        with eval_mode(ctx.model):
            for i in range(min(len(ctx.target), self.pool_images)):
                p = predict_logits(ctx.model, ctx.target[i]["image"], window=ctx.cfg.infer_window,
                                   device=ctx.device).softmax(0)
                c, k = p.max(0)
                confs.append(c[::2, ::2].cpu().numpy())
                preds.append(k[::2, ::2].cpu().numpy())
        self.thresholds = torch.as_tensor(class_thresholds(confs, preds, C, self.cb_prop), device=ctx.device)
        self.mu_s = torch.zeros(C, D, device=ctx.device)
        self.mu_t = torch.zeros(C, D, device=ctx.device)
        self.seen_s = torch.zeros(C, dtype=torch.bool, device=ctx.device)
        self.seen_t = torch.zeros(C, dtype=torch.bool, device=ctx.device)

    def gamma(self, ctx) -> float:
        return min(1.0, ctx.iteration / max(1, ctx.cfg.iterations - 1))

    def static_labels(self, pl) -> torch.Tensor:
        conf, pred = pl.confidence, pl.prob.argmax(1)
        keep = conf >= self.thresholds[pred]
        flat = conf.reshape(conf.shape[0], -1)
        k = max(1, int(flat.shape[1] * self.image_prop))
        top = conf >= flat.topk(k, 1).values[:, -1][:, None, None]
        return torch.where(keep | top, pred, torch.full_like(pred, IGNORE))

    def _update(self, protos, seen, means, present):
        m = self.proto_momentum
        upd = present & seen
        protos[upd] = m * protos[upd] + (1 - m) * means[upd]
        new = present & ~seen
        protos[new] = means[new]
        seen |= present

    def refine_pseudo_labels(self, ctx, batch_t, pl):
        C = ctx.model.num_classes
        static = self.static_labels(pl)
        feat = pl.feat
        with torch.no_grad():
            y_t = labels_at(static, feat.shape[-2:])
            means, present = class_means(feat, y_t, C)
            self._update(self.mu_t, self.seen_t, means, present)
            mu_cal = self.mu_s + self.gamma(ctx) * (self.mu_t - self.mu_s)
            dyn = upsample(proto_scores(feat, mu_cal, self.seen_s, self.scale), static.shape[-2:]).softmax(1)
            d_conf, d_label = dyn.max(1)
            fill = (static == IGNORE) & (d_conf > self.dynamic_threshold) & self.seen_s[d_label]
        label = torch.where(fill, d_label, static)
        pl.label = torch.where(pl.active, pl.active_label, label)
        return pl

    def source_loss(self, ctx, batch, out):
        C = ctx.model.num_classes
        with torch.no_grad():
            y = labels_at(batch["label"], out.feat.shape[-2:])
            means, present = class_means(out.feat.detach().float(), y, C)
            self._update(self.mu_s, self.seen_s, means, present)
        self._src = (out, y)
        return {"ent_s": self.lambda_ent * entropy(out.logits)}

    def target_loss(self, ctx, batch, out):
        C = ctx.model.num_classes
        pl = batch["pseudo"]
        out_s, y_s = self._src
        c_s, present_s = class_means(out_s.feat.float(), y_s, C)   # source prototypes of this batch
        logits_t = upsample(out.logits, pl.label.shape[-2:]).float()
        st = torch.where(pl.active, torch.full_like(pl.label, IGNORE), pl.label)
        terms = {"st_t": self.lambda_t * (F.cross_entropy(logits_t, st, ignore_index=IGNORE) if bool((st != IGNORE).any())
                                          else logits_t.sum() * 0),
                 "ent_t": self.lambda_ent * self.lambda_ent_t * entropy(out.logits)}
        y_t = labels_at(pl.label, out.feat.shape[-2:])
        c_t, present_t = class_means(out.feat.float(), y_t, C)   # target prototypes of this batch
        both = present_s & present_t
        keep = lambda y: torch.where(both[y.clamp(max=C - 1)] & (y != IGNORE), y, torch.full_like(y, IGNORE))  # noqa: E731
        if bool(both.any()):
            fwd = proto_scores(out.feat, c_s, present_s, self.scale)      # target -> source prototypes
            bwd = proto_scores(out_s.feat, c_t, present_t, self.scale)             # source -> target prototypes
            terms["fwd_t"] = self.lambda_fwd * F.cross_entropy(fwd, keep(y_t), ignore_index=IGNORE)
            terms["bwd_s"] = self.lambda_bwd * F.cross_entropy(bwd, keep(y_s), ignore_index=IGNORE)
        return terms

    def after_step(self, ctx):
        self.teacher.update(ctx.model, ctx.iteration)

    def state_dict(self):
        return {"mu_s": self.mu_s.cpu(), "mu_t": self.mu_t.cpu(), "seen_s": self.seen_s.cpu(),
                "seen_t": self.seen_t.cpu(), "thresholds": self.thresholds.cpu()}

    def load_state_dict(self, state):
        if "mu_s" in state:
            dev = self.mu_s.device
            self.mu_s, self.mu_t = state["mu_s"].to(dev), state["mu_t"].to(dev)
            self.seen_s, self.seen_t = state["seen_s"].to(dev), state["seen_t"].to(dev)
            self.thresholds = state["thresholds"].to(dev)
