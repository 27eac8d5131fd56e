"""The UDA method interface: hooks that the one training loop (core/train.py) calls.

A method overrides only the hooks it needs; every hook has a no-op default. Per iteration the
loop calls, in order::

    batch_t = m.mix(ctx, batch_s, batch_t)                 # e.g. ClassMix (DACS)
    out_s = model(x_s); loss = CE(out_s, y_s) + sum(m.source_loss(ctx, batch_s, out_s))
    out_t = model(x_t); loss += CE on active labels + sum(m.target_loss(ctx, batch_t, out_t))
    backward, optimizer step
    m.adversary_step(ctx, batch_s, batch_t, out_s, out_t)  # discriminator update (AdvEnt, FADA)
    m.after_step(ctx)                                      # e.g. EMA teacher update

``adjust_logits`` (label-shift IA) is applied wherever predictions are made from logits; ``stage``
is a post-hoc step (CR, CRA stage, self-distillation) run after fit. Losses are returned as a
dict name -> scalar tensor so the loop can log each term. ``ctx`` is a core.train.Context.
"""
from __future__ import annotations

import torch


class Method:
    name = "base"

    def setup(self, ctx) -> None:
        """Called once before the first iteration (create discriminators, teachers, optimizers)."""

    def mix(self, ctx, batch_s: dict, batch_t: dict) -> dict:
        return batch_t

    def source_loss(self, ctx, batch: dict, out) -> dict[str, torch.Tensor]:
        return {}

    def target_loss(self, ctx, batch: dict, out) -> dict[str, torch.Tensor]:
        return {}

    def adversary_step(self, ctx, batch_s: dict, batch_t: dict, out_s, out_t) -> dict[str, float]:
        return {}

    def after_step(self, ctx) -> None:
        """Called after every optimizer step."""

    def adjust_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
