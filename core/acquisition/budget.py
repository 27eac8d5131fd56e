"""Annotation budgets: ``"40px"`` (PA, pixels per image), ``"2.2%"`` (RA, fraction of pixels), or human
effort over the whole target pool: ``"200clicks"`` (clicks = pixel or superpixel queries) and
``"30min"`` / ``"90s"`` / ``"1.5h"`` (human seconds), in total over the rounds or, with ``/round``
(``"20min/round"``), per round.

Budgets are defined at the resolution the labels are stored at (``H, W`` passed in).

RA: total regions per image = round(H*W*fraction / (2r+1)^2), spread over the rounds so that
the per-round counts sum to the total (earlier rounds get the remainder). The realised labeled
pixel count is then within half a region of ``H*W*fraction`` (less where regions are clipped
at the border). The official code instead uses ceil(H*W*fraction/rounds/(2r+1)^2) per round,
an upper bound (e.g. 1026 per round, 2.2016 % at 1024x2048).

PA: ``N px`` = N labeled pixels per image at the stored resolution, spread over the rounds.
The official code defines the 40 px at 1280x640 and labels ceil(40/5 * 2048*1024/(1280*640))
= 21 px per round at 1024x2048; ``pixel_ref_hw=(640, 1280)`` reproduces that scaling.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["Budget", "BudgetError", "check_budget", "parse_budget", "pooled_round_budget", "queries_per_round",
           "scale_budget"]


class BudgetError(ValueError):
    """A malformed or out-of-range budget string."""


@dataclass(frozen=True)
class Budget:
    """``kind``: "pixel" (``pixels`` per image, PA), "region" (``fraction`` of each image's pixels, RA),
    "clicks" (``amount`` clicks over the pool and all rounds) or "seconds" (``amount`` human seconds
    over the pool and all rounds). The first two are per image; the last two are pool-wide (``pooled``)."""
    kind: str
    pixels: int = 0  # per image, kind == "pixel"
    fraction: float = 0.0  # of all pixels, kind == "region" (0.022 for "2.2%")
    amount: float = 0.0  # kind "clicks" (count) or "seconds"
    per_round: bool = False  # a pooled amount given per round ("20min/round"), not over all rounds

    @property
    def mode(self) -> str:
        """The query mode a per-image budget implies: "pixel" (PA) or "region" (RA, also superpixels)."""
        return "pixel" if self.kind == "pixel" else "region"

    @property
    def pooled(self) -> bool:
        """Whether the budget is spent over the whole target pool (clicks, seconds), not per image."""
        return self.kind in ("clicks", "seconds")

    def __str__(self) -> str:
        if self.kind == "pixel":
            return f"{self.pixels}px"
        per = "/round" if self.per_round else ""
        if self.kind == "clicks":
            return f"{self.amount:.12g}clicks{per}"
        if self.kind == "seconds":   # 12 significant digits: the text parses back to the same amount
            a = self.amount
            t = (f"{a / 3600:.12g}h" if a >= 3600 and a % 360 == 0 else f"{a / 60:.12g}min" if a % 6 == 0
                 else f"{a:.12g}s")
            return t + per
        return f"{self.fraction * 100:g}%"


_HELP = ("expected '<N>px' (pixels per image, e.g. 40px), '<P>%' (percent of pixels, 0 < P <= 100, e.g. 2.2%), "
         "'<N>clicks' (e.g. 200clicks) or human time over the pool (e.g. 30min, 90s, 1.5h)")
_PX = re.compile(r"^\s*(\d+)\s*px\s*$", re.IGNORECASE)
_PCT = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*%\s*$")
_CLICKS = re.compile(r"^\s*(\d+)\s*clicks?\s*(/\s*round)?\s*$", re.IGNORECASE)
_TIME = re.compile(r"^\s*((?:\d+(?:\.\d*)?|\.\d+))\s*(s|sec|min|h)\s*(/\s*round)?\s*$", re.IGNORECASE)
_SECONDS = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0}


def parse_budget(text) -> Budget:
    """Parse ``"40px"`` -> Budget("pixel", pixels=40); ``"2.2%"`` -> Budget("region", fraction=0.022);
    ``"200clicks"`` -> Budget("clicks", amount=200); ``"30min"`` -> Budget("seconds", amount=1800) (units
    s, sec, min, h); a ``/round`` suffix (``"20min/round"``) sets ``per_round``. Raises BudgetError (one line, with the accepted forms) for anything else."""
    if isinstance(text, Budget):
        return text
    if not isinstance(text, str) or not text.strip():
        raise BudgetError(f"invalid budget {text!r}: {_HELP}")
    m = _PX.match(text)
    if m:
        px = int(m.group(1))
        if px <= 0:
            raise BudgetError(f"invalid budget {text!r}: the pixel budget must be at least 1px")
        return Budget("pixel", pixels=px)
    m = _PCT.match(text)
    if m:
        pct = float(m.group(1))
        if not (0.0 < pct <= 100.0) or not math.isfinite(pct):
            raise BudgetError(f"invalid budget {text!r}: the percentage must be in (0, 100]")
        return Budget("region", fraction=pct / 100.0)
    m = _CLICKS.match(text)
    if m:
        n = int(m.group(1))
        if n <= 0:
            raise BudgetError(f"invalid budget {text!r}: the click budget must be at least 1 click")
        return Budget("clicks", amount=float(n), per_round=bool(m.group(2)))
    m = _TIME.match(text)
    if m:
        sec = float(m.group(1)) * _SECONDS[m.group(2).lower()]
        if not (sec > 0 and math.isfinite(sec)):
            raise BudgetError(f"invalid budget {text!r}: the time budget must be more than 0 seconds")
        return Budget("seconds", amount=sec, per_round=bool(m.group(3)))
    raise BudgetError(f"invalid budget {text!r}: {_HELP}")


def _spread(total: int, rounds: int) -> list[int]:
    base, rem = divmod(total, rounds)
    return [base + (1 if i < rem else 0) for i in range(rounds)]


def queries_per_round(budget, H: int, W: int, rounds: int, radius: int, *,
                      pixel_ref_hw: tuple[int, int] | None = None) -> list[int]:
    """Number of picks per image for each round (regions for RA, pixels for PA).

    ``budget`` is a Budget or a budget string. ``H, W``: label resolution. The counts sum to the
    per-image total. ``pixel_ref_hw``: for PA, the (h, w) at which ``N px`` is defined (the
    official code: (640, 1280)); the total is then ``round(N * H*W / (h*w))``.
    """
    b = parse_budget(budget)
    if b.pooled:
        raise ValueError(f"budget {b} is spent over the whole pool, not per image: use pooled_round_budget")
    rounds = int(rounds)
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if H < 1 or W < 1:
        raise ValueError(f"image size must be positive, got {H}x{W}")
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    if b.kind == "region":
        total = int(round(H * W * b.fraction / (2 * r + 1) ** 2))
    else:
        total = b.pixels
        if pixel_ref_hw is not None:
            rh, rw = pixel_ref_hw
            total = int(round(b.pixels * H * W / (rh * rw)))
        total = min(total, H * W)
    return _spread(total, rounds)


def check_budget(budget, H: int, W: int, rounds: int, radius: int) -> None:
    """BudgetError (one line, with the fix) when an ``H x W`` image would get no query in some round:
    RA ``budget`` below one ``(2r+1)^2`` region per round, or PA fewer pixels than rounds. Call it
    with the smallest target image, before any work (the official code rounds each round up to one
    query instead, silently exceeding the budget)."""
    b = parse_budget(budget)
    if b.pooled:
        return
    if min(queries_per_round(b, H, W, rounds, radius)) > 0:
        return
    if b.kind == "pixel":
        raise BudgetError(f"--budget {b} over {rounds} rounds leaves some rounds without a pixel: give at least "
                          f"{rounds}px or fewer --rounds")
    side = 2 * radius + 1
    px = H * W * b.fraction
    fits = [r for r in range(radius - 1, -1, -1) if min(queries_per_round(b, H, W, rounds, r)) > 0]
    fix = (f"use --region-radius {fits[0]} ({2 * fits[0] + 1}x{2 * fits[0] + 1} regions) or less" if fits
           else "raise --budget")
    raise BudgetError(f"--budget {b} of a {H}x{W} target image is {px:.0f} px, less than one {side}x{side} region "
                      f"({side * side} px) in each of the {rounds} round(s), so some rounds would label nothing: "
                      f"{fix}, or use fewer --rounds")


def scale_budget(budget, factor: float) -> Budget:
    """The budget ``factor`` times larger (e.g. a run extended from 1 to 3 rounds at the same
    per-round budget: factor 3). PA pixels are rounded to whole pixels; RA keeps the fraction."""
    b = parse_budget(budget)
    if b.kind == "pixel":
        return Budget("pixel", pixels=max(1, int(round(b.pixels * factor))))
    if b.pooled:   # a per-round amount grows with the rounds by itself
        if b.per_round:
            return b
        return Budget(b.kind, amount=round(b.amount * factor, 9) if b.kind == "seconds" else float(round(b.amount * factor)))
    return Budget("region", fraction=min(1.0, round(b.fraction * factor, 12)))


def pooled_round_budget(budget, rounds: int, rnd: int, spent: float) -> float:
    """What round ``rnd`` (1-based) of ``rounds`` may spend of a pooled budget (clicks or seconds):
    the budget's share up to and including this round, ``amount * rnd / rounds`` (``amount * rnd`` for a
    per-round budget), minus what earlier rounds really spent (``spent``: answered clicks, or logged
    human seconds), never below 0. An earlier round that took longer than predicted is paid back by the
    next ones."""
    b = parse_budget(budget)
    if not b.pooled:
        raise ValueError(f"budget {b} is per image, not pooled")
    share = b.amount * int(rnd) if b.per_round else b.amount * int(rnd) / int(rounds)
    return max(0.0, share - float(spent))
