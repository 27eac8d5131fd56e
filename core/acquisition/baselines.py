"""Baseline score maps (RIPU paper's selection ablation: RAND, ENT, SCONF).

Each returns an (H, W) float32 map, higher = pick first; selection is the same greedy
(``select_queries``) as RIPU, so RA baselines label (2r+1)^2 squares around their top
pixels and PA baselines label single pixels.
"""
from __future__ import annotations

import numpy as np

from .stats import check_prob, pixel_stats

__all__ = ["rand_score", "ent_score", "sconf_score"]


def rand_score(prob, rng=None) -> np.ndarray:
    """Uniform random scores in [0, 1). ``rng``: np.random.Generator, an int seed, or None."""
    p = np.asarray(prob)
    if p.ndim != 3:
        raise ValueError(f"prob must be (C, H, W), got shape {p.shape}")
    g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return g.random(p.shape[1:], dtype=np.float32)


def ent_score(prob) -> np.ndarray:
    """Pixel entropy ``-sum_c p_c log(p_c + 1e-6)`` (natural log, RIPU's form, unnormalised)."""
    return pixel_stats(check_prob(prob), entropy=True)["entropy"]


def sconf_score(prob) -> np.ndarray:
    """Softmax-confidence margin baseline: ``1 - (p1 - p2)``, with p1 >= p2 the two largest
    class probabilities. High score = small margin = least confident. Range [0, 1]
    (a single-class map has p2 = 0, so score = 1 - p1)."""
    st = pixel_stats(check_prob(prob), top2=True)
    out = st["p1"] - st["p2"]
    np.subtract(np.float32(1.0), out, out=out)
    return out
