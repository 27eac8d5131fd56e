"""Greedy per-image selection of RIPU regions (RA) or pixels (PA), sort-based.

The official loop (``core/active/build.py``) repeats ``n`` times: take the argmax of the score
map, label around it, and set the score to -inf on a suppression square around it. Since a
suppression only removes candidates, this equals one pass over the candidates in
descending score order, accepting every candidate not yet suppressed. That is what we do:

* forbidden centres at the start = ``dilate(labeled, r)`` (square / Chebyshev dilation), so a
  new (2r+1)^2 region never touches an earlier label (RA), and user-drawn labels are respected;
  this equals the official ``active`` mask for labels the algorithm made itself;
* RA (``mode="region"``): label the (2r+1)^2 square around the centre, clipped at the border,
  and suppress the radius-2r square, so regions never overlap (within or across rounds);
* PA (``mode="pixel"``): label the centre pixel, suppress the radius-r square;
* NaN and -inf scores are never picked; the loop stops cleanly when nothing is left (the
  official code would re-pick pixel (0, 0)), so ``k <= n`` and no centre is picked twice;
* ties go to the official order, the first maximum in column-major order (smallest x, then
  smallest y), via a stable sort on column-major indices.

Only the top ``n * (2s+1)^2`` candidates (s = suppression radius) can ever be examined,
because each accepted pick suppresses at most (2s+1)^2 of them; we partition those out,
sort them, and walk them. The walk is a Python loop over candidates that are still free at
the start of each block (blocks are pre-filtered with one vectorised lookup).
"""
from __future__ import annotations

import numpy as np

from ._util import check_radius, dilate_square
from .ripu import check_mode

__all__ = ["select_queries", "suppression_radius"]


def suppression_radius(mode: str, radius: int) -> int:
    return 2 * radius if check_mode(mode) == "region" else radius


def select_queries(score, labeled, n, mode, radius):
    """Greedy selection of ``n`` region centres (RA) or pixels (PA) on one image.

    Args:
        score: (H, W) float score map (higher = more informative). NaN/-inf = never pick.
        labeled: (H, W) bool mask of pixels already labeled (any source), or None.
        n: number of picks wanted (>= 0).
        mode: "region" or "pixel".
        radius: RIPU radius k.

    Returns:
        ``(picks, newly)``: ``picks`` int64 (k, 2) array of (y, x) centres in pick order,
        k <= n; ``newly`` (H, W) bool mask of the pixels labeled by these picks.
    """
    m = check_mode(mode)
    r = check_radius(radius)
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    score = np.asarray(score)
    if score.ndim != 2:
        raise ValueError(f"score must be (H, W), got shape {score.shape}")
    H, W = score.shape
    if labeled is None:
        labeled = np.zeros((H, W), dtype=bool)
    labeled = np.asarray(labeled, dtype=bool)
    if labeled.shape != (H, W):
        raise ValueError(f"labeled shape {labeled.shape} != score shape {(H, W)}")
    s = 2 * r if m == "region" else r
    lr = r if m == "region" else 0
    newly = np.zeros((H, W), dtype=bool)
    picks: list[tuple[int, int]] = []
    if n == 0 or H == 0 or W == 0:
        return np.zeros((0, 2), dtype=np.int64), newly

    blocked = dilate_square(labeled, r)
    flat = score.ravel()
    free = flat > -np.inf  # drops NaN and -inf
    if blocked.any():
        free &= ~blocked.ravel()
    n_free = int(np.count_nonzero(free))
    if n_free == 0:
        return np.zeros((0, 2), dtype=np.int64), newly
    K = min(n_free, n * (2 * s + 1) ** 2)
    if K < n_free:
        # the top-K values, widened to keep every candidate tied with the K-th one
        masked = flat if n_free == flat.size else np.where(free, flat, -np.inf)
        kth = np.partition(masked, masked.size - K)[masked.size - K]
        cand = np.flatnonzero(free & (flat >= kth))
    else:
        cand = np.flatnonzero(free)
    vals = flat[cand]
    ys_all, xs_all = np.divmod(cand, W)
    # descending score; ties: smallest x, then smallest y (official column-major first max)
    order = np.lexsort((ys_all, xs_all, -vals.astype(np.float64)))
    ys_all, xs_all = ys_all[order], xs_all[order]

    pos, total, block = 0, ys_all.size, 256
    while pos < total and len(picks) < n:
        ys = ys_all[pos:pos + block]
        xs = xs_all[pos:pos + block]
        pos += block
        block = min(block * 2, 1 << 16)
        ok = ~blocked[ys, xs]
        for y, x in zip(ys[ok].tolist(), xs[ok].tolist()):
            if blocked[y, x]:
                continue
            picks.append((y, x))
            blocked[max(y - s, 0):y + s + 1, max(x - s, 0):x + s + 1] = True
            newly[max(y - lr, 0):y + lr + 1, max(x - lr, 0):x + lr + 1] = True
            if len(picks) >= n:
                break
    newly &= ~labeled  # no-op by construction (centres avoid dilate(labeled, r))
    return np.asarray(picks, dtype=np.int64).reshape(-1, 2), newly
