"""Superpixel queries: over-segment a target image once, score every superpixel, pick the best.

A superpixel query asks for ONE class (the superpixel's dominant class, one click), as in the
superpixel-based active learning of Cai et al. ("Revisiting Superpixels for Active Learning in
Semantic Segmentation with Realistic Annotation Costs", CVPR 2021) and D2ADA (Wu et al., 2022).

Over-segmentation: scikit-image SLIC (Achanta et al., TPAMI 2012) on the image at the label
resolution, in CIELAB, ``n_segments = H*W / size`` (``size``: the wanted mean area in label pixels,
by default that of the square region, (2r+1)^2), ``compactness=10``, ``sigma=1``, ``start_label=0``,
``enforce_connectivity=True`` (every superpixel is one 4-connected piece). The loop caches the maps
(app/session.py); nothing here does I/O.

Scores per superpixel ``s`` (pixels ``u`` in ``s``, ``y = argmax p``, ``n_c`` = pixels of ``s``
predicted ``c``, ``n = |s|``), following RIPU's region-based formula with the superpixel in place of
the square window:

* ``ripu``:  ``P(s) = -sum_c (n_c/n) log(n_c/n + 1e-6) / log 19``, ``U(s) = mean_u H(u) / log 19``,
  score ``P * U`` (the square RA score's terms, over the superpixel);
* ``ent``:   mean pixel entropy; ``sconf``: mean of ``1 - (p1 - p2)``; ``rand``: one uniform draw
  per superpixel.
"""
from __future__ import annotations

import numpy as np

from .baselines import ent_score, sconf_score
from .ripu import RIPU_LOG_NORM
from .stats import EPS, check_prob, pixel_stats

__all__ = ["SLIC_PARAMS", "slic_segments", "segment_scores", "select_segments",
           "dominant_class", "segment_box"]

SLIC_PARAMS = dict(compactness=10.0, sigma=1.0, start_label=0, enforce_connectivity=True)


def slic_segments(image: np.ndarray, size: int) -> np.ndarray:
    """SLIC superpixels of ``image`` (uint8 (H, W, 3) RGB, at the label resolution): int32 (H, W) ids
    0..K-1, every id present, with a mean area of about ``size`` pixels. Raises ValueError for a
    non-RGB image or ``size < 4``."""
    from skimage.segmentation import slic

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB, got shape {img.shape}")
    size = int(size)
    if size < 4:
        raise ValueError(f"superpixel size must be at least 4 pixels, got {size}")
    H, W = img.shape[:2]
    seg = slic(img, n_segments=max(1, round(H * W / size)), **SLIC_PARAMS)
    _, seg = np.unique(seg, return_inverse=True)   # consecutive ids 0..K-1
    return seg.reshape(H, W).astype(np.int32)


def _means(values: np.ndarray, seg: np.ndarray, area: np.ndarray) -> np.ndarray:
    return (np.bincount(seg, weights=values.ravel().astype(np.float64), minlength=area.size)
            / np.maximum(area, 1)).astype(np.float32)


def segment_scores(prob, segments: np.ndarray, strategy: str, rng=None) -> np.ndarray:
    """float32 (K,) score of every superpixel (higher = ask first) for a (C, H, W) softmax ``prob``
    and the (H, W) int ids of :func:`slic_segments`. ``strategy``: ripu | ent | sconf | rand (see the
    module docstring); ``rng`` (np.random.Generator or seed) for rand. Raises ValueError for an
    unknown strategy or mismatched shapes."""
    p = check_prob(prob)
    seg = np.asarray(segments)
    if seg.shape != p.shape[1:]:
        raise ValueError(f"segments of shape {seg.shape} for a softmax of {p.shape[1:]}")
    s = str(strategy).lower()
    flat = seg.ravel().astype(np.intp)
    area = np.bincount(flat)
    K = area.size
    if s == "rand":
        g = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        return g.random(K, dtype=np.float32)
    if s == "ent":
        return _means(ent_score(p), flat, area)
    if s == "sconf":
        return _means(sconf_score(p), flat, area)
    if s != "ripu":
        raise ValueError(f"unknown acquisition strategy {strategy!r} for superpixels; expected ripu, rand, ent, sconf")
    st = pixel_stats(p, argmax=True, entropy=True)
    C = p.shape[0]
    counts = np.bincount(flat * C + st["pred"].ravel(), minlength=K * C).reshape(K, C).astype(np.float32)
    frac = counts / np.maximum(area, 1)[:, None].astype(np.float32)
    impurity = -(frac * np.log(frac + np.float32(EPS))).sum(1) / np.float32(RIPU_LOG_NORM)
    uncertainty = _means(st["entropy"], flat, area) / np.float32(RIPU_LOG_NORM)
    return (impurity * uncertainty).astype(np.float32)


def select_segments(order_score: np.ndarray, segments: np.ndarray, labeled: np.ndarray | None, *,
                    n: int | None = None, pixels: float | None = None) -> np.ndarray:
    """Superpixel ids to ask, best first: those with no pixel in ``labeled`` (bool (H, W)), in
    descending ``order_score`` (float (K,), NaN/-inf never picked; ties to the smaller id). Stops at
    ``n`` superpixels, or at ``pixels`` label pixels (the next superpixel is taken while that brings
    the total closer to ``pixels``; the first one is always taken); with neither, every free
    superpixel. Returns int64 (k,)."""
    seg = np.asarray(segments)
    score = np.asarray(order_score, dtype=np.float64)
    K = score.size
    area = np.bincount(seg.ravel(), minlength=K)
    free = score > -np.inf   # NaN compares False
    if labeled is not None and np.any(labeled):
        touched = np.bincount(seg[np.asarray(labeled, bool)].ravel(), minlength=K) > 0
        free &= ~touched
    ids = np.flatnonzero(free)
    ids = ids[np.lexsort((ids, -score[ids]))]
    if n is not None:
        return ids[:max(0, int(n))].astype(np.int64)
    if pixels is None:
        return ids.astype(np.int64)
    total, out = 0, []
    for k in ids.tolist():
        a = int(area[k])
        if total >= pixels or (total + a - pixels > pixels - total and out):
            break
        out.append(k)
        total += a
    return np.asarray(out, dtype=np.int64)


def segment_box(segments: np.ndarray, k: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The bounding box (y0, x0, y1, x1), end-exclusive, of superpixel ``k`` and its uint8 shape mask
    over that box (1 inside the superpixel, 0 outside). Raises ValueError for an absent id."""
    ys, xs = np.nonzero(np.asarray(segments) == k)
    if ys.size == 0:
        raise ValueError(f"superpixel {k} is not in the map")
    y0, x0, y1, x1 = int(ys.min()), int(xs.min()), int(ys.max()) + 1, int(xs.max()) + 1
    shape = (np.asarray(segments)[y0:y1, x0:x1] == k).astype(np.uint8)
    return (y0, x0, y1, x1), shape


def dominant_class(values: np.ndarray, ignore: int = 255) -> int:
    """The most frequent value of ``values`` (uint8 trainIds) that is not ``ignore``; ``ignore`` when
    every value is. Ties go to the smaller id. What the oracle answers for a superpixel."""
    v = np.asarray(values).ravel()
    v = v[v != ignore]
    if v.size == 0:
        return int(ignore)
    return int(np.bincount(v).argmax())
