"""The UDA method interface: hooks that the one training loop (core/train.py) calls.

A method overrides only the hooks it needs; every hook has a no-op default. Per iteration the
loop calls, in order::

    batch_s = m.transform_source(ctx, batch_s, batch_t)    # e.g. FDA pseudo-target images (T2S), labels kept
    out_s = model(x_s)
    loss  = CE(m.source_logits(out_s.logits), y_s) + sum(m.source_loss(ctx, batch_s, out_s))
    out_t = model(x_t); loss += CE on active labels (batch_t["label"] != 255)
                                                           # skipped (out_t = None) when the batch has no active
                                                           # labels and every method sets uses_target_output = False
    if any(m.needs_pseudo_labels):                         # teacher (if any) or the detached student
        batch_t["pseudo"] = PseudoLabel(...)               # active labels override pseudo-labels
        batch_t["pseudo"] = m.refine_pseudo_labels(ctx, batch_t, batch_t["pseudo"])   # IA, CRA trust, ...
    mixed = m.mix(ctx, batch_s, batch_t)                   # first non-None (ClassMix of DACS)
    if mixed: loss += mean(weight * CE(model(mixed image), mixed label))
    loss += sum(m.target_loss(ctx, batch_t, out_t))
    backward, optimizer step
    m.adversary_step(ctx, batch_s, batch_t, out_s, out_t)  # discriminator update (AdvEnt, FADA, CRA)
    m.after_step(ctx)                                      # e.g. EMA teacher update

``adjust_logits`` (label-shift IA) is applied wherever predictions are made from logits (pass
``core.methods.compose_adjust(methods)`` to ``core.evaluate.evaluate(adjust=...)``); ``plan_stage``
is a post-hoc step (CR, CRA stage, prior estimation for IA) for methods with ``post_hoc = True`` (or
given after '>' in a spec): it measures what it needs and returns a ``StagePlan`` (what to train,
what is frozen), which ``core.train.run_stages`` runs after fit with the one training loop.
Losses are returned as a dict
name -> scalar tensor so the loop can log each term. ``ctx`` is a core.train.Context.

Shared services (one EMA teacher, class statistics) live in ``ctx.services`` and are created on
demand by core/methods/services.py; a method never owns a private copy of them.

Composition rule (checked by ``core.methods.build_methods``): ``exclusive`` names the roles a method
takes that at most one method of a composition may take (``ROLES`` below says why); ``conflicts``
names specific other methods it cannot run with. Everything else composes (RIPU's losses, MinEnt,
IA, CR compose with every method).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

# role -> why two methods cannot both take it (the ValueError's wording: "both <why>")
ROLES = {
    "generator_adversary": "train the segmentor against their own discriminator (one adversarial "
                           "alignment per stage; run the second one as a stage: 'a>b')",
    "mix": "replace the mixed-image batch (only one mixing per iteration)",
    "label_shift": "correct the label shift (IA on top of CR would add log(pi_t/pi_s) twice)",
}


class Method:
    name = "base"
    summary = ""          # one line for --help: what it does, and the paper
    exclusive: frozenset = frozenset()   # roles from ROLES this method takes
    conflicts: tuple = ()                # names of methods it cannot be combined with
    needs_pseudo_labels = False          # the loop builds batch_t["pseudo"] when any method sets this
    uses_target_output = True            # False: target_loss/adversary_step never read the student's target
                                         # output, so without active labels the loop may skip that forward
    post_hoc = False                     # core.train.run_stages() runs plan_stage() after fit
    order = 50                           # build_methods sorts a composition by it (stable): hooks run in
                                         # that order, e.g. IA (10) adjusts pseudo-labels before CRA (80) splits them
    wraps_model = False                  # True: wrap(model) returns the model a fit of this method trains
                                         # (HRDA); applied where a run builds its model (``wrap_model``)

    def wrap(self, model):
        """The model to train when ``wraps_model`` (e.g. HRDA's segmentor wrapper); default: ``model``."""
        return model

    def setup(self, ctx) -> None:
        """Called once before the first iteration (create discriminators, teachers, optimizers)."""

    def transform_source(self, ctx, batch_s: dict, batch_t: dict | None) -> dict:
        """The source batch the loop trains on (before its forward); labels must stay valid for it.
        ``batch_t`` is None when the fit has no target. Default: unchanged."""
        return batch_s

    def source_logits(self, ctx, logits: torch.Tensor) -> torch.Tensor:
        """Logits the loop's source CE is computed on (FADA: tempered; CR stage: logit-adjusted)."""
        return logits

    def source_loss(self, ctx, batch: dict, out) -> dict[str, torch.Tensor]:
        return {}

    def refine_pseudo_labels(self, ctx, batch_t: dict, pl):
        """``pl``: core.methods.services.PseudoLabel; return it (modified or new). Keep active pixels."""
        return pl

    def mix(self, ctx, batch_s: dict, batch_t: dict) -> dict | None:
        """A mixed batch {"image": (B,3,H,W) uint8 or [0,1] float, "label": (B,H,W) long,
        "weight": (B,H,W) float} trained with weighted CE by the loop, or None (no mixing)."""
        return None

    def target_loss(self, ctx, batch: dict, out) -> dict[str, torch.Tensor]:
        return {}

    def adversary_step(self, ctx, batch_s: dict, batch_t: dict, out_s, out_t) -> dict[str, float]:
        """After the segmentor's optimizer step; use detached outputs only."""
        return {}

    def after_step(self, ctx) -> None:
        """Called after every optimizer step."""

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def plan_stage(self, model, source, target, cfg, device) -> "StagePlan | dict":
        """Post-hoc step after fit (``post_hoc`` methods; run by ``core.train.run_stages``). Measure
        what the stage needs with ``model`` (priors, thresholds) and return a StagePlan of what to train,
        or a dict of results when nothing is trained."""
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StageOnly(Method):
    """A method used only as a post-hoc stage (``'fada>cra'``): no online hooks during fit; its
    ``stage`` (and test-time ``adjust_logits``) run after fit."""

    post_hoc = True

    def __init__(self, inner: Method):
        self.inner = inner
        self.name = f">{inner.name}"

    def adjust_logits(self, logits):
        return self.inner.adjust_logits(logits)

    def plan_stage(self, model, source, target, cfg, device):
        return self.inner.plan_stage(model, source, target, cfg, device)

    def state_dict(self) -> dict:
        return self.inner.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state)


@dataclass
class StagePlan:
    """What a post-hoc stage trains; ``core.train.run_stages`` runs it: ``fit`` with ``methods`` for
    ``iterations`` (None: the stage's default), on the source and, with ``use_target``, the target and
    its active labels, with the model frozen to ``freeze`` (a Segmentor.freeze scope; None: as it is).
    ``result``: what was measured to plan it (priors, thresholds), returned with fit's results."""
    methods: list
    iterations: int | None = None
    use_target: bool = True
    freeze: str | None = None
    desc: str = "stage"
    result: dict = field(default_factory=dict)


def wrap_model(model, methods):
    """``model`` wrapped by every online method of ``methods`` with ``wraps_model`` (HRDA), in order: the one
    place a run's model gets its wrappers (app/session.py ``build_model``, bench/methods.py)."""
    for m in methods:
        if m.wraps_model:
            model = m.wrap(model)
    return model
