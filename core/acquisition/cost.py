"""Annotation cost in human seconds: a simulated oracle's clock, and a cost model that predicts it.

**Simulated time (the oracle's clock).** Clicks are counted as Cai et al. count them ("Revisiting
Superpixels for Active Learning in Semantic Segmentation with Realistic Annotation Costs", CVPR 2021,
their official ``compute_anno_cost.py``): a pixel query or a superpixel answered with its dominant
class is one click; a region drawn exactly (a square, or a superpixel answered "mixed" / with
``--oracle-answer exact``) costs one click per connected class component inside it, plus the polygon
vertices inside it, plus (a square only) one per place where a class boundary crosses its edge (a
superpixel's edge follows image edges and is shown, so nothing is clicked along it). Our
ground truth has no polygons, so the vertices are those of ``cv2.approxPolyDP`` (epsilon 1 label
pixel) of every component's outer contour, counted where they lie strictly inside the region.
Seconds = clicks x ``SECONDS_PER_CLICK`` = 1.75 s: Papadopoulos et al. ("Extreme clicking for
efficient object annotation", ICCV 2017) measure 7 s for a box made of 4 clicks.

**Cost model (what a query will take, known before asking).** Features of a query from the model's
prediction over the query's pixels (:data:`FEATURES`): a constant, the area (per 100 label pixels),
the number of predicted classes, the predicted boundary pixels (per 10; a pixel is on a boundary
when its right or lower neighbour has another predicted class) and the mean uncertainty
``1 - max_c p_c``. Seconds = the features . non-negative weights, one weight vector per unit
(square | superpixel | pixel), fitted by non-negative least squares on answered queries
(:meth:`CostModel.fit`). :data:`DEFAULT_WEIGHTS` ships, fitted by ``bench/effort.py --fit-default``
on the simulated clock above over the embedded benchmark (warm-up model's predictions); a run refits
on its own logged answers (``labels.ms``) once a unit has ``MIN_FIT`` of them.
"""
from __future__ import annotations

import math

import numpy as np

from ._util import box_sum, check_radius, window_count
from .stats import check_prob, pixel_stats

__all__ = ["SECONDS_PER_CLICK", "UNITS", "FEATURES", "DEFAULT_WEIGHTS", "MIN_FIT", "CostModel",
           "boundary_map", "square_features", "pixel_features", "segment_features", "region_clicks",
           "seconds_of_clicks", "median_abs_error"]

SECONDS_PER_CLICK = 1.75
UNITS = ("square", "superpixel", "pixel")
FEATURES = ("one", "area_100px", "classes", "boundary_10px", "uncertainty")
MIN_FIT = 10

# Fitted by `python bench/effort.py --fit-default --init <the seed-0 warm-up, 42.5 mIoU on synthcity v5>` on
# 120 target-train images (3840 RIPU + random candidates per unit); seconds per unit of each feature, in
# FEATURES order. Squares (17x17): held-out median absolute error 5.44 s for a mean of 20.0 s (17.84 s
# predicting the mean).
# Superpixels answered with their dominant class and pixels take one click each, 1.75 s.
DEFAULT_WEIGHTS: dict[str, tuple[float, ...]] = {
    "square": (0.0, 0.0, 4.16, 1.293, 0.0),
    "superpixel": (1.75, 0.0, 0.0, 0.0, 0.0),
    "pixel": (1.75, 0.0, 0.0, 0.0, 0.0),
}


def boundary_map(pred: np.ndarray) -> np.ndarray:
    """bool (H, W): pixels whose right or lower neighbour has another class in ``pred`` (H, W)."""
    pred = np.asarray(pred)
    b = np.zeros(pred.shape, bool)
    b[:, :-1] |= pred[:, :-1] != pred[:, 1:]
    b[:-1, :] |= pred[:-1, :] != pred[1:, :]
    return b


def _stats(prob):
    st = pixel_stats(check_prob(prob), argmax=True)
    return st["pred"], st["p1"]


def square_features(prob, radius: int) -> np.ndarray:
    """float32 (H, W, F) features of the clipped (2r+1)^2 square centred on every pixel of a
    (C, H, W) softmax (box sums; the square selection's candidates)."""
    r = check_radius(radius)
    pred, p1 = _stats(prob)
    H, W = pred.shape
    n = window_count(H, W, r).astype(np.float32)
    out = np.empty((H, W, len(FEATURES)), np.float32)
    out[..., 0] = 1.0
    out[..., 1] = n / 100.0
    def window_sum(a, dtype):   # over the clipped square around every pixel
        return box_sum(box_sum(a, r, axis=0, dtype=dtype), r, axis=1, dtype=dtype)

    out[..., 2] = sum(window_sum((pred == c).view(np.uint8), np.int32) > 0 for c in np.unique(pred).tolist())
    out[..., 3] = window_sum(boundary_map(pred).view(np.uint8), np.int32) / 10.0
    out[..., 4] = window_sum(1.0 - p1, np.float32) / n
    return out


def pixel_features(prob) -> np.ndarray:
    """float32 (H, W, F) features of every pixel as a one-pixel query."""
    pred, p1 = _stats(prob)
    H, W = pred.shape
    out = np.empty((H, W, len(FEATURES)), np.float32)
    out[..., 0] = 1.0
    out[..., 1] = 0.01
    out[..., 2] = 1.0
    out[..., 3] = boundary_map(pred) / 10.0
    out[..., 4] = 1.0 - p1
    return out


def segment_features(prob, segments: np.ndarray) -> np.ndarray:
    """float32 (K, F) features of every superpixel (ids 0..K-1 of ``segments`` (H, W))."""
    pred, p1 = _stats(prob)
    seg = np.asarray(segments).ravel().astype(np.intp)
    C = int(pred.max()) + 1
    area = np.bincount(seg).astype(np.float64)
    K = area.size
    out = np.empty((K, len(FEATURES)), np.float32)
    out[:, 0] = 1.0
    out[:, 1] = area / 100.0
    out[:, 2] = (np.bincount(seg * C + pred.ravel(), minlength=K * C).reshape(K, C) > 0).sum(1)
    out[:, 3] = np.bincount(seg, weights=boundary_map(pred).ravel(), minlength=K) / 10.0
    out[:, 4] = np.bincount(seg, weights=(1.0 - p1).ravel().astype(np.float64), minlength=K) / np.maximum(area, 1)
    return out


class CostModel:
    """Predicted seconds of a query: ``features @ weights[unit]`` (non-negative weights, one vector per
    unit in :data:`UNITS`), floored at ``SECONDS_PER_CLICK / 4``. ``weights`` default to
    :data:`DEFAULT_WEIGHTS`."""

    def __init__(self, weights: dict | None = None):
        self.weights = {u: np.asarray(w, np.float64) for u, w in (weights or DEFAULT_WEIGHTS).items()}
        self.fitted: dict[str, int] = {}   # unit -> answers the weights were fitted on (absent: default)

    def predict(self, unit: str, features) -> np.ndarray:
        """float32 seconds, the shape of ``features`` without its last axis (F = len(FEATURES))."""
        if unit not in self.weights:
            raise ValueError(f"unknown query unit {unit!r}; expected one of {', '.join(UNITS)}")
        f = np.asarray(features, np.float32)
        return np.maximum(f @ self.weights[unit].astype(np.float32), np.float32(SECONDS_PER_CLICK / 4))

    def fit(self, unit: str, features, seconds, min_answers: int = MIN_FIT) -> bool:
        """Refit ``unit``'s weights by non-negative least squares on (N, F) ``features`` and (N,)
        ``seconds`` of answered queries; keeps the current weights (and returns False) below
        ``min_answers`` answers or when the fit is degenerate."""
        from scipy.optimize import nnls

        f = np.asarray(features, np.float64).reshape(-1, len(FEATURES))
        s = np.asarray(seconds, np.float64).ravel()
        ok = np.isfinite(s) & np.isfinite(f).all(1)
        f, s = f[ok], s[ok]
        if s.size < max(1, min_answers):
            return False
        w, _ = nnls(f, s)
        if not np.isfinite(w).all() or not w.any():
            return False
        self.weights[unit] = w
        self.fitted[unit] = int(s.size)
        return True

    def describe(self, unit: str) -> str:
        w = self.weights[unit]
        src = f"fitted on {self.fitted[unit]} answers" if unit in self.fitted else "default"
        return f"{unit}: " + " + ".join(f"{v:.2f}*{n}" for v, n in zip(w, FEATURES) if v) + f" s ({src})"


def _crossings(edge: np.ndarray) -> int:
    """Places along a 1-D run of labels where the class changes."""
    e = np.asarray(edge)
    return int(np.count_nonzero(e[1:] != e[:-1])) if e.size > 1 else 0


def region_clicks(gt: np.ndarray, shape: np.ndarray | None = None, ignore: int = 255) -> int:
    """Clicks to draw the ground truth ``gt`` (uint8 (h, w) trainIds of a query's box) exactly, by Cai et
    al.'s rule (module docstring); ``shape`` (uint8/bool (h, w), 1 = inside the query) for a superpixel,
    whose pixels outside are not drawn. Void pixels (``ignore``) count as a class of their own (the
    annotator leaves them). A query of one class is 1 click."""
    import cv2

    g = np.asarray(gt, np.uint8)
    inside = np.ones(g.shape, bool) if shape is None else np.asarray(shape).astype(bool)
    if not inside.any():
        return 0
    vals = np.unique(g[inside])
    if vals.size == 1:
        return 1
    h, w = g.shape
    clicks = 0
    if shape is not None:   # a superpixel's own border is no drawn edge: vertices near it are not clicked
        u8, k3 = inside.astype(np.uint8), np.ones((3, 3), np.uint8)
        near = cv2.dilate(u8, k3) - cv2.erode(u8, k3)
    for c in vals.tolist():
        m = ((g == c) & inside).astype(np.uint8)
        n_comp, _ = cv2.connectedComponents(m, connectivity=4)
        clicks += n_comp - 1
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        for cnt in contours:
            poly = cv2.approxPolyDP(cnt, 1.0, True).reshape(-1, 2)
            xs, ys = poly[:, 0], poly[:, 1]
            strict = (xs > 0) & (xs < w - 1) & (ys > 0) & (ys < h - 1)
            if shape is not None:
                strict &= near[np.clip(ys, 0, h - 1), np.clip(xs, 0, w - 1)] == 0
            clicks += int(np.count_nonzero(strict))
    if shape is None:   # class changes along the box's edge
        clicks += sum(_crossings(e) for e in (g[0], g[-1], g[:, 0], g[:, -1]))
    return int(clicks)


def seconds_of_clicks(clicks) -> float:
    """Simulated seconds of ``clicks`` clicks."""
    return float(clicks) * SECONDS_PER_CLICK


def median_abs_error(pred, true) -> float:
    """Median absolute error in seconds (NaN when empty)."""
    p, t = np.asarray(pred, float), np.asarray(true, float)
    return float(np.median(np.abs(p - t))) if p.size else math.nan
