"""Strategy dispatch and the one-call ``acquire`` used by the active-learning loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .baselines import ent_score, rand_score, sconf_score
from .ripu import check_mode, ripu_score
from .select import select_queries

__all__ = ["STRATEGIES", "Strategy", "score_map", "acquire", "UNITS", "POOL_CANDIDATES", "pick_queries", "pool_select"]

@dataclass(frozen=True)
class Strategy:
    """An acquisition strategy: ``score(prob, mode, radius, rng) -> (H, W) float32`` (higher = ask
    first) and one line for ``--help``."""
    score: Callable[..., np.ndarray]
    summary: str


# The registry by name: a new scorer is one entry here (the CLI's choices and --help read it).
STRATEGIES: dict[str, Strategy] = {
    "ripu": Strategy(lambda prob, mode, radius, rng: ripu_score(prob, mode, radius)["score"],
                     "region impurity x prediction uncertainty (RIPU, Xie et al., CVPR 2022)"),
    "rand": Strategy(lambda prob, mode, radius, rng: rand_score(prob, rng), "uniformly random regions/pixels"),
    "ent": Strategy(lambda prob, mode, radius, rng: ent_score(prob), "highest prediction entropy"),
    "sconf": Strategy(lambda prob, mode, radius, rng: sconf_score(prob),
                      "smallest softmax margin 1 - (p1 - p2), i.e. least confident"),
}


def score_map(prob, strategy, mode, radius, rng=None) -> np.ndarray:
    """(H, W) float32 score map of ``strategy`` (a name in ``STRATEGIES``) for a (C, H, W) softmax.

    ``mode``/``radius`` only change RIPU's score (RA vs PA formula); baselines ignore them
    (their RA/PA difference is in the selection). ``rng`` is used by ``rand`` only. Raises
    ValueError for an unknown strategy or mode.
    """
    s = str(strategy).lower()
    if s not in STRATEGIES:
        raise ValueError(f"unknown acquisition strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")
    check_mode(mode)
    return STRATEGIES[s].score(prob, mode, radius, rng)


def acquire(prob, labeled, n, strategy, mode, radius, rng=None) -> dict:
    """Score one image and greedily pick ``n`` queries: dict(picks (k,2) (y,x), newly (H,W) bool, score (H,W))."""
    score = score_map(prob, strategy, mode, radius, rng=rng)
    picks, newly = select_queries(score, labeled, n, mode, radius)
    return {"picks": picks, "newly": newly, "score": score}


# -- query units: square regions, pixels, superpixels; cost-aware ranking --------------------------
UNITS = ("square", "pixel", "superpixel")
POOL_CANDIDATES = 64   # per image, for a pooled (clicks/seconds) budget: square/pixel candidates kept


def pick_queries(prob, labeled, unit: str, strategy: str, radius: int, *, n: int | None = None,
                 pixels: float | None = None, cost_model=None, cost_aware: bool = False, segments=None,
                 rng=None) -> tuple[list[dict], np.ndarray]:
    """Score one image and pick its queries in one unit; the one selection step of the loop.

    Args:
        prob: (C, H, W) float32 softmax at the label resolution.
        labeled: (H, W) bool, pixels never asked again (earlier labels and answered queries).
        unit: "square" ((2r+1)^2 regions, RA), "pixel" (PA) or "superpixel" (one dominant-class click).
        strategy: a name in STRATEGIES.
        radius: r of the square regions, and of PA's suppression square and impurity window.
        n: queries wanted (square, pixel, or superpixel); ``pixels``: superpixels until about this
            many label pixels. Neither: the image's best ``POOL_CANDIDATES`` candidates for a pooled
            budget, chosen over the pool by :func:`pool_select`.
        cost_model: core.acquisition.cost.CostModel; None = the default model.
        cost_aware: rank by score per predicted second instead of by score.
        segments: (H, W) int superpixel ids (unit "superpixel").
        rng: for the rand strategy.

    Returns:
        ``(picks, score)``: picks in ranking order, dicts with the geometry (``y0, x0, y1, x1`` end-exclusive,
        plus ``shape`` (uint8 0/1 over the box) for a superpixel; ``y, x`` for a pixel), ``score`` (the
        strategy's), ``cost_s`` (predicted seconds), ``features`` (the cost model's input) and ``rank``
        (score, or score / cost_s when cost-aware); ``score`` (H, W) float32 map of the strategy (a
        superpixel's score on its pixels). Raises ValueError for an unknown unit or missing segments.
    """
    from .cost import CostModel, pixel_features, segment_features, square_features
    from .superpixel import segment_box, segment_scores, select_segments

    if unit not in UNITS:
        raise ValueError(f"unknown query unit {unit!r}; expected one of {', '.join(UNITS)}")
    cm = cost_model or CostModel()
    H, W = np.asarray(prob).shape[1:]
    if unit == "superpixel":
        if segments is None:
            raise ValueError("superpixel queries need the image's superpixel ids (segments)")
        seg = np.asarray(segments)
        s = segment_scores(prob, seg, strategy, rng=rng)
        feats = segment_features(prob, seg)
        cost = cm.predict("superpixel", feats)
        key = s / cost if cost_aware else s
        ids = select_segments(key, seg, labeled, n=POOL_CANDIDATES if n is None and pixels is None else n,
                              pixels=pixels)
        picks = []
        for k in ids.tolist():
            box, shape = segment_box(seg, k)
            picks.append(dict(zip(("y0", "x0", "y1", "x1"), box), shape=shape, score=float(s[k]),
                              cost_s=float(cost[k]), features=feats[k].tolist(), rank=float(key[k])))
        return picks, s[seg].astype(np.float32)
    mode = "region" if unit == "square" else "pixel"
    s = score_map(prob, strategy, mode, radius, rng=rng)
    feats = square_features(prob, radius) if unit == "square" else pixel_features(prob)
    cost = cm.predict(unit, feats)
    key = s / cost if cost_aware else s
    want = POOL_CANDIDATES if n is None else n
    centres, _ = select_queries(key, labeled, want, mode, radius)
    picks = []
    for y, x in centres.tolist():
        geo = (dict(y0=max(0, y - radius), x0=max(0, x - radius), y1=min(H, y + radius + 1), x1=min(W, x + radius + 1))
               if unit == "square" else dict(y=y, x=x))
        picks.append(dict(geo, score=float(s[y, x]), cost_s=float(cost[y, x]), features=feats[y, x].tolist(),
                          rank=float(key[y, x])))
    return picks, s


def pool_select(candidates: list[tuple], budget: float, by: str) -> list[tuple]:
    """Greedy selection over the whole pool for a pooled budget: ``candidates`` ``(image, pick)`` with
    the dicts of :func:`pick_queries`, walked in descending ``rank`` (ties: image, then the image's own
    order). ``by="clicks"``: the first ``int(budget)`` picks (one click each); ``by="seconds"``: every
    pick whose predicted ``cost_s`` still fits in what is left of ``budget`` seconds. Returns the
    chosen ``(image, pick)`` in that order."""
    if by not in ("clicks", "seconds"):
        raise ValueError(f"pooled budgets count 'clicks' or 'seconds', got {by!r}")
    order = sorted(range(len(candidates)), key=lambda j: (-candidates[j][1]["rank"], j))
    if by == "clicks":
        return [candidates[j] for j in order[:max(0, int(budget))]]
    left, out = float(budget), []
    for j in order:
        c = candidates[j][1]["cost_s"]
        if c <= left:
            out.append(candidates[j])
            left -= c
    return out
