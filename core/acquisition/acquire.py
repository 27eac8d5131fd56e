"""Strategy dispatch and the one-call ``acquire`` used by the active-learning loop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .baselines import ent_score, rand_score, sconf_score
from .ripu import check_mode, ripu_score
from .select import select_queries

__all__ = ["STRATEGIES", "Strategy", "score_map", "acquire"]

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
