"""Depth-distribution UDA (Wu & Liu, NeurIPS 2022; reference: depdis/Depth_Distribution, whose GMM
density and spatial prior ship as compiled binaries: both are reimplemented here from the reference
notes). Needs a source with depth maps (synthcity's source, SYNTHIA); GTA5 has none.

* **Heads** (``DepthDensityHeads``, trained with the segmentor through ``AuxParams`` at 10x lr): on the
  segmentor's feature ``SegOut.feat`` (B,D,h,w), a depth head and a density head, each
  ``1x1 D->64, ReLU, 3x3 64->64, ReLU, 1x1 64->32``, channel mean, sigmoid -> (B,1,h,w) in (0,1). The
  depth head regresses **inverse depth** ``z = 1 / (1 + d)`` (d in metres), which is bounded.
* **Class-wise GMMs** (``fit_gmms`` in ``setup``): per class, a ``components``-component diagonal GMM
  over (x, y, z), x and y the pixel's position as fractions of the whole image (the loop's crops carry
  their box, core.data.transforms.TrainView), fitted by EM on up to ``gmm_samples`` source pixels of the
  class from up to ``gmm_images`` source images.
* **Density targets**: source ``D_s = dens(GMM_{argmax z_s}(x, y, z_gt))``, target
  ``D_t = dens(GMM_{argmax z_t}(x, y, z_pred_t))`` (non-differentiable regression targets), with
  ``dens(p) = 1 - exp(-p / p_ref_c)``, p_ref_c the median density of the class's own fitting samples
  (the reference uses ``255 (1 - exp(-1e6 p))`` in its own units).
* **Losses** (the reference's weights): ``0.005 berHu(depth_s, z_gt) + 0.01 berHu(dens_s, D_s)`` on the
  source, ``0.05 berHu(dens_t, D_t)`` on the target, and the density-weighted entropy adversary: an
  FC discriminator sees ``I(p) * dens`` (ADVENT's self-information map times the upsampled predicted
  density); generator ``0.05 * BCE(D(I_t dens_t), source)``, discriminator
  ``BCE(D(I_s dens_s), source) + BCE(D(I_t dens_t), target)`` (no 1/2, as the reference).
  berHu: ``|e|`` where ``|e| <= c``, ``(e^2 + c^2) / (2c)`` elsewhere, ``c = 0.2 max|e|``.
* **Spatial-prior pseudo-labels** (the ``sprior`` stage, ``"depth>sprior"``): self-training on the
  target with pseudo-labels of confidence >= 0.9 from which every 8-connected component smaller than
  its class's ``N_c`` is dropped; ``N_c = (50 + 4950 f_c / max f)`` scaled by the label's area over the
  reference's 1280x760 (f: source pixel frequency; this reproduces the reference's 16-class table,
  e.g. road 5000, the rarest classes ~50-90).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.methods.adversarial import DiscriminatorMixin, FCDiscriminator, entropy_map
from core.methods.base import Method
from core.methods.distill import SelfDistillation, _Distill
from core.methods.services import IGNORE, AuxParams, class_stats, labels_at
from core.models.segmentor import upsample

SOURCE, TARGET = 0.0, 1.0


def inverse_depth(depth_m: torch.Tensor) -> torch.Tensor:
    return 1.0 / (1.0 + depth_m.clamp(min=0))


def berhu(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reverse Huber loss (Laina et al., 3DV 2016): ``|e|`` for ``|e| <= c`` and ``(e^2 + c^2) / (2c)``
    above, ``c = 0.2 max|e|`` over the (masked) pixels; mean. Same-shape float tensors."""
    e = (pred.float() - target.float()).abs()
    if mask is not None:
        e = e[mask]
    if e.numel() == 0:
        return pred.sum() * 0
    c = (0.2 * e.max()).detach().clamp(min=1e-6)
    return torch.where(e <= c, e, (e * e + c * c) / (2 * c)).mean()


# ----------------------------------------------------------------------------- GMMs
class ClassGMMs:
    """Per-class diagonal Gaussian mixtures over (x, y, z). ``means``/``vars`` (C,K,3), ``weights`` (C,K),
    ``fitted`` (C,) bool, ``p_ref`` (C,) the median density of each class's fitting samples."""

    def __init__(self, means, vars_, weights, fitted, p_ref):
        self.means, self.vars, self.weights, self.fitted, self.p_ref = means, vars_, weights, fitted, p_ref

    def log_density(self, pts: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """(N,3) points, (N,) class ids -> (N,) log p(point | class); -inf for classes without a GMM."""
        mu, var, w = self.means[cls], self.vars[cls], self.weights[cls]          # (N,K,3), (N,K,3), (N,K)
        d = pts[:, None, :] - mu
        lp = -0.5 * ((d * d) / var + var.log() + math.log(2 * math.pi)).sum(-1) + w.clamp_min(1e-12).log()
        out = torch.logsumexp(lp, 1)
        return torch.where(self.fitted[cls], out, torch.full_like(out, -float("inf")))

    def density_target(self, pts: torch.Tensor, cls: torch.Tensor) -> torch.Tensor:
        """``1 - exp(-p / p_ref_c)`` in [0, 1): (N,3), (N,) -> (N,)."""
        p = self.log_density(pts, cls).exp()
        return 1 - torch.exp(-p / self.p_ref[cls].clamp(min=1e-12))

    def to(self, device) -> "ClassGMMs":
        return ClassGMMs(*(t.to(device) for t in (self.means, self.vars, self.weights, self.fitted, self.p_ref)))

    def state_dict(self) -> dict:
        return {k: getattr(self, k).cpu() for k in ("means", "vars", "weights", "fitted", "p_ref")}

    @classmethod
    def from_state(cls, s: dict) -> "ClassGMMs":
        return cls(s["means"], s["vars"], s["weights"], s["fitted"], s["p_ref"])


def fit_gmm(x: torch.Tensor, k: int = 5, iters: int = 30, seed: int = 0, min_var: float = 1e-4):
    """EM for a diagonal GMM: (N,3) float points -> (means (K,3), vars (K,3), weights (K,)). Initialised
    from K distinct random points; variances floored at ``min_var``."""
    g = torch.Generator().manual_seed(seed)
    n = len(x)
    k = min(k, n)
    mu = x[torch.randperm(n, generator=g)[:k]].clone()
    var = x.var(0, unbiased=False).clamp(min=min_var).expand(k, 3).clone()
    w = torch.full((k,), 1.0 / k)
    for _ in range(iters):
        d = x[:, None, :] - mu
        lp = -0.5 * ((d * d) / var + var.log()).sum(-1) + w.log()
        r = torch.softmax(lp, 1)                                   # (N,K) responsibilities
        nk = r.sum(0).clamp(min=1e-8)
        mu = (r.t() @ x) / nk[:, None]
        var = ((r.t() @ (x * x)) / nk[:, None] - mu * mu).clamp(min=min_var)
        w = nk / n
    return mu, var, w


def pixel_points(box: torch.Tensor, depth_z: torch.Tensor) -> torch.Tensor:
    """(B,5) crop boxes (TrainView) and (B,h,w) inverse depth -> (B,h,w,3) points (x, y, z) with x, y the
    pixel centres as fractions of the whole image (x mirrored for flipped crops)."""
    B, h, w = depth_z.shape
    dev = depth_z.device
    iy = (torch.arange(h, device=dev) + 0.5) / h
    ix = (torch.arange(w, device=dev) + 0.5) / w
    top, left, hh, ww, flip = (box[:, i].to(dev)[:, None] for i in range(5))
    ys = top + iy[None] * hh                                        # (B,h)
    xs = left + ix[None] * ww                                       # (B,w)
    xs = torch.where(flip > 0.5, 1 - xs, xs)
    return torch.stack([xs[:, None, :].expand(B, h, w), ys[:, :, None].expand(B, h, w), depth_z], -1)


@torch.no_grad()
def fit_gmms(source, num_classes: int, grid: tuple[int, int], components: int = 5, max_images: int = 32,
             max_samples: int = 4000, seed: int = 0) -> ClassGMMs:
    """Fit the class-wise GMMs on whole source images (labels and depth resized to ``grid`` (h, w)).
    Raises ValueError when the source has no depth."""
    pts = [[] for _ in range(num_classes)]
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
    for i in range(min(len(source), max_images)):
        s = source[i]
        if "depth" not in s:
            raise ValueError("the depth method needs source depth maps; this source has none")
        lab = labels_at(torch.from_numpy(np.asarray(s["label"], np.int64))[None], grid)[0]
        dep = F.interpolate(torch.from_numpy(np.asarray(s["depth"], np.float32))[None, None], size=grid,
                            mode="nearest")[0]
        p = pixel_points(full, inverse_depth(dep))[0]
        for c in lab.unique().tolist():
            if c < num_classes:
                pts[c].append(p[lab == c])
    K = components
    means, vars_, weights = torch.zeros(num_classes, K, 3), torch.ones(num_classes, K, 3), torch.zeros(num_classes, K)
    fitted, p_ref = torch.zeros(num_classes, dtype=torch.bool), torch.ones(num_classes)
    g = torch.Generator().manual_seed(seed)
    for c in range(num_classes):
        if not pts[c]:
            continue
        x = torch.cat(pts[c])
        if len(x) < 2 * K:
            continue
        x = x[torch.randperm(len(x), generator=g)[:max_samples]]
        mu, var, w = fit_gmm(x, K, seed=seed + c)
        means[c, :len(w)], vars_[c, :len(w)], weights[c, :len(w)] = mu, var, w
        fitted[c] = True
    gm = ClassGMMs(means, vars_, weights, fitted, p_ref)
    for c in range(num_classes):
        if fitted[c]:
            x = torch.cat(pts[c])[:max_samples]
            p_ref[c] = gm.log_density(x, torch.full((len(x),), c)).exp().median()
    return gm


# ----------------------------------------------------------------------------- heads
class _Head(nn.Sequential):
    def __init__(self, cin: int):
        super().__init__(nn.Conv2d(cin, 64, 1), nn.ReLU(inplace=True), nn.Conv2d(64, 64, 3, padding=1),
                         nn.ReLU(inplace=True), nn.Conv2d(64, 32, 1))

    def forward(self, x):
        return torch.sigmoid(super().forward(x).mean(1, keepdim=True))


class DepthDensityHeads(nn.Module):
    def __init__(self, cin: int):
        super().__init__()
        self.depth, self.density = _Head(cin), _Head(cin)

    def forward(self, feat):
        return self.depth(feat)[:, 0], self.density(feat)[:, 0]


class DepthDistribution(DiscriminatorMixin, Method):
    name = "depth"
    summary = "depth-distribution UDA: depth/density heads, class GMMs, density-weighted entropy adversary (NeurIPS 2022)"
    exclusive = frozenset({"generator_adversary"})
    needs_source_depth = True   # the app refuses a source without depth maps before any work

    def __init__(self, lambda_depth: float = 0.005, lambda_dens_s: float = 0.01, lambda_dens_t: float = 0.05,
                 lambda_adv: float = 0.05, components: int = 5, gmm_images: int = 32, gmm_samples: int = 4000,
                 lr_d: float = 1e-4, betas=(0.9, 0.99), ndf: int = 64):
        self.lambda_depth, self.lambda_dens_s, self.lambda_dens_t = lambda_depth, lambda_dens_s, lambda_dens_t
        self.lambda_adv, self.components, self.gmm_images, self.gmm_samples = lambda_adv, components, gmm_images, gmm_samples
        self.lr_d, self.betas, self.ndf = lr_d, tuple(betas), ndf

    def setup(self, ctx):
        src = ctx.source
        if not getattr(src, "has_depth", False):
            raise ValueError(f"the depth method needs a source with depth maps (synthcity's source, SYNTHIA); "
                             f"{getattr(src, 'name', type(src).__name__)} has none (GTA5 ships no depth)")
        C = ctx.model.num_classes
        s0 = src[0]
        h, w = np.shape(s0["label"])[:2]
        self.gmms = fit_gmms(src, C, (max(1, h // 4), max(1, w // 4)), self.components, self.gmm_images,
                             self.gmm_samples, ctx.cfg.seed).to(ctx.device)
        self.heads = DepthDensityHeads(ctx.model.feat_channels).to(ctx.device)
        self.aux = AuxParams(ctx, [self.heads])
        self.build_discriminator(ctx, FCDiscriminator(C, self.ndf))

    def _targets(self, box, z, logits) -> torch.Tensor:
        cls = logits.detach().argmax(1)
        pts = pixel_points(box, z.detach())
        return self.gmms.density_target(pts.reshape(-1, 3), cls.reshape(-1)).view_as(cls)

    def source_loss(self, ctx, batch, out):
        z_pred, dens = self.heads(out.feat.float())
        size = z_pred.shape[-2:]
        z_gt = inverse_depth(F.interpolate(batch["depth"][:, None].float(), size=size, mode="nearest")[:, 0])
        d_gt = self._targets(batch["box"], z_gt, upsample(out.logits, size))
        self._dens_s = dens.detach()
        return {"depth_s": self.lambda_depth * berhu(z_pred, z_gt), "dens_s": self.lambda_dens_s * berhu(dens, d_gt)}

    def _weighted_entropy(self, logits, dens, size):
        return entropy_map(upsample(logits, size)) * upsample(dens[:, None], size)

    def target_loss(self, ctx, batch, out):
        z_pred, dens = self.heads(out.feat.float())
        size = z_pred.shape[-2:]
        d_t = self._targets(batch["box"], z_pred, upsample(out.logits, size))
        self._dens_t = dens.detach()
        g = self.frozen_d()(self._weighted_entropy(out.logits, dens, batch["image"].shape[-2:]))
        return {"dens_t": self.lambda_dens_t * berhu(dens, d_t),
                "adv_t": self.lambda_adv * F.binary_cross_entropy_with_logits(g, torch.full_like(g, SOURCE))}

    def adversary_step(self, ctx, batch_s, batch_t, out_s, out_t):
        if out_t is None:
            return {}
        i_s = self._weighted_entropy(out_s.logits.detach().float(), self._dens_s, batch_s["image"].shape[-2:])
        i_t = self._weighted_entropy(out_t.logits.detach().float(), self._dens_t, batch_t["image"].shape[-2:])
        bce = lambda d, v: F.binary_cross_entropy_with_logits(d, torch.full_like(d, v))  # noqa: E731
        return {"d_adv": self.d_update(ctx, lambda D: bce(D(i_s), SOURCE) + bce(D(i_t), TARGET))}

    def after_step(self, ctx):
        self.aux.step(ctx)

    def state_dict(self):
        return {**self.d_state(), "heads": self.heads.state_dict(), "aux": self.aux.state_dict(),
                "gmms": self.gmms.state_dict()}

    def load_state_dict(self, state):
        self.load_d_state(state)
        if "heads" in state:
            self.heads.load_state_dict(state["heads"])
            self.aux.load_state_dict(state["aux"])
            self.gmms = ClassGMMs.from_state(state["gmms"]).to(self.heads.depth[0].weight.device)


# ----------------------------------------------------------------------------- spatial-prior stage
def component_sizes(pixel_freq: np.ndarray, label_area: int, base0: float = 50, base1: float = 4950,
                    ref_area: int = 1280 * 760) -> np.ndarray:
    """Minimum component size per class: ``(base0 + base1 * f_c / max f) * label_area / ref_area``."""
    f = np.asarray(pixel_freq, np.float64)
    return (base0 + base1 * f / max(f.max(), 1e-12)) * label_area / ref_area


def drop_small_components(label: np.ndarray, min_size: np.ndarray) -> np.ndarray:
    """(H,W) uint8/int pseudo-label (255 ignore) -> the same with every 8-connected component of class c
    smaller than ``min_size[c]`` pixels set to 255 (scipy.ndimage.label)."""
    from scipy import ndimage

    out = np.array(label, copy=True)
    for c in np.unique(label):
        if c == IGNORE or c >= len(min_size):
            continue
        comp, n = ndimage.label(label == c, structure=np.ones((3, 3), bool))
        sizes = np.bincount(comp.ravel(), minlength=n + 1)
        small = sizes < min_size[c]
        small[0] = False
        out[small[comp]] = IGNORE
    return out


class _SpatialPriorST(_Distill):
    name = "sprior-st"

    def __init__(self, threshold: float, min_sizes: np.ndarray | None):
        super().__init__(threshold, symmetric=False, lambda_kd=0.0, alpha=1.0, beta=0.0)
        self.min_sizes = min_sizes

    def refine_pseudo_labels(self, ctx, batch_t, pl):
        if self.min_sizes is None:   # scaled by the stored target label's area, not the crop's
            f = class_stats(ctx).pixel_freq
            self.min_sizes = component_sizes(f, int(np.prod(np.shape(ctx.target[0]["label"])[:2])))
        keep = pl.confidence >= self.threshold
        lab = torch.where(keep, pl.label, torch.full_like(pl.label, IGNORE)).cpu().numpy()
        lab = np.stack([drop_small_components(x, self.min_sizes) for x in lab])
        pl.label = torch.where(pl.active, pl.active_label, torch.as_tensor(lab, device=pl.label.device))
        return pl


class SpatialPriorStage(SelfDistillation):
    name = "sprior"
    summary = "self-training stage on spatial-prior pseudo-labels: small components dropped (depth distribution, NeurIPS 2022)"

    stage_desc = "spatial-prior self-training"

    def __init__(self, iterations: int | None = None, threshold: float = 0.9):
        super().__init__(iterations, threshold)

    def inner(self) -> Method:
        return _SpatialPriorST(self.threshold, None)
