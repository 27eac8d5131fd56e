"""HRDA (Hoyer, Dai & Van Gool, ECCV 2022): context-aware high-resolution UDA. Not a loss but a segmentor
wrapper (core/models/hrda.py: LR context + HR detail crop fused by a learned class-wise scale attention;
the EMA teacher's pseudo-labels use its sliding-window HR path), so it composes with every method here.

This method (a) wraps the model (``wraps_model``: ``core.methods.base.wrap_model`` applies ``wrap`` where a
run builds its model: app/session.py ``build_model``, bench/methods.py) and (b) adds the **detail loss**:
the loop's CE on the fused logits has weight 1, so ``hr_s = lambda_d / (1 - lambda_d) * CE(hr, crop(y))``
keeps the paper's ``0.9 * CE(fused) + 0.1 * CE(hr)`` ratio (lambda_d = 0.1 -> 1/9), up to the overall
scale 1/0.9 of the sum. ``hr_t`` does the same for active target labels (human/oracle) that fall inside
the detail box: the box is mapped from input pixels to label pixels (labels may be stored at another size
than the image). Not covered: the detail loss on the mixed image of DACS (the loop trains that forward
with the fused CE only) and HRDA's feature distance; logit adjustments (FADA temperature, CR) apply to
the fused logits only.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.methods.base import Method
from core.models.hrda import HRDASegmentor
from core.models.segmentor import upsample

IGNORE = 255


def detail_target(label: torch.Tensor, image_size, box) -> torch.Tensor:
    """The labels under the detail box: ``label`` (B, Hl, Wl) long for an image of ``image_size`` (H, W);
    ``box`` = (y0, x0, h, w) in (padded) input pixels. Returns (B, h*Hl/H, w*Wl/W) long, 255 where the
    box lies in the padding."""
    H, W = image_size
    ry, rx = label.shape[-2] / H, label.shape[-1] / W
    y0, x0, h, w = box
    y1, x1 = round((y0 + h) * ry), round((x0 + w) * rx)
    lab = F.pad(label, (0, max(0, x1 - label.shape[-1]), 0, max(0, y1 - label.shape[-2])), value=IGNORE)
    return lab[..., round(y0 * ry):y1, round(x0 * rx):x1]


def detail_loss(out, label: torch.Tensor, image_size) -> torch.Tensor:
    """Mean CE of the HR logits (upsampled to the label crop) on the labels under the box; zero (in the
    graph) when none is labeled."""
    target = detail_target(label, image_size, out.extra["box"])
    logits = upsample(out.extra["hr"], target.shape[-2:]).float()
    if not (target != IGNORE).any():
        return logits.sum() * 0
    return F.cross_entropy(logits, target, ignore_index=IGNORE)


class HRDA(Method):
    name = "hrda"
    summary = "HRDA (ECCV 2022): LR context + HR detail crops fused by scale attention (a model wrapper; composes)"
    order = 5                 # first: only adds losses; its wrapper is in place before any method's setup
    wraps_model = True
    uses_target_output = False   # the detail loss reads the target output only when active labels exist

    def __init__(self, lambda_d: float = 0.1, lr_scale: float = 0.5, hr_crop: tuple[int, int] | None = None,
                 crop_divisible: int = 8):
        if not 0 <= lambda_d < 1:
            raise ValueError(f"lambda_d must be in [0, 1), got {lambda_d}")
        self.lambda_d = lambda_d
        self.wrapper_options = dict(lr_scale=lr_scale, hr_crop=hr_crop, crop_divisible=crop_divisible)

    def wrap(self, model):
        """The model an hrda fit trains: ``model`` in an HRDASegmentor (unchanged if it is one)."""
        return model if isinstance(model, HRDASegmentor) else HRDASegmentor(model, **self.wrapper_options)

    def setup(self, ctx) -> None:
        if not isinstance(ctx.model, HRDASegmentor):
            raise ValueError("method 'hrda' needs a model built with hrda (core.methods.base.wrap_model), "
                             f"got a plain {type(ctx.model).__name__}")

    @property
    def weight(self) -> float:
        return self.lambda_d / (1 - self.lambda_d)

    def source_loss(self, ctx, batch, out):
        if "box" not in out.extra:
            return {}
        return {"hr_s": self.weight * detail_loss(out, batch["label"], batch["image"].shape[-2:])}

    def target_loss(self, ctx, batch, out):
        if out is None or "box" not in out.extra or not bool((batch["label"] != IGNORE).any()):
            return {}
        return {"hr_t": self.weight * detail_loss(out, batch["label"], batch["image"].shape[-2:])}
