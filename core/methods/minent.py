"""MinEnt (Vu et al., CVPR 2019; official code: valeoai/ADVENT): entropy minimisation on the target.

``lambda_ent * mean_pixels sum_c I_c`` with ``I = -p log2 p / log2 C`` of the softmax at the label
size. Paper default lambda_ent = 1e-3 (main output). On a small benchmark with few iterations that
weight barely moves the model: override it with ``MinEnt(lambda_ent=...)`` (bench: --set
minent.lambda_ent=0.1). A regulariser: it composes with every method. (The paper's
"AdvEnt+MinEnt" is an ensemble of two models; ``advent+minent`` here trains one model with both.)
"""
from __future__ import annotations

from core.methods.adversarial import entropy_map
from core.methods.base import Method
from core.models.segmentor import upsample


def entropy_loss(logits):
    return entropy_map(logits).sum(1).mean()


class MinEnt(Method):
    name = "minent"
    summary = "target entropy minimisation (the MinEnt of AdvEnt, CVPR 2019)"

    def __init__(self, lambda_ent: float = 1e-3):
        self.lambda_ent = lambda_ent

    def target_loss(self, ctx, batch, out):
        return {"ent_t": self.lambda_ent * entropy_loss(upsample(out.logits, batch["label"].shape[-2:]))}
