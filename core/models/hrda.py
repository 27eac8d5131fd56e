"""HRDA (Hoyer, Dai & Van Gool, "HRDA: Context-Aware High-Resolution Domain-Adaptive Semantic
Segmentation", ECCV 2022) as a segmentor wrapper: ``HRDASegmentor(Segmentor)`` has the Segmentor's API
(``forward -> SegOut``, ``param_groups``, ``freeze``/``freezing``, ``normalize``, ``num_classes``...), so
the one training loop, the EMA teacher, evaluation and every UDA method use it unchanged.

Shapes for an input x (B, 3, H, W), uint8 or [0, 1] float; s = the head's logit stride (deeplabv3plus 4,
deeplabv2 the output stride); the fused logits are on the "HR grid" (H/s, W/s):

* **context (LR)**: x resized by ``lr_scale`` (0.5) -> the Segmentor -> ``lr`` logits (B, C, H/2s, W/2s) and
  feature; the **scale attention** ``a = sigmoid(att(LR feature))`` (B, C, H/2s, W/2s), class-wise, from a
  small head (3x3 conv D -> D/2, BN, ReLU, 1x1 conv -> C; the paper copies the whole decode head).
* **detail (HR)**, training: one random ``hr_crop`` window of x per batch (default half of H and W), top-left
  corner divisible by ``crop_divisible`` (8) and by s, drawn with torch's global RNG (the loop seeds it per
  iteration, so resumed runs draw the same boxes) -> the same Segmentor -> ``hr`` logits (B, C, h/s, w/s).
  Eval (``not self.training``; the EMA teacher's pseudo-labels, evaluation, scoring): overlapping windows
  of ``hr_crop`` with stride ``hr_crop / 2`` cover the whole input, their logits averaged by count (the
  paper's step 5); the attention is not masked.
* **fusion** on the HR grid: ``A = up(a)``, in training zeroed outside the detail box;
  ``fused = (1 - A) * up(lr) + A * insert(hr)``, insert = hr placed in the box, zeros elsewhere. Outside
  the box fused equals ``up(lr)`` exactly. (The paper writes ``up((1-a)*lr) + up(a)*insert(hr)`` with a
  zeroed at the LR resolution, where the bilinear kernel lets one HR cell around the box mix LR cells from
  inside it; masking at the HR grid keeps the outside exactly LR.)

``SegOut(logits=fused (B, C, H/s, W/s), feat=the LR feature (B, D, H/2s, W/2s), extra)``: ``feat`` is the
context feature because it covers the whole input (FADA/CRA discriminators, prototypes; HRDA's feature
distance also uses the LR scale); ``extra = {"lr": LR logits, "att": A (B, C, H/s, W/s), and in training
"hr": HR logits, "box": (y0, x0, h, w) in input pixels}``. Inputs whose sides are not multiples of
``multiple`` are padded (bottom/right, the normalisation mean) and the logits, feature and ``att`` cropped
back; ``lr``/``hr``/``box`` refer to the padded input (its top-left is the input's).

Scales on the embedded benchmark: the loop's crops are 128x256 of the stored 256x512 images, so the
context is the crop at 0.5 (64x128 pixels) and the detail a 64x128 window of the crop at the stored
resolution (fused logits 32x64); evaluation on a whole 256x512 image uses the image at 0.5 as context and
3x3 overlapping 128x256 detail windows (half the input, as in training: the detail window is always half
the model's input unless ``hr_crop`` gives pixels). The tests' 64x128 crops give 32x64 context and detail
inputs (a 2x4 stride-16 feature, which the DeepLabV3+ head handles).

``state_dict``: the Segmentor's under ``base.`` plus ``att.``; ``load_state_dict`` also takes a plain
Segmentor state (e.g. ``--init`` from a source-only run) and keeps the attention head as it is.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from core.models.segmentor import FreezeScopes, SegOut, Segmentor, upsample


def _bn(module: nn.Module) -> list:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class HRDASegmentor(FreezeScopes, nn.Module):
    """A Segmentor (``base``) run on a low-resolution context and a high-resolution detail view, fused by
    a learned class-wise scale attention (see the module docstring for shapes).

    ``lr_scale``: context resize factor (0.5; s / lr_scale must be an integer). ``hr_crop``: (h, w) detail
    window in input pixels (multiples of s), or None for half the input's height and width.
    ``crop_divisible``: the detail box's top-left coordinates are multiples of it (and of s).
    Freeze scopes are the Segmentor's; the attention head trains like the decode head, keeps its BatchNorm
    frozen under "all" and is wholly frozen under "classifier" (the CR stage retrains only the classifier).
    """

    def __init__(self, base: Segmentor, lr_scale: float = 0.5, hr_crop: tuple[int, int] | None = None,
                 crop_divisible: int = 8):
        super().__init__()
        self.base = base
        self.stride = 4 if getattr(base.head, "low_level", False) else base.output_stride
        lr_stride = self.stride / lr_scale
        if not 0 < lr_scale < 1 or lr_stride != int(lr_stride):
            raise ValueError(f"hrda: lr_scale must be in (0, 1) with {self.stride} / lr_scale an integer, "
                             f"got {lr_scale}")
        if hr_crop is not None and any(int(v) <= 0 or int(v) % self.stride for v in hr_crop):
            raise ValueError(f"hrda: hr_crop sides must be positive multiples of {self.stride}, got {hr_crop}")
        self.lr_scale, self.crop_divisible = float(lr_scale), int(crop_divisible)
        self.hr_crop = None if hr_crop is None else (int(hr_crop[0]), int(hr_crop[1]))
        self.box_step = math.lcm(self.crop_divisible, self.stride)   # detail box corners are multiples of it
        # padded input sides are multiples of it: box corners, half-input detail windows, an exact LR grid
        self.multiple = math.lcm(self.box_step, 2 * self.stride, int(lr_stride))
        d = base.feat_channels
        mid = max(d // 2, 16)
        self.att = nn.Sequential(nn.Conv2d(d, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid),
                                 nn.ReLU(inplace=True), nn.Conv2d(mid, base.num_classes, 1))
        self.frozen = base.frozen
        self.freeze(base.frozen)

    # -- the Segmentor's attributes
    num_classes = property(lambda self: self.base.num_classes)
    feat_channels = property(lambda self: self.base.feat_channels)
    head_name = property(lambda self: self.base.head_name)
    backbone_name = property(lambda self: self.base.backbone_name)
    output_stride = property(lambda self: self.base.output_stride)
    mean = property(lambda self: self.base.mean)
    std = property(lambda self: self.base.std)

    def normalize(self, img: torch.Tensor) -> torch.Tensor:
        return self.base.normalize(img)

    def param_groups(self, lr: float):
        """The Segmentor's split (backbone at lr, head at 10x lr); the attention head joins the head."""
        groups = self.base.param_groups(lr)
        groups[-1]["params"] = groups[-1]["params"] + list(self.att.parameters())
        return groups

    def freeze(self, scope: str = "backbone") -> None:
        """``Segmentor.freeze(scope)`` on the base; the attention head: its BatchNorm frozen under "all",
        everything frozen under "classifier", trainable otherwise."""
        self.base.freeze(scope)
        for p in self.att.parameters():
            p.requires_grad_(scope != "classifier")
        if scope in ("all", "classifier"):
            for p in (p for m in _bn(self.att) for p in m.parameters()):
                p.requires_grad_(False)
        self.frozen = scope
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)          # the base's own train() keeps its frozen BatchNorm in eval mode
        if self.frozen in ("all", "classifier"):
            for m in _bn(self.att):
                m.eval()
        return self

    def load_state_dict(self, state_dict, *args, **kwargs):
        """Also accepts a plain Segmentor state (loaded into ``base``; the attention head is kept)."""
        return super().load_state_dict(state_for(self, state_dict), *args, **kwargs)

    # -- forward
    def detail_size(self, H: int, W: int) -> tuple[int, int]:
        """(h, w) of the detail window for a (padded) input of H x W pixels."""
        h, w = self.hr_crop or (H // 2, W // 2)
        return min(h, H), min(w, W)

    def forward(self, img: torch.Tensor) -> SegOut:
        x = img.float().div(255) if img.dtype == torch.uint8 else img
        H, W = x.shape[-2:]
        m, s = self.multiple, self.stride
        Hp, Wp = -(-H // m) * m, -(-W // m) * m
        if (Hp, Wp) != (H, W):
            mean = self.base.mean.to(x.dtype)
            x = F.pad(x - mean, (0, Wp - W, 0, Hp - H)) + mean
        grid = (Hp // s, Wp // s)
        lr = self.base(F.interpolate(x, size=(round(Hp * self.lr_scale), round(Wp * self.lr_scale)),
                                     mode="bilinear", align_corners=False))
        att = upsample(torch.sigmoid(self.att(lr.feat)), grid)
        extra = {"lr": lr.logits}
        if self.training:
            h, w = self.detail_size(Hp, Wp)
            q = self.box_step
            y0 = int(torch.randint((Hp - h) // q + 1, ())) * q
            x0 = int(torch.randint((Wp - w) // q + 1, ())) * q
            hr = self.base(x[..., y0:y0 + h, x0:x0 + w]).logits
            gy, gx, gh, gw = y0 // s, x0 // s, h // s, w // s
            inside = torch.zeros(grid, dtype=att.dtype, device=att.device)
            inside[gy:gy + gh, gx:gx + gw] = 1
            att = att * inside
            detail = F.pad(hr, (gx, grid[1] - gx - gw, gy, grid[0] - gy - gh))    # insert(hr): zeros outside
            extra.update(hr=hr, box=(y0, x0, h, w))
        else:
            detail = self._slide(x, grid)
        fused = (1 - att) * upsample(lr.logits, grid) + att * detail

        def unpad(t):
            return t[..., :math.ceil(H * t.shape[-2] / Hp), :math.ceil(W * t.shape[-1] / Wp)]
        extra["att"] = unpad(att)
        return SegOut(unpad(fused), unpad(lr.feat), extra)

    def _slide(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """HR logits (B, C, *grid) of overlapping detail windows (stride half a window) over the whole
        (padded) input, averaged where they overlap."""
        s = self.stride
        Hp, Wp = x.shape[-2:]
        h, w = self.detail_size(Hp, Wp)
        sh, sw = max(s, h // 2 // s * s), max(s, w // 2 // s * s)
        out = count = None
        for y in sorted({*range(0, Hp - h + 1, sh), Hp - h}):
            for x0 in sorted({*range(0, Wp - w + 1, sw), Wp - w}):
                o = self.base(x[..., y:y + h, x0:x0 + w]).logits
                if out is None:
                    out = o.new_zeros(*o.shape[:2], *grid)
                    count = o.new_zeros(1, 1, *grid)
                out[..., y // s:(y + h) // s, x0 // s:(x0 + w) // s] += o
                count[..., y // s:(y + h) // s, x0 // s:(x0 + w) // s] += 1
        return out / count


def state_for(model: nn.Module, state: dict) -> dict:
    """``state`` in ``model``'s layout: a plain Segmentor state for an HRDASegmentor gets the ``base.``
    prefix and the model's own attention head; an HRDASegmentor state for a plain Segmentor keeps only
    its ``base.`` part. Anything else is returned unchanged."""
    wrapped = any(k.startswith("base.") for k in state)
    if isinstance(model, HRDASegmentor) and not wrapped:
        own = {k: v for k, v in model.state_dict().items() if not k.startswith("base.")}
        return {**{"base." + k: v for k, v in state.items()}, **own}
    if not isinstance(model, HRDASegmentor) and wrapped:
        return {k[len("base."):]: v for k, v in state.items() if k.startswith("base.")}
    return state


@torch.no_grad()
def attention_by_class(model: HRDASegmentor, dataset, classes: list[str] | None = None,
                       n_images: int | None = None, device="cpu") -> dict[str, float]:
    """Mean scale attention per class: for each ground-truth pixel of class k, the attention of channel k
    (eval mode, whole stored image, upsampled to the label size), averaged over the first ``n_images``
    images of ``dataset``. ``classes``: names from ``dataset.label_space`` (default all). Returns
    {name: mean in [0, 1], NaN when the class has no pixel}: high = the fused prediction leans on detail."""
    names = dataset.label_space.names
    C = len(names)
    sums, counts = torch.zeros(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64)
    was_training = model.training
    model.eval().to(device)
    try:
        for i in range(min(n_images or len(dataset), len(dataset))):
            s = dataset[i]
            lab = torch.from_numpy(np.asarray(s["label"]).astype(np.int64))
            img = torch.from_numpy(np.ascontiguousarray(s["image"].transpose(2, 0, 1)))[None].to(device)
            att = upsample(model(img).extra["att"].float(), lab.shape)[0].cpu()      # (C, H, W)
            valid = lab < C
            k = lab[valid]
            vals = att.permute(1, 2, 0)[valid].gather(1, k[:, None])[:, 0]
            sums.index_add_(0, k, vals.double())
            counts.index_add_(0, k, torch.ones_like(vals, dtype=torch.float64))
    finally:
        model.train(was_training)
    return {n: float(sums[names.index(n)] / counts[names.index(n)]) if counts[names.index(n)] else float("nan")
            for n in (classes or names)}
