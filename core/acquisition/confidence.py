"""Pseudo-label confidence and CRA trusted/untrusted maps.

CRA (Cross-Region Adaptation, Wang et al., CVIU 2023; official code: zhijiew/CRA):

* per pixel, ``E = mean_c(-p_c log2 p_c) / log2 C`` = H / (C ln C) with H the natural-log
  entropy (no epsilon; 0 log 0 = 0). Because E is a mean over the C classes, the 0.01
  threshold is about 0.19 normalised entropy at C = 19;
* rare classes: a class whose predicted-pixel share over the whole target pool is below
  ``ENT_NORM_PCT = 0.01`` gets ``E <- E * ENT_NORM_FACTOR`` (0.5 as configured; the code
  default is 0.25) on the pixels predicted as that class;
* trusted = E (after the rare-class scaling) <= ``ENT_THRESH = 0.01``; untrusted = E > 0.01.

Streamable: ``ClassEntropyStats.update`` accumulates per-class predicted-pixel counts (and
entropy sums, for reporting) image by image, so memory does not grow with the pool; its
``class_thresholds()`` folds the rare-class factor into a per-class threshold
(``ENT_THRESH / factor`` for rare classes: ``E * f <= t  <=>  E <= t / f``, exact for f = 0.5),
which ``cra_trust_mask`` applies per predicted class.

Deviations / choices: the official pipeline caches E offline from the CDA model (padding
E = -1); here E comes from whatever softmax is passed in (e.g. the current teacher), and
pixels outside ``valid`` are ignored by the statistics.
"""
from __future__ import annotations

import math

import numpy as np

from .stats import check_prob, pixel_stats

__all__ = ["pseudo_confidence", "cra_entropy", "ClassEntropyStats", "cra_trust_mask", "confidence_maps",
           "CRA_ENT_THRESH", "CRA_RARE_PCT", "CRA_RARE_FACTOR"]

CRA_ENT_THRESH = 0.01
CRA_RARE_PCT = 0.01
CRA_RARE_FACTOR = 0.5


def pseudo_confidence(prob) -> np.ndarray:
    """Max softmax probability per pixel, (H, W) float32."""
    return pixel_stats(check_prob(prob), argmax=True)["p1"]


def _cra_e(plogp: np.ndarray, C: int) -> np.ndarray:
    if C < 2:
        return np.zeros_like(plogp)
    plogp *= np.float32(1.0 / (C * math.log(C)))
    return plogp


def cra_entropy(prob) -> np.ndarray:
    """CRA's per-pixel entropy ``E = mean_c(-p_c log2 p_c) / log2 C``, (H, W) float32 in [0, 1/C]."""
    p = check_prob(prob)
    return _cra_e(pixel_stats(p, plogp=True)["plogp"], p.shape[0])


class ClassEntropyStats:
    """Pool statistics for CRA, accumulated one image at a time.

    ``update(prob, valid=None)`` adds the predicted-class pixel counts and the sums of E per
    predicted class. ``rare_classes()``: classes whose predicted share of all counted pixels
    is < ``rare_pct``. ``class_thresholds()``: (C,) float64 thresholds for ``cra_trust_mask``.
    """

    def __init__(self, num_classes: int, ent_thresh: float = CRA_ENT_THRESH,
                 rare_pct: float = CRA_RARE_PCT, rare_factor: float = CRA_RARE_FACTOR):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if not rare_factor > 0:
            raise ValueError("rare_factor must be > 0")
        self.num_classes = int(num_classes)
        self.ent_thresh = float(ent_thresh)
        self.rare_pct = float(rare_pct)
        self.rare_factor = float(rare_factor)
        self.counts = np.zeros(self.num_classes, dtype=np.int64)
        self.ent_sums = np.zeros(self.num_classes, dtype=np.float64)
        self.images = 0

    def update(self, prob, valid=None) -> None:
        p = check_prob(prob)
        if p.shape[0] != self.num_classes:
            raise ValueError(f"prob has {p.shape[0]} classes, stats expect {self.num_classes}")
        st = pixel_stats(p, argmax=True, plogp=True)
        pred, e = st["pred"], _cra_e(st["plogp"], p.shape[0])
        if valid is not None:
            valid = np.asarray(valid, dtype=bool)
            pred, e = pred[valid], e[valid]
        pred = pred.ravel()
        self.counts += np.bincount(pred, minlength=self.num_classes)[: self.num_classes]
        self.ent_sums += np.bincount(pred, weights=e.ravel().astype(np.float64),
                                     minlength=self.num_classes)[: self.num_classes]
        self.images += 1

    def merge(self, other: "ClassEntropyStats") -> None:
        self.counts += other.counts
        self.ent_sums += other.ent_sums
        self.images += other.images

    def class_share(self) -> np.ndarray:
        tot = self.counts.sum()
        return self.counts / tot if tot else np.zeros(self.num_classes)

    def class_mean_entropy(self) -> np.ndarray:
        """Mean E over the pixels predicted as each class (NaN for classes never predicted)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.ent_sums / np.maximum(self.counts, 1), np.nan)

    def rare_classes(self) -> np.ndarray:
        """Bool (C,): predicted share < rare_pct (classes never predicted count as rare)."""
        return self.class_share() < self.rare_pct

    def class_thresholds(self) -> np.ndarray:
        """(C,) thresholds on the raw E: ent_thresh, or ent_thresh / rare_factor for rare classes."""
        t = np.full(self.num_classes, self.ent_thresh, dtype=np.float64)
        t[self.rare_classes()] = self.ent_thresh / self.rare_factor
        return t


def cra_trust_mask(prob, class_thresholds) -> np.ndarray:
    """(H, W) bool: True = trusted (``E <= threshold[argmax]``), False = untrusted.

    ``class_thresholds``: (C,) from ``ClassEntropyStats.class_thresholds()``, or a scalar.
    """
    p = check_prob(prob)
    st = pixel_stats(p, argmax=True, plogp=True)
    return _trust(st["pred"], _cra_e(st["plogp"], p.shape[0]), class_thresholds, p.shape[0])


def _trust(pred, e, class_thresholds, C) -> np.ndarray:
    t = np.asarray(class_thresholds, dtype=np.float64)
    if t.ndim == 0:
        return e <= t
    if t.shape != (C,):
        raise ValueError(f"class_thresholds must have shape ({C},), got {t.shape}")
    # compare in float64 on the float32 E (threshold array indexed by the predicted class)
    return e.astype(np.float64) <= np.take(t, pred)


def confidence_maps(prob, class_thresholds=None) -> dict:
    """Pseudo-label maps from one pass over ``prob``: ``pred`` (argmax), ``confidence``
    (max softmax), ``cra_entropy`` (E) and, when ``class_thresholds`` is given, ``trusted``."""
    p = check_prob(prob)
    st = pixel_stats(p, argmax=True, plogp=True)
    e = _cra_e(st["plogp"], p.shape[0])
    out = {"pred": st["pred"], "confidence": st["p1"], "cra_entropy": e}
    if class_thresholds is not None:
        out["trusted"] = _trust(st["pred"], e, class_thresholds, p.shape[0])
    return out


def cra_untrusted_from_entropy(pred, entropy, class_thresholds) -> np.ndarray:
    """Untrusted (H,W) bool from a cached argmax ``pred`` and CRA entropy ``E`` (no softmax needed):
    the complement of the trust rule of :func:`cra_trust_mask`."""
    pred = np.asarray(pred)
    return ~_trust(pred, np.asarray(entropy, np.float32), class_thresholds, len(np.asarray(class_thresholds)))
