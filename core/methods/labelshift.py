"""Label-shift correction (Liu et al., CVPR 2022; official code: manmanjun/Undoing_UDA): classifier
rectification (``cr``) and inference adjustment (``ia``).

Priors (services.ClassStats): ``pi_s`` from the number of source images containing each class;
``pi_t`` estimated with the current model on the target pool (``estimate_target_prior``: image i
contains c if ``log(mean_pixels exp(p_c)) > f_s[c]``, the source pixel frequency of c). Both are
image counts +1 (a class seen in no image keeps a finite log prior) normalised to sum 1; the
reference code hard-codes GTA/Cityscapes counts; here they are recomputed per dataset.

* ``ia``: ``adjust_logits(z) = z + log pi_t - log pi_s`` -- at test time (pass
  ``compose_adjust(methods)`` to ``evaluate(adjust=...)``) and on pseudo-labels during training
  (``refine_pseudo_labels``, when a composed method makes them). Its ``stage`` (run after fit)
  re-estimates pi_t with the final model; during training pi_t is estimated lazily with the model
  of the first iteration that needs it.
* ``cr``: a post-hoc stage: freeze everything but the classifier (``model.head.classifier`` when the
  head has one, as DeepLabV3+'s 1x1 classifier on the decoder feature; else everything but the head,
  e.g. DeepLabV2's ASPP-sum classifier), with every BatchNorm frozen, and retrain the classifier on source through the one loop with the logit-adjusted CE
  ``CE(z + log pi_s - log pi_t, y_s)``; test with plain ``z``. It has no online hooks.

``ia`` and ``cr`` are mutually exclusive (both take the "label_shift" role): IA after CR would add
``log(pi_t/pi_s)`` twice.
"""
from __future__ import annotations

import numpy as np
import torch

from core.methods.base import Method, StagePlan
from core.methods.services import class_stats, dataset_class_stats, estimate_target_prior


def prior_bias(pi_t, pi_s) -> torch.Tensor:
    """(C,) ``log pi_t - log pi_s`` (float32)."""
    return torch.as_tensor(np.log(np.asarray(pi_t, np.float64)) - np.log(np.asarray(pi_s, np.float64)),
                           dtype=torch.float32)


def add_class_bias(logits: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Add a (C,) bias along the class dim of (B,C,H,W) or (C,H,W) logits."""
    cdim = 1 if logits.dim() == 4 else 0
    shape = [1] * logits.dim()
    shape[cdim] = -1
    return logits + bias.to(logits.device, logits.dtype).view(shape)


def estimate_priors(model, source, target, window, device, max_images=None):
    """(pi_s, pi_t, stats) with the current ``model``."""
    stats = dataset_class_stats(source)
    stats.target_image_counts = estimate_target_prior(model, target, stats.pixel_freq, window, device, max_images)
    stats.target_num_images = len(target) if max_images is None else min(len(target), max_images)
    return stats.source_prior, stats.target_prior, stats


class InferenceAdjustment(Method):
    name = "ia"
    summary = "label-shift inference adjustment: logits + log(target prior / source prior) at test time (Liu et al., CVPR 2022)"
    exclusive = frozenset({"label_shift"})
    post_hoc = True
    order = 10   # adjust the pseudo-labels before other refiners (CRA) use them

    def __init__(self, pi_s=None, pi_t=None, max_images: int | None = None, refine_pl: bool = True):
        self.max_images, self.refine_pl = max_images, refine_pl
        self.bias = None if pi_s is None or pi_t is None else prior_bias(pi_t, pi_s)

    def set_priors(self, pi_s, pi_t) -> None:
        self.bias = prior_bias(pi_t, pi_s)

    def _estimate(self, ctx):
        stats = class_stats(ctx)
        if getattr(ctx, "target", None) is None:
            raise ValueError("ia: estimating the target prior needs the target dataset (ctx.target)")
        stats.target_image_counts = estimate_target_prior(ctx.model, ctx.target, stats.pixel_freq,
                                                          ctx.cfg.infer_window, ctx.device, self.max_images)
        self.set_priors(stats.source_prior, stats.target_prior)

    def refine_pseudo_labels(self, ctx, batch_t, pl):
        if not self.refine_pl:
            return pl
        if self.bias is None:
            self._estimate(ctx)
        return pl.relabel(add_class_bias(pl.logits, self.bias))

    def adjust_logits(self, logits):
        return logits if self.bias is None else add_class_bias(logits, self.bias)

    def plan_stage(self, model, source, target, cfg, device):
        pi_s, pi_t, stats = estimate_priors(model, source, target, cfg.infer_window, device, self.max_images)
        self.set_priors(pi_s, pi_t)
        return {"pi_s": pi_s, "pi_t": pi_t, "target_image_counts": stats.target_image_counts}

    def state_dict(self):
        return {} if self.bias is None else {"bias": self.bias}

    def load_state_dict(self, state):
        if "bias" in state:
            self.bias = state["bias"].float()


class _LogitAdjustedCE(Method):
    """CR's training hook: the loop's source CE runs on ``z + log pi_s - log pi_t``."""
    name = "cr-train"

    def __init__(self, bias: torch.Tensor):
        self.bias = bias

    def source_logits(self, ctx, logits):
        return add_class_bias(logits, self.bias)


class ClassifierRectification(Method):
    name = "cr"
    summary = "label-shift classifier rectification: post-hoc retraining of the classifier with logit-adjusted CE (Liu et al., CVPR 2022)"
    exclusive = frozenset({"label_shift"})
    post_hoc = True

    def __init__(self, iterations: int | None = None, max_images: int | None = None, pi_s=None, pi_t=None):
        self.iterations, self.max_images = iterations, max_images
        self.pi_s, self.pi_t = pi_s, pi_t

    def plan_stage(self, model, source, target, cfg, device):
        """Retrain only the classifier (every other parameter and every BatchNorm frozen, so the
        decoder's statistics stay as adapted) on the source with logit-adjusted CE."""
        pi_s, pi_t = self.pi_s, self.pi_t
        if pi_s is None or pi_t is None:
            pi_s, pi_t, _ = estimate_priors(model, source, target, cfg.infer_window, device, self.max_images)
        return StagePlan(methods=[_LogitAdjustedCE(-prior_bias(pi_t, pi_s))], iterations=self.iterations,
                         use_target=False, freeze="classifier", desc="cr stage", result={"pi_s": pi_s, "pi_t": pi_t})
