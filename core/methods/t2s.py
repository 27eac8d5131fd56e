"""T2S-DA, "Pulling Target to Source" (Wang et al., IJCV 2024, arXiv 2305.13752): contrastive
alignment of pseudo-target source pixels to the teacher's source class prototypes.

Per iteration (no official code exists; the steps are the paper's, the unstated constants U2PL's):

1. **Pseudo-target source** (``transform_source``): ``x~_s = FDA(x_s -> x_t)``: the low-frequency
   amplitude band (frequencies -b..b, ``b = max(1, floor(beta * min(H, W)))``, beta = 0.01 as FDA) of
   the source image's spectrum is replaced by the target image's, the phase of x_s is kept, so the
   labels y_s stay valid. The loop's source CE then trains on x~_s.
2. **Queries**: the student's decoder feature of x~_s (``out_s.feat``) -> projector g (1x1 conv, ReLU,
   1x1 conv to ``proj_dim``) -> L2-normalised q. **Keys**: the EMA teacher on the original x_s -> the
   teacher projector g' (an EMA of g with the teacher's momentum) -> k. The positive of a class-c
   query is the teacher source prototype ``k_c = normalize(mean k[y_s = c])``.
3. **Class-balanced queries**: up to ``queries_per_class`` random pixels of every class present in y_s
   (at the feature size).
4. **Negatives, domain-equalised**: ``negatives`` per query, half source teacher keys of other classes,
   half target teacher keys of *unreliable* pixels (teacher entropy in the top ``unreliable_pct`` %
   of the batch) for which c ranks between ``low_rank`` and ``high_rank`` in the teacher's target
   prediction (c is unlikely there, but not impossible: U2PL's rule). If a class has no such target
   pixel, source negatives fill its share.
5. ``InfoNCE(q) = -log(e^{q.k_c/tau} / (e^{q.k_c/tau} + sum_n e^{q.n/tau}))``, tau = 0.5 (U2PL).
6. **Dynamic class re-weighting**: an EMA (momentum 0.99) of the teacher's mean confidence per
   predicted class on the target; ``w_c = (1 - conf_c) / mean_{c' in batch}(1 - conf_c')`` so less
   confident classes weigh more and the weights of a batch average 1 (the paper states the intent
   only; this normalisation is ours). ``L_t2s = lambda * sum_c w_c mean_{q in c} InfoNCE(q) / n_c``.

Composes with dacs and hrda (it uses the shared EMA teacher; created with alpha 0.99 if no other
method made it). The teacher's target pass is the one the loop already makes for pseudo-labels.
"""
from __future__ import annotations

import copy

import torch
import torch.nn as nn
import torch.nn.functional as F

from core.methods.base import Method
from core.methods.services import IGNORE, AuxParams, ema_teacher, labels_at


def fda(src: torch.Tensor, tgt: torch.Tensor, beta: float = 0.01) -> torch.Tensor:
    """Fourier domain adaptation (Yang & Soatto, CVPR 2020): (B,3,H,W) float source and target images of
    the same size -> source images whose low-frequency amplitudes (frequencies -b..b on both axes,
    ``b = max(1, floor(beta * min(H, W)))``) are the target's; the phase is the source's. Not clamped
    (``fda_images`` clamps)."""
    fs, ft = torch.fft.fft2(src.float()), torch.fft.fft2(tgt.float())
    amp_s, pha_s, amp_t = fs.abs(), fs.angle(), ft.abs()
    H, W = src.shape[-2:]
    b = max(1, int(beta * min(H, W)))
    amp_s = torch.fft.fftshift(amp_s, dim=(-2, -1))
    amp_t = torch.fft.fftshift(amp_t, dim=(-2, -1))
    cy, cx = H // 2, W // 2        # frequency 0 after fftshift; the band -b..b is symmetric, so the
    band = (..., slice(cy - b, cy + b + 1), slice(cx - b, cx + b + 1))   # spectrum stays Hermitian (real image)
    amp_s[band] = amp_t[band]
    amp_s = torch.fft.ifftshift(amp_s, dim=(-2, -1))
    return torch.fft.ifft2(torch.polar(amp_s, pha_s)).real


def fda_images(src: torch.Tensor, tgt: torch.Tensor, beta: float = 0.01) -> torch.Tensor:
    """``fda`` on uint8 or [0,1] float images; the source's dtype and range out (uint8 rounded), so the
    batch mixes with target images as before (DACS ClassMix, CPSL CutMix)."""
    to01 = (lambda x: x.float() / 255 if x.dtype == torch.uint8 else x.float())  # noqa: E731
    out = fda(to01(src), to01(tgt), beta).clamp(0, 1)
    return (out * 255).round().to(torch.uint8) if src.dtype == torch.uint8 else out


def info_nce(q: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, tau: float) -> torch.Tensor:
    """(N,D) queries, (N,D) positives, (N,K,D) negatives, all L2-normalised -> (N,) InfoNCE losses
    ``-log(e^{q.p/tau} / (e^{q.p/tau} + sum_k e^{q.n_k/tau}))``."""
    lp = (q * pos).sum(1, keepdim=True) / tau
    ln = torch.einsum("nd,nkd->nk", q, neg) / tau
    return -F.log_softmax(torch.cat([lp, ln], 1), 1)[:, 0]


class Projector(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(cin, cin, 1), nn.ReLU(inplace=True), nn.Conv2d(cin, dim, 1))

    def forward(self, x):
        return F.normalize(self.net(x), dim=1)


def _pick(n_avail: int, n: int, device) -> torch.Tensor:
    return torch.randint(n_avail, (n,), device=device) if n_avail else torch.zeros(0, dtype=torch.long, device=device)


class T2S(Method):
    name = "t2s"
    summary = "pulling target to source: FDA pseudo-target queries vs teacher source prototypes (Wang et al., IJCV 2024)"
    needs_pseudo_labels = True   # the teacher's target pass (features, probabilities) feeds the negatives
    uses_target_output = False

    def __init__(self, lambda_t2s: float = 0.1, beta: float = 0.01, tau: float = 0.5, proj_dim: int = 64,
                 queries_per_class: int = 32, negatives: int = 50, unreliable_pct: float = 20.0,
                 low_rank: int = 3, high_rank: int = 20, conf_momentum: float = 0.99, alpha: float = 0.99):
        self.lambda_t2s, self.beta, self.tau, self.proj_dim = lambda_t2s, beta, tau, proj_dim
        self.queries_per_class, self.negatives, self.unreliable_pct = queries_per_class, negatives, unreliable_pct
        self.low_rank, self.high_rank, self.conf_momentum, self.alpha = low_rank, high_rank, conf_momentum, alpha

    def setup(self, ctx):
        C = ctx.model.num_classes
        self.teacher = ema_teacher(ctx, self.alpha)
        self.proj = Projector(ctx.model.feat_channels, self.proj_dim).to(ctx.device)
        self.aux = AuxParams(ctx, [self.proj])      # (rank 0's weights under torchrun)
        self.proj_t = copy.deepcopy(self.proj).requires_grad_(False)
        self.conf = torch.full((C,), 0.5, device=ctx.device)   # EMA of the teacher's per-class confidence
        self.original = None

    def transform_source(self, ctx, batch_s, batch_t):
        self.original = batch_s["image"]
        if batch_t is None or batch_t["image"].shape[-2:] != batch_s["image"].shape[-2:]:
            return batch_s
        return {**batch_s, "image": fda_images(batch_s["image"], batch_t["image"], self.beta)}

    def class_weights(self, classes: torch.Tensor) -> torch.Tensor:
        u = 1 - self.conf[classes]
        return u / u.mean().clamp(min=1e-6)

    def source_loss(self, ctx, batch, out):
        self._out_s, self._y_s = out, batch["label"]   # the queries: read in target_loss, which has the
        return {}                                      # teacher's target pass (the negatives)

    @torch.no_grad()
    def _keys(self, x):
        t = self.teacher(x)
        return self.proj_t(t.feat.float())

    def target_loss(self, ctx, batch, out):
        pl = batch["pseudo"]
        C = ctx.model.num_classes
        out_s, y_s = self._out_s, self._y_s
        q_map = self.proj(out_s.feat.float())                                   # (B,P,h,w)
        k_map = self._keys(self.original)                                       # (B,P,h,w)
        y = labels_at(y_s, q_map.shape[-2:])
        P = q_map.shape[1]
        q_all = q_map.permute(0, 2, 3, 1).reshape(-1, P)
        k_all = k_map.permute(0, 2, 3, 1).reshape(-1, P)
        y_all = y.reshape(-1)
        # target negatives: unreliable teacher pixels, with each class's rank among the teacher's scores
        with torch.no_grad():
            k_t = self.proj_t(pl.feat.float())
            prob_t = F.interpolate(pl.prob, size=k_t.shape[-2:], mode="bilinear", align_corners=False)
            ent = -(prob_t * prob_t.clamp_min(1e-8).log()).sum(1).reshape(-1)
            kt_all = k_t.permute(0, 2, 3, 1).reshape(-1, P)
            thr = torch.quantile(ent, 1 - self.unreliable_pct / 100)
            unreliable = ent >= thr
            rank = prob_t.argsort(1, descending=True).argsort(1).permute(0, 2, 3, 1).reshape(-1, C)
            conf_t, cls_t = prob_t.max(1)
            for c in cls_t.unique():
                m = self.conf_momentum
                self.conf[c] = m * self.conf[c] + (1 - m) * conf_t[cls_t == c].mean()
        classes = [c for c in y_all.unique().tolist() if c != IGNORE and c < C]
        if not classes:
            return {"t2s": q_all.sum() * 0}   # in the graph: the projector's gradient exists on every rank
        w = self.class_weights(torch.tensor(classes, device=q_all.device))
        loss = q_all.sum() * 0   # in the graph even when every class is skipped
        n_t = self.negatives // 2
        for wc, c in zip(w, classes):
            idx = (y_all == c).nonzero()[:, 0]
            idx = idx[torch.randperm(len(idx), device=idx.device)[: self.queries_per_class]]
            pos = F.normalize(k_all[y_all == c].mean(0), dim=0).expand(len(idx), P)
            tgt_ok = (unreliable & (rank[:, c] >= self.low_rank) & (rank[:, c] < self.high_rank)).nonzero()[:, 0]
            other = ((y_all != c) & (y_all != IGNORE)).nonzero()[:, 0]
            k_tn = n_t if len(tgt_ok) else 0
            k_sn = self.negatives - k_tn if len(other) else 0
            if k_sn + k_tn == 0:
                continue
            negs = []
            if k_sn:
                negs.append(k_all[other[_pick(len(other), len(idx) * k_sn, idx.device)]].view(len(idx), k_sn, P))
            if k_tn:
                negs.append(kt_all[tgt_ok[_pick(len(tgt_ok), len(idx) * k_tn, idx.device)]].view(len(idx), k_tn, P))
            loss = loss + wc * info_nce(q_all[idx], pos, torch.cat(negs, 1), self.tau).mean()
        return {"t2s": self.lambda_t2s * loss / len(classes)}

    def after_step(self, ctx):
        self.aux.step(ctx)
        a = self.teacher.alpha_at(ctx.iteration)
        with torch.no_grad():
            for t, s in zip(self.proj_t.parameters(), self.proj.parameters()):
                t.copy_(a * t + (1 - a) * s)
        self.teacher.update(ctx.model, ctx.iteration)

    def state_dict(self):
        return {"proj": self.proj.state_dict(), "proj_t": self.proj_t.state_dict(), "aux": self.aux.state_dict(),
                "conf": self.conf.cpu(), "teacher": self.teacher.state_dict()}

    def load_state_dict(self, state):
        if "proj" in state:
            self.proj.load_state_dict(state["proj"])
            self.proj_t.load_state_dict(state["proj_t"])
            self.aux.load_state_dict(state["aux"])
            self.conf.copy_(state["conf"])
            self.teacher.load_state_dict(state["teacher"])
