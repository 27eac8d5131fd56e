"""Acquisition for active domain adaptation: RIPU and baseline scores, greedy RA/PA
selection under a budget, pseudo-label confidence and CRA trust maps.

Pure numpy, one image at a time (stream the pool through it); no torch here.
It reproduces the official RIPU code (BIT-DA/RIPU, core/active/) unless a docstring says otherwise.
"""
from .acquire import POOL_CANDIDATES, STRATEGIES, UNITS, acquire, pick_queries, pool_select, score_map
from .baselines import ent_score, rand_score, sconf_score
from .budget import (Budget, BudgetError, check_budget, parse_budget, pooled_round_budget, queries_per_round,
                     scale_budget)
from .cost import SECONDS_PER_CLICK, CostModel, region_clicks, seconds_of_clicks
from .superpixel import slic_segments
from .confidence import (
    CRA_ENT_THRESH,
    CRA_RARE_FACTOR,
    CRA_RARE_PCT,
    ClassEntropyStats,
    confidence_maps,
    cra_entropy,
    cra_trust_mask,
    cra_untrusted_from_entropy,
    pseudo_confidence,
)
from .ripu import RIPU_LOG_NORM, ripu_score, window_impurity
from .select import select_queries, suppression_radius
from ._util import dilate_square

__all__ = [
    "STRATEGIES", "acquire", "score_map", "UNITS", "POOL_CANDIDATES", "pick_queries", "pool_select",
    "SECONDS_PER_CLICK", "CostModel", "region_clicks", "seconds_of_clicks", "slic_segments", "pooled_round_budget",
    "ent_score", "rand_score", "sconf_score",
    "Budget", "BudgetError", "check_budget", "parse_budget", "queries_per_round", "scale_budget",
    "CRA_ENT_THRESH", "CRA_RARE_FACTOR", "CRA_RARE_PCT", "ClassEntropyStats", "confidence_maps",
    "cra_entropy", "cra_trust_mask", "cra_untrusted_from_entropy", "pseudo_confidence",
    "RIPU_LOG_NORM", "ripu_score", "window_impurity",
    "select_queries", "suppression_radius", "dilate_square",
]
