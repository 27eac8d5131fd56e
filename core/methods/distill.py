"""Self-distillation stages (post-hoc, after a fit; ``"fada>sd"``, ``"cpsl>kd"``):

* ``sd`` -- FADA's self-distillation (Wang et al., ECCV 2020; also step 6 of CRA): a frozen copy of the
  adapted model gives hard argmax pseudo-labels of the target (no threshold), and the network trains
  with CE on them (active labels override, as everywhere).
* ``kd`` -- CPSL's distillation stages 2/3 (Li et al., CVPR 2022): hard pseudo-labels kept where the
  frozen teacher's confidence >= 0.95, symmetric CE (``alpha * CE + beta * RCE``, alpha 0.1, beta 1.0)
  on them, plus ``lambda_kd * KL(teacher || student)`` per pixel. The reference passes
  *probabilities* to ``F.kl_div`` as its input (which expects log-probabilities), so its KD term is
  not a KL divergence; here the student's ``log_softmax`` is passed, which is the KL the paper writes.

Differences from the papers, on purpose: the stage continues training the adapted network instead of
a fresh ImageNet-initialised one (on the CPU benchmark a fresh model would need the whole warm-up
again; CPSL's SimCLR-initialised student has no packaged weights), the loop's source CE stays on
(``fit`` always trains the source), and CPSL's strong augmentation of the student's view is left out
(the loop's target forward is the plain crop).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.methods.base import Method, StagePlan
from core.methods.services import IGNORE, ema_teacher
from core.models.segmentor import upsample


def symmetric_ce(logits: torch.Tensor, label: torch.Tensor, alpha: float = 0.1, beta: float = 1.0,
                 clamp: float = 1e-4) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019; CPSL's ``--rce``): ``alpha * CE + beta * RCE``
    with ``RCE = -sum_k p_k log q_k``, q the one-hot label clamped to [clamp, 1], i.e.
    ``-log(clamp) * (1 - p_y)``. ``logits`` (B,C,H,W), ``label`` (B,H,W) long, 255 ignored; mean over
    labeled pixels (0 when none)."""
    valid = label != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0
    ce = F.cross_entropy(logits, label, ignore_index=IGNORE)
    p = logits.float().softmax(1)
    p_y = p.gather(1, label.clamp(max=logits.shape[1] - 1)[:, None])[:, 0]
    rce = (-torch.log(torch.tensor(clamp)) * (1 - p_y))[valid].mean()
    return alpha * ce + beta * rce


def kl_teacher_student(student_logits: torch.Tensor, teacher_prob: torch.Tensor) -> torch.Tensor:
    """``mean_pixels sum_c p_t (log p_t - log p_s)``: the KL the paper writes (log-probabilities as
    ``F.kl_div``'s input; the reference passes probabilities). (B,C,H,W) both."""
    return F.kl_div(student_logits.float().log_softmax(1), teacher_prob.float(), reduction="none").sum(1).mean()


class _Distill(Method):
    """The stage's online part: a frozen copy of the starting model labels the target."""
    name = "distill"
    needs_pseudo_labels = True

    def __init__(self, threshold: float, symmetric: bool, lambda_kd: float, alpha: float, beta: float):
        self.threshold, self.symmetric, self.lambda_kd = threshold, symmetric, lambda_kd
        self.alpha, self.beta = alpha, beta

    def setup(self, ctx):
        self.labeller = ema_teacher(ctx, alpha=1.0, ramp=False)   # frozen: the adapted model, as it was

    def target_loss(self, ctx, batch, out):
        pl = batch["pseudo"]
        logits = upsample(out.logits, pl.label.shape[-2:]).float()
        keep = (pl.confidence >= self.threshold) & ~pl.active    # active pixels: the loop's ce_t
        label = torch.where(keep, pl.label, torch.full_like(pl.label, IGNORE))
        if self.symmetric:
            terms = {"sd_t": symmetric_ce(logits, label, self.alpha, self.beta)}
        else:
            terms = {"sd_t": F.cross_entropy(logits, label, ignore_index=IGNORE) if bool(keep.any())
                     else logits.sum() * 0}
        if self.lambda_kd:
            terms["kd_t"] = self.lambda_kd * kl_teacher_student(logits, pl.prob)
        return terms


class SelfDistillation(Method):
    name = "sd"
    summary = "self-distillation stage on the adapted model's hard target pseudo-labels (FADA, ECCV 2020)"
    post_hoc = True

    def __init__(self, iterations: int | None = None, threshold: float = 0.0):
        self.iterations, self.threshold = iterations, threshold

    @property
    def stage_desc(self) -> str:
        return f"{self.name} stage"

    def inner(self) -> Method:
        return _Distill(self.threshold, symmetric=False, lambda_kd=0.0, alpha=1.0, beta=0.0)

    def plan_stage(self, model, source, target, cfg, device):
        if target is None:
            raise ValueError(f"the '{self.name}' stage needs the target images")
        return StagePlan(methods=[self.inner()], iterations=self.iterations, desc=self.stage_desc,
                         result={f"{self.name}_threshold": self.threshold})


class CPSLDistillation(SelfDistillation):
    name = "kd"
    summary = "CPSL's distillation stage: symmetric CE on confident pseudo-labels + KL to the teacher (CVPR 2022)"

    def __init__(self, iterations: int | None = None, threshold: float = 0.95, lambda_kd: float = 1.0,
                 alpha: float = 0.1, beta: float = 1.0):
        super().__init__(iterations, threshold)
        self.lambda_kd, self.alpha, self.beta = lambda_kd, alpha, beta

    def inner(self) -> Method:
        return _Distill(self.threshold, symmetric=True, lambda_kd=self.lambda_kd, alpha=self.alpha, beta=self.beta)
