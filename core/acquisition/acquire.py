"""Strategy dispatch and the one-call ``acquire`` used by the active-learning loop."""
from __future__ import annotations

import numpy as np

from .baselines import ent_score, rand_score, sconf_score
from .ripu import check_mode, ripu_score
from .select import select_queries

__all__ = ["STRATEGIES", "score_map", "acquire"]

# name -> one line for --help
STRATEGIES = {
    "ripu": "region impurity x prediction uncertainty (RIPU, Xie et al., CVPR 2022)",
    "rand": "uniformly random regions/pixels",
    "ent": "highest prediction entropy",
    "sconf": "lowest softmax confidence",
}


def score_map(prob, strategy, mode, radius, rng=None) -> np.ndarray:
    """(H, W) float32 score map of ``strategy`` in ripu|rand|ent|sconf.

    ``mode``/``radius`` only change RIPU's score (RA vs PA formula); baselines ignore them
    (their RA/PA difference is in the selection). ``rng`` is used by ``rand`` only.
    """
    s = str(strategy).lower()
    if s == "ripu":
        return ripu_score(prob, mode, radius)["score"]
    check_mode(mode)
    if s == "rand":
        return rand_score(prob, rng)
    if s == "ent":
        return ent_score(prob)
    if s == "sconf":
        return sconf_score(prob)
    raise ValueError(f"unknown acquisition strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}")


def acquire(prob, labeled, n, strategy, mode, radius, rng=None) -> dict:
    """Score one image and greedily pick ``n`` queries: dict(picks (k,2) (y,x), newly (H,W) bool, score (H,W))."""
    score = score_map(prob, strategy, mode, radius, rng=rng)
    picks, newly = select_queries(score, labeled, n, mode, radius)
    return {"picks": picks, "newly": newly, "score": score}
