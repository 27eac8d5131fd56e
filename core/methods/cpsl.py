"""CPSL, class-balanced pixel-level self-labeling (Li et al., CVPR 2022; reference: lslrh/CPSL, a ProDA
fork), stage 1, in the one loop; its distillation stages are the ``kd`` stage (core/methods/distill.py,
``"cpsl>kd"``).

Per iteration (f: the segmentor's decoder feature ``SegOut.feat``, D channels; mu: (C, D) learnable
prototypes, mu_ema their EMA; the teacher is the shared EMA teacher, alpha 0.999):

1. **Prototype rectification** (``refine_pseudo_labels``): ``w = softmax(cos(f_ema, mu_ema) / tau)``,
   ``y^ = argmax(w * P^_t)`` with P^_t the teacher's softmax (the reference reads it from an offline
   cache of the warm-up model; here the online teacher, DAFormer-style); active labels override.
2. **Student on the target**: ``L_cts = 0.1 * CE + 1.0 * RCE`` (symmetric CE) on y^.
3. **CutMix** (``mix``, probability 0.5): a random source box (side ``sqrt(1 - lam)`` of the image,
   lam ~ U(0, 1)) pasted into the target image and y^; the loop trains CE on it.
4. **Self-labeling**: ``n_sl`` random pixels per image of the *teacher's* normalised features,
   ``logits = f . normalize(mu)^T`` (N, C), prepended with a FIFO ``queue`` of past teacher features;
   **Sinkhorn-Knopp** with ``eps`` 0.05 and 3 iterations whose class marginal is the **target class
   prior** pi (the starting model's predicted pixel distribution over up to ``prior_images`` target
   images) gives soft assignments Q; ``L_sl = -mean sum_c Q_c log softmax(logits / tau)``. Only mu
   gets its gradient (the features are the teacher's).
5. **Prototype consistency**: ``KL(softmax(cos(f_ema, mu_ema)/tau) || softmax(cos(f_student, mu_ema)/tau))``
   with the student's log-probabilities as ``kl_div``'s input.
6. After the step: mu by its own SGD (``AuxParams``), ``mu_ema <- 0.999 mu_ema + 0.001 mu``, teacher EMA.

mu and mu_ema start at the teacher's class-mean source features (``init_images`` source images; the
reference's calc_prototype.py uses target pseudo-labels of the warm-up model). Constants are the
reference's (tau 0.08, eps 0.05, SL weight 0.1, consistency weight 1, rce 0.1/1.0) except the queue
(1024 instead of 65,536, and ``n_sl`` 64 instead of 256 pixels per image: the CPU benchmark's batches
are small). The reference's second Sinkhorn copy on queued logits and its supervised contrastive term
(weight 1e-3) are left out.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.evaluate import predict_logits
from core.methods.base import Method
from core.methods.distill import symmetric_ce
from core.methods.services import IGNORE, AuxParams, class_means, ema_teacher, eval_mode, labels_at
from core.models.segmentor import upsample


@torch.no_grad()
def sinkhorn(logits: torch.Tensor, prior: torch.Tensor, eps: float = 0.05, iters: int = 3) -> torch.Tensor:
    """Sinkhorn-Knopp soft assignment (SwAV; CPSL's class-balanced version): (N, C) scores -> (N, C)
    ``Q``, each row a distribution over classes, with the class marginal ``Q.mean(0)`` driven towards
    ``prior`` (C,) (exact for the rows, approaching the prior as ``iters`` grows)."""
    Q = torch.exp((logits.float() - logits.float().max()) / eps).t()   # (C, N)
    Q = Q / Q.sum()
    C, N = Q.shape
    r = prior.float().to(Q.device) / prior.float().sum()
    for _ in range(iters):
        Q = Q * (r / Q.sum(1).clamp_min(1e-30))[:, None]         # class totals -> prior
        Q = Q / Q.sum(0, keepdim=True).clamp_min(1e-30) / N      # each pixel's column sums to 1/N
    return (Q * N).t()


def proto_logits(feat: torch.Tensor, protos: torch.Tensor, tau: float) -> torch.Tensor:
    """``cos(f, mu) / tau``: (B,D,h,w) features, (C,D) prototypes -> (B,C,h,w)."""
    return torch.einsum("bdhw,cd->bchw", F.normalize(feat.float(), dim=1), F.normalize(protos.float(), dim=1)) / tau


def cutmix_box(h: int, w: int) -> tuple[int, int, int, int]:
    lam = float(torch.rand(()))
    bh, bw = max(1, int(h * (1 - lam) ** 0.5)), max(1, int(w * (1 - lam) ** 0.5))
    y, x = int(torch.randint(h - bh + 1, ())), int(torch.randint(w - bw + 1, ()))
    return y, x, bh, bw


class CPSL(Method):
    name = "cpsl"
    summary = "class-balanced pixel-level self-labeling: Sinkhorn prototypes with the target prior (Li et al., CVPR 2022)"
    exclusive = frozenset({"mix"})
    needs_pseudo_labels = True
    order = 30   # rectify pseudo-labels before trust splits (CRA) and mixing read them

    def __init__(self, tau: float = 0.08, eps: float = 0.05, sinkhorn_iters: int = 3, n_sl: int = 64,
                 queue: int = 1024, lambda_sl: float = 0.1, lambda_pc: float = 1.0, alpha_ce: float = 0.1,
                 beta_rce: float = 1.0, cutmix_p: float = 0.5, alpha: float = 0.999, proto_momentum: float = 0.999,
                 prior_images: int = 16, init_images: int = 8):
        self.tau, self.eps, self.sinkhorn_iters, self.n_sl, self.queue_size = tau, eps, sinkhorn_iters, n_sl, queue
        self.lambda_sl, self.lambda_pc, self.alpha_ce, self.beta_rce = lambda_sl, lambda_pc, alpha_ce, beta_rce
        self.cutmix_p, self.alpha, self.proto_momentum = cutmix_p, alpha, proto_momentum
        self.prior_images, self.init_images = prior_images, init_images

    # ------------------------------------------------------------------ setup: prior and prototypes
    @torch.no_grad()
    def setup(self, ctx):
        model, C = ctx.model, ctx.model.num_classes
        if ctx.target is None:
            raise ValueError("cpsl needs the target images (its class prior and pseudo-labels)")
        self.teacher = ema_teacher(ctx, self.alpha)
        counts = torch.zeros(C)
        sums, seen = torch.zeros(C, model.feat_channels), torch.zeros(C)
        with eval_mode(model):
            for i in range(min(len(ctx.target), self.prior_images)):
                pred = predict_logits(model, ctx.target[i]["image"], window=ctx.cfg.infer_window,
                                      device=ctx.device).argmax(0).cpu()
                counts += torch.bincount(pred.reshape(-1), minlength=C)[:C].float()
            for i in range(min(len(ctx.source), self.init_images)):
                s = ctx.source[i]
                x = torch.from_numpy(s["image"]).permute(2, 0, 1)[None].to(ctx.device)
                feat = model(x).feat.float()
                y = labels_at(torch.from_numpy(s["label"].astype("int64"))[None].to(ctx.device), feat.shape[-2:])
                means, present = class_means(feat, y, C)
                sums += means.cpu() * present.cpu()[:, None]
                seen += present.cpu().float()
        self.prior = ((counts + 1) / (counts + 1).sum()).to(ctx.device)
        init = torch.where(seen[:, None] > 0, sums / seen.clamp(min=1)[:, None], torch.randn(C, model.feat_channels))
        self.mu = nn.Parameter(init.to(ctx.device))
        self.aux = AuxParams(ctx, [self.mu], lr_mult=5.0)   # the reference: prototypes at 5x (rank 0's under torchrun)
        self.mu_ema = self.mu.detach().clone()
        self.queue = torch.zeros(0, model.feat_channels, device=ctx.device)

    # ------------------------------------------------------------------ hooks
    def refine_pseudo_labels(self, ctx, batch_t, pl):
        w = proto_logits(pl.feat, self.mu_ema, self.tau).softmax(1)
        w = upsample(w, pl.label.shape[-2:])
        rect = (w * pl.prob).argmax(1)
        pl.label = torch.where(pl.active, pl.active_label, rect)
        return pl

    def mix(self, ctx, batch_s, batch_t):
        pl = batch_t["pseudo"]
        img_t, img_s = batch_t["image"], batch_s["image"]
        if img_t.shape[-2:] != img_s.shape[-2:] or float(torch.rand(())) >= self.cutmix_p:
            return None
        label = labels_at(pl.label, img_t.shape[-2:]).clone()
        img = img_t.clone()
        y_s = labels_at(batch_s["label"], img_t.shape[-2:])
        for b in range(img.shape[0]):
            y, x, bh, bw = cutmix_box(*img.shape[-2:])
            img[b, :, y:y + bh, x:x + bw] = img_s[b, :, y:y + bh, x:x + bw]
            label[b, y:y + bh, x:x + bw] = y_s[b, y:y + bh, x:x + bw]
        return {"image": img, "label": label, "weight": (label != IGNORE).float()}

    def target_loss(self, ctx, batch, out):
        pl = batch["pseudo"]
        logits = upsample(out.logits, pl.label.shape[-2:]).float()
        label = torch.where(pl.active, torch.full_like(pl.label, IGNORE), pl.label)   # active: the loop's ce_t
        terms = {"cts_t": symmetric_ce(logits, label, self.alpha_ce, self.beta_rce)}
        # self-labeling: gradients reach mu only
        f = F.normalize(pl.feat.float(), dim=1)
        B, D = f.shape[:2]
        flat = f.permute(0, 2, 3, 1).reshape(B, -1, D)
        pick = torch.stack([torch.randperm(flat.shape[1], device=f.device)[: self.n_sl] for _ in range(B)])
        feats = torch.cat([flat[b, pick[b]] for b in range(B)])                       # (N, D)
        self._new = feats
        sl_logits = feats @ F.normalize(self.mu, dim=1).t()                              # (N, C)
        q = sinkhorn(torch.cat([self.queue @ F.normalize(self.mu, dim=1).t(), sl_logits]).detach(),
                     self.prior, self.eps, self.sinkhorn_iters)[len(self.queue):]
        terms["sl_t"] = self.lambda_sl * -(q * F.log_softmax(sl_logits / self.tau, 1)).sum(1).mean()
        # prototype consistency: teacher (log-)distribution vs the student's
        p_t = proto_logits(pl.feat, self.mu_ema, self.tau).softmax(1)
        log_p_s = proto_logits(out.feat, self.mu_ema, self.tau).log_softmax(1)
        terms["pc_t"] = self.lambda_pc * F.kl_div(log_p_s, p_t, reduction="none").sum(1).mean()
        return terms

    def after_step(self, ctx):
        self.aux.step(ctx)
        with torch.no_grad():
            m = self.proto_momentum
            self.mu_ema.mul_(m).add_((1 - m) * self.mu.detach())
            if getattr(self, "_new", None) is not None:
                self.queue = torch.cat([self.queue, self._new.detach()])[-self.queue_size:]
        self.teacher.update(ctx.model, ctx.iteration)

    def state_dict(self):
        return {"mu": self.mu.detach().cpu(), "mu_ema": self.mu_ema.cpu(), "queue": self.queue.cpu(),
                "prior": self.prior.cpu(), "aux": self.aux.state_dict(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state):
        if "mu" in state:
            with torch.no_grad():
                self.mu.copy_(state["mu"])
            self.mu_ema = state["mu_ema"].to(self.mu.device)
            self.queue = state["queue"].to(self.mu.device)
            self.prior = state["prior"].to(self.mu.device)
            self.aux.load_state_dict(state["aux"])
            self.teacher.load_state_dict(state["teacher"])
