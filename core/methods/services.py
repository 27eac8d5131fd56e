"""Services shared by UDA methods, created once per fit on demand and kept in ``ctx.services``:

* ``ema_teacher(ctx, alpha)`` -> EMATeacher: the mean teacher (DACS; any self-training method).
  One per fit; the first caller's alpha wins. ``update`` is idempotent per iteration, so two methods
  calling it in ``after_step`` update it once.
* ``class_stats(ctx)`` -> ClassStats of the source dataset (pixel frequencies, image counts), with
  ``estimate_target_prior`` (label-shift M3) filling the target side.
* ``PseudoLabel`` and ``make_pseudo_labels``: what the loop puts in ``batch_t["pseudo"]`` before the
  methods' ``refine_pseudo_labels``; active labels always override pseudo-labels.
"""
from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn

from core.evaluate import predict_logits
from core.models.segmentor import upsample

IGNORE = 255


# ----------------------------------------------------------------------------- EMA teacher
class EMATeacher:
    """A frozen copy of the student updated as ``teacher = a*teacher + (1-a)*student`` after each step,
    with ``a = min(1 - 1/(it+1), alpha)`` (DAFormer/DACS; at it = 0 the teacher becomes the student).
    ``ramp=False`` uses ``alpha`` from the first step (alpha = 1 keeps the initial model: a frozen
    pseudo-labeller, e.g. the CDA model of the CRA stage). Buffers (BN running stats) are copied.
    The teacher always runs in eval mode (BN running stats, no dropout/drop-path), under no_grad."""

    def __init__(self, model: nn.Module, alpha: float = 0.99, ramp: bool = True):
        self.model = copy.deepcopy(model)
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.alpha, self.ramp = float(alpha), ramp
        self.last_iteration: int | None = None

    def alpha_at(self, iteration: int) -> float:
        return min(1 - 1 / (iteration + 1), self.alpha) if self.ramp else self.alpha

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int) -> bool:
        """EMA step for ``iteration``; a second call for the same iteration is a no-op (returns False)."""
        if self.last_iteration == iteration:
            return False
        a = self.alpha_at(iteration)
        self.last_iteration = iteration
        if a == 1.0:  # a frozen labeller
            return True
        for t, s in zip(self.model.parameters(), student.parameters()):
            t.copy_(a * t + (1 - a) * s.detach())
        for t, s in zip(self.model.buffers(), student.buffers()):
            t.copy_(s)
        return True

    @torch.no_grad()
    def __call__(self, img: torch.Tensor):
        self.model.eval()
        return self.model(img)

    def state_dict(self) -> dict:
        return {"model": self.model.state_dict(), "last_iteration": -1 if self.last_iteration is None
                else self.last_iteration}

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        it = int(state.get("last_iteration", -1))
        self.last_iteration = None if it < 0 else it


def ema_teacher(ctx, alpha: float = 0.99, ramp: bool = True) -> EMATeacher:
    """The fit's one EMA teacher (created from ``ctx.model`` on first use)."""
    t = ctx.services.get("ema_teacher")
    if t is None:
        t = ctx.services["ema_teacher"] = EMATeacher(ctx.model, alpha, ramp)
    return t


# ----------------------------------------------------------------------------- class statistics
@dataclass
class ClassStats:
    """Per-class statistics of a labeled (source) dataset plus the target prior estimate.

    ``pixel_counts``: labeled pixels per class; ``image_counts``: images containing the class;
    ``target_image_counts``: images of the target pool estimated to contain the class (M3), or None."""
    pixel_counts: np.ndarray
    image_counts: np.ndarray
    num_images: int
    target_image_counts: np.ndarray | None = None
    target_num_images: int = 0

    @property
    def num_classes(self) -> int:
        return len(self.pixel_counts)

    @property
    def pixel_freq(self) -> np.ndarray:
        """f_s[c]: share of labeled source pixels (sums to 1)."""
        return self.pixel_counts / max(self.pixel_counts.sum(), 1)

    @property
    def source_prior(self) -> np.ndarray:
        """pi_s from source image counts (M3 step 1), +1 smoothed, normalised."""
        return _prior(self.image_counts)

    @property
    def target_prior(self) -> np.ndarray | None:
        return None if self.target_image_counts is None else _prior(self.target_image_counts)

    @classmethod
    def from_dataset(cls, dataset, num_classes: int | None = None, max_images: int | None = None) -> "ClassStats":
        C = num_classes or dataset.label_space.num_classes
        n = len(dataset) if max_images is None else min(len(dataset), max_images)
        pix = np.zeros(C, np.int64)
        img = np.zeros(C, np.int64)
        for i in range(n):
            lab = np.asarray(dataset[i]["label"])
            cnt = np.bincount(lab[lab < C].ravel(), minlength=C)[:C]
            pix += cnt
            img += cnt > 0
        return cls(pix, img, n)


def _prior(counts: np.ndarray, smooth: float = 1.0) -> np.ndarray:
    """Normalised image counts with +``smooth`` (a class seen in no image keeps a finite log prior)."""
    c = np.asarray(counts, np.float64) + smooth
    return c / c.sum()


_STATS_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def dataset_class_stats(dataset) -> ClassStats:
    """ClassStats of ``dataset``, cached per dataset object (one label pass)."""
    try:
        hit = _STATS_CACHE.get(dataset)
    except TypeError:
        hit = None
    if hit is None:
        hit = ClassStats.from_dataset(dataset)
        try:
            _STATS_CACHE[dataset] = hit
        except TypeError:
            pass
    # each caller gets its own target side
    return ClassStats(hit.pixel_counts.copy(), hit.image_counts.copy(), hit.num_images)


def class_stats(ctx) -> ClassStats:
    """The fit's source class statistics (needs ``ctx.source``)."""
    s = ctx.services.get("class_stats")
    if s is None:
        if getattr(ctx, "source", None) is None:
            raise ValueError("class statistics need the source dataset (ctx.source)")
        s = ctx.services["class_stats"] = dataset_class_stats(ctx.source)
    return s


@torch.no_grad()
def estimate_target_prior(model, dataset, pixel_freq: np.ndarray, window, device="cpu",
                          max_images: int | None = None, adjust=None) -> np.ndarray:
    """Label-shift M3 step 2: per target image and class, ``s_c = log(mean_pixels exp(p_c))`` of the
    model's softmax on the stored image (sliding ``window`` above that size); the image contains c if ``s_c > f_s[c]`` (source pixel
    frequency). Returns the (C,) image counts; ``_prior`` normalises them."""
    f_s = torch.as_tensor(np.asarray(pixel_freq), dtype=torch.float32)
    counts = torch.zeros(len(f_s), dtype=torch.int64)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    with eval_mode(model):
        for i in range(n):
            logits = predict_logits(model, dataset[i]["image"], window=window, device=device, adjust=adjust)
            p = logits.float().softmax(0).cpu()
            s = torch.log(torch.exp(p).mean((1, 2)))
            counts += (s > f_s).long()
    return counts.numpy()


# ----------------------------------------------------------------------------- pseudo-labels
@dataclass
class PseudoLabel:
    """Target pseudo-labels at the label size. ``label`` (B,H,W) long, 255 = ignore; ``weight`` (B,H,W);
    ``prob`` (B,C,H,W) softmax; ``logits`` (B,C,h,w) raw logits of the labeller (for IA);
    ``active`` (B,H,W) bool = pixels with an active (human/oracle) label, which override the rest;
    ``trusted`` (B,H,W) bool or None (CRA); ``feat`` (B,D,h',w') the labeller's features (the segmentor's
    ``SegOut.feat``, detached) or None (prototype methods: CPSL, BiDA, T2S)."""
    label: torch.Tensor
    weight: torch.Tensor
    prob: torch.Tensor
    logits: torch.Tensor
    active: torch.Tensor
    active_label: torch.Tensor
    trusted: torch.Tensor | None = None
    feat: torch.Tensor | None = None

    @property
    def confidence(self) -> torch.Tensor:
        return self.prob.max(1).values

    def relabel(self, logits: torch.Tensor) -> "PseudoLabel":
        """A PseudoLabel from new labeller logits (e.g. after IA), keeping the active labels, the
        weights and the trust split (untrusted pixels stay ignored)."""
        pl = pseudo_from_logits(logits, self.active_label)
        pl.weight, pl.feat = self.weight, self.feat
        if self.trusted is not None:
            pl.trusted = self.trusted
            pl.label = torch.where(self.trusted, pl.label, torch.full_like(pl.label, IGNORE))
        return pl


def pseudo_from_logits(logits: torch.Tensor, active_label: torch.Tensor) -> PseudoLabel:
    logits = logits.detach().float()
    prob = upsample(logits, active_label.shape[-2:]).softmax(1)
    label = prob.argmax(1)
    active = active_label != IGNORE
    label = torch.where(active, active_label, label)
    return PseudoLabel(label=label, weight=torch.ones_like(label, dtype=torch.float32), prob=prob,
                       logits=logits, active=active, active_label=active_label)


@torch.no_grad()
def make_pseudo_labels(ctx, batch_t: dict, out_t) -> PseudoLabel:
    """Pseudo-labels for the target batch: from the EMA teacher on the (un-augmented) target image when
    the fit has one, else from the student's detached target logits; active labels override."""
    teacher = ctx.services.get("ema_teacher")
    out = teacher(batch_t["image"]) if teacher is not None else out_t
    pl = pseudo_from_logits(out.logits, batch_t["label"])
    pl.feat = out.feat.detach().float()
    return pl


# ----------------------------------------------------------------------------- small helpers
@contextlib.contextmanager
def eval_mode(model: nn.Module):
    """Eval mode inside, then every module's own train/eval flag back (frozen BN stays frozen)."""
    flags = [m.training for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, f in zip(model.modules(), flags):
            m.training = f


def set_requires_grad(module: nn.Module, flag: bool) -> None:
    for p in module.parameters():
        p.requires_grad_(flag)


def dist_world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def broadcast_module(module: nn.Module) -> None:
    """Same initial weights on every DDP rank (ranks are seeded differently)."""
    if dist_world() > 1:
        import torch.distributed as dist

        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, 0)


def allreduce_grads(module: nn.Module) -> None:
    """Average the gradients of a module that is not wrapped in DDP (discriminators)."""
    w = dist_world()
    if w > 1:
        import torch.distributed as dist

        for p in module.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad.div_(w)


# ----------------------------------------------------------------------------- prototypes
def labels_at(label: torch.Tensor, size) -> torch.Tensor:
    """(B,H,W) long labels -> (B,h,w) at a feature map's size, nearest (255 stays ignore)."""
    if tuple(label.shape[-2:]) == tuple(size):
        return label
    return torch.nn.functional.interpolate(label[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()


def class_means(feat: torch.Tensor, label: torch.Tensor, num_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked class means of features: ``feat`` (B,D,h,w) float, ``label`` (B,h,w) long (255 ignored)
    -> (prototypes (C,D) float, zero for absent classes; present (C,) bool)."""
    D = feat.shape[1]
    f = feat.permute(0, 2, 3, 1).reshape(-1, D)
    y = label.reshape(-1)
    keep = y < num_classes
    f, y = f[keep], y[keep]
    sums = f.new_zeros(num_classes, D).index_add_(0, y, f)
    counts = torch.bincount(y, minlength=num_classes)[:num_classes]
    return sums / counts.clamp(min=1)[:, None].to(f.dtype), counts > 0


# ----------------------------------------------------------------------------- a method's own parameters
class AuxParams:
    """Parameters a method adds to the segmentor's training (prototypes, projectors, depth heads): they
    get gradients from the loop's ``loss.backward()`` and are stepped after the segmentor's step
    (``step(ctx)`` in ``after_step``) by their own SGD at ``lr_mult`` x the base lr (the papers' head
    multiplier, 10) with the segmentor's schedule (linear warm-up, poly decay) and gradient clip.
    Under torchrun they start equal on every rank (rank 0's values) and their gradients are averaged
    (a missing gradient counts as zero, so every rank makes the same collective calls). Gradients are
    unscaled by the loop's fp16 loss scale and a step with non-finite gradients is skipped, as the
    GradScaler does for the segmentor. ``state_dict`` carries the optimizer for resume."""

    def __init__(self, ctx, modules: list, lr_mult: float = 10.0):
        self.params = [p for m in modules for p in (m.parameters() if isinstance(m, nn.Module) else [m])]
        cfg = ctx.cfg
        self.base_lr = cfg.lr * lr_mult
        self.opt = torch.optim.SGD(self.params, lr=self.base_lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
        if dist_world() > 1:
            import torch.distributed as dist

            for p in self.params:
                dist.broadcast(p.data, 0)

    def step(self, ctx) -> None:
        cfg = ctx.cfg
        f = (1 - ctx.iteration / max(cfg.iterations, 1)) ** cfg.poly_power
        if ctx.iteration < cfg.warmup:
            f *= (ctx.iteration + 1) / cfg.warmup
        for g in self.opt.param_groups:
            g["lr"] = self.base_lr * f
        for p in self.params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            if ctx.grad_scale != 1.0:
                p.grad.div_(ctx.grad_scale)
        w = dist_world()
        if w > 1:
            import torch.distributed as dist

            for p in self.params:
                dist.all_reduce(p.grad)
                p.grad.div_(w)
        if all(bool(torch.isfinite(p.grad).all()) for p in self.params):
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return self.opt.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.opt.load_state_dict(state)
