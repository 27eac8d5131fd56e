"""DACS (Tranheden et al., WACV 2021; official code: vikolss/DACS): mean-teacher self-training with
ClassMix of source into target.

Per iteration:
1. The shared EMA teacher (services.EMATeacher, alpha 0.99, ``a_t = min(1 - 1/(it+1), alpha)``) labels
   the un-augmented target image (the loop's ``make_pseudo_labels``); active labels override.
2. ClassMix, image i of the source batch into image i of the target batch: ``M`` = pixels of half of
   the classes present in source label i (``ceil(n/2)`` of them, drawn at random; 255 is never a
   class -- the official code draws from the whole batch and can pick 255);
   ``x_m = M*x_s + (1-M)*x_t``, ``y_m = M*y_s + (1-M)*y_pl``, at the training crop size (the loop's
   crops give images and labels the same size; a label of another size is resized by nearest
   neighbour for the mix, and active pixels lost there are still supervised by ``ce_t``).
3. Weights: 1 on source pixels; on target pixels one scalar per batch = the fraction of the batch's
   pixels whose teacher max-probability exceeds 0.968; active-labelled target pixels
   have weight 1 (their label, not the pseudo-label, is in ``y_m``).
4. Strong augmentation of the mixed image only: colour jitter (brightness/contrast/saturation factors
   ~ U(1-s, 1+s), hue shift ~ U(-s, s) of a turn; s = 0.2 as DAFormer) with probability 0.8,
   Gaussian blur with probability 0.5, sigma ~ U(0.15, 1.15), kernel ~10% of the image size (odd).
5. The loop trains ``mean(w * CE(model(x_m), y_m))`` (term ``ce_mix``; the mean runs over all pixels).
6. After the optimizer step the teacher is updated (once per step even if another method shares it).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from core.methods.base import Method
from core.methods.services import IGNORE, ema_teacher


def class_masks(label_s: torch.Tensor) -> torch.Tensor:
    """(B,H,W) bool: per image, the pixels of ceil(n/2) of its n source classes (255 excluded)."""
    masks = torch.zeros_like(label_s, dtype=torch.bool)
    for i in range(label_s.shape[0]):
        classes = torch.unique(label_s[i])
        classes = classes[classes != IGNORE]
        if len(classes) == 0:
            continue
        pick = classes[torch.randperm(len(classes), device=classes.device)[: (len(classes) + 1) // 2]]
        masks[i] = torch.isin(label_s[i], pick)
    return masks


def class_mix(img_s, label_s, img_t, label_t, weight_t, mask):
    """Paste the masked source pixels onto the target: (image, label, weight), weight 1 on source pixels."""
    m = mask.unsqueeze(1)
    img = torch.where(m, img_s, img_t)
    label = torch.where(mask, label_s, label_t)
    weight = torch.where(mask, torch.ones_like(weight_t), weight_t)
    return img, label, weight


def _nearest(x: torch.Tensor, size) -> torch.Tensor:
    """(B,H,W) labels/weights resized to ``size`` by nearest neighbour (unchanged if already there)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x[:, None].float(), size=tuple(size), mode="nearest")[:, 0].to(x.dtype)


def _odd(n: float) -> int:
    k = max(3, int(math.ceil(n)))
    return k if k % 2 else k + 1


def strong_augment(img: torch.Tensor, jitter: float = 0.2, jitter_p: float = 0.8, blur_p: float = 0.5) -> torch.Tensor:
    """Per image: colour jitter (prob ``jitter_p``) then Gaussian blur (prob ``blur_p``). uint8 or [0,1]
    float (B,3,H,W) in; [0,1] float out."""
    import torchvision.transforms.v2.functional as TF

    x = img.float() / 255 if img.dtype == torch.uint8 else img.float()
    out = []
    H, W = x.shape[-2:]
    for im in x:
        if torch.rand(()) < jitter_p:
            u = lambda: float(torch.empty(()).uniform_(1 - jitter, 1 + jitter))  # noqa: E731
            im = TF.adjust_brightness(im, u())
            im = TF.adjust_contrast(im, u())
            im = TF.adjust_saturation(im, u())
            im = TF.adjust_hue(im, float(torch.empty(()).uniform_(-jitter, jitter)))
        if torch.rand(()) < blur_p:
            sigma = float(torch.empty(()).uniform_(0.15, 1.15))
            im = TF.gaussian_blur(im, [_odd(0.1 * W), _odd(0.1 * H)], [sigma, sigma])
        out.append(im.clamp(0, 1))
    return torch.stack(out)


class DACS(Method):
    name = "dacs"
    summary = "ClassMix of source into target with an EMA teacher's pseudo-labels (Tranheden et al., WACV 2021)"
    exclusive = frozenset({"mix"})
    needs_pseudo_labels = True
    uses_target_output = False   # the teacher labels the target; the student trains on the mixed image

    def __init__(self, alpha: float = 0.99, threshold: float = 0.968, strong_aug: bool = True,
                 jitter: float = 0.2, jitter_p: float = 0.8, blur_p: float = 0.5):
        self.alpha, self.threshold, self.strong_aug = alpha, threshold, strong_aug
        self.jitter, self.jitter_p, self.blur_p = jitter, jitter_p, blur_p

    def setup(self, ctx):
        self.teacher = ema_teacher(ctx, self.alpha)

    def pseudo_weight(self, pl) -> torch.Tensor:
        """(B,H,W): the batch's confident fraction everywhere, 1 on active-labelled pixels."""
        frac = (pl.confidence > self.threshold).float().mean()
        return torch.where(pl.active, torch.ones_like(pl.weight), frac * pl.weight)

    def mix(self, ctx, batch_s, batch_t):
        pl = batch_t["pseudo"]
        size = batch_s["image"].shape[-2:]   # mix at the training size (target labels may be stored larger)
        label_s = _nearest(batch_s["label"], size)
        label_t, weight_t = _nearest(pl.label, size), _nearest(self.pseudo_weight(pl), size)
        mask = class_masks(label_s)
        img, label, weight = class_mix(batch_s["image"], label_s, batch_t["image"], label_t, weight_t, mask)
        if self.strong_aug:
            img = strong_augment(img, self.jitter, self.jitter_p, self.blur_p)
        return {"image": img, "label": label, "weight": weight, "mask": mask}

    def after_step(self, ctx):
        self.teacher.update(ctx.model, ctx.iteration)

    def state_dict(self):
        return {"teacher": self.teacher.state_dict()}

    def load_state_dict(self, state):
        if "teacher" in state:
            self.teacher.load_state_dict(state["teacher"])
