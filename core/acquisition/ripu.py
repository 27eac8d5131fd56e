"""RIPU scores (Xie et al., CVPR 2022), with the semantics of the official code.

As the official code computes it (BIT-DA/RIPU, core/active/floating_region.py and spatial_purity.py). Notation: ``p`` softmax (C, H, W),
``y = argmax p`` (first max on ties), window ``N_r(i, j)`` = the (2r+1)^2 square around
(i, j) clipped to the image, ``n`` = number of in-image pixels in it, ``n_c`` = number of
them with ``y == c``. Every log carries ``+ 1e-6`` inside, as in the official code.

RA (``mode="region"``, official k = 1)::

    H(u)   = -sum_c p_c log(p_c + 1e-6) / log(19)
    P(i,j) = -sum_c (n_c/n) log(n_c/n + 1e-6) / log(19)      # region impurity
    U(i,j) = sum_{u in N_r(i,j)} H(u) / n                      # mean over in-image pixels
    S      = P * U

PA (``mode="pixel"``, official k = 32)::

    S(i,j) = [-sum_c p_c log(p_c + 1e-6)] * [-sum_c (n_c/n) log(n_c/n + 1e-6)]   # natural logs

i.e. PA uses the pixel's own (unnormalised) entropy as uncertainty, not a window mean.

Details kept on purpose:

* ``log(19)`` is hard-coded (``RIPU_LOG_NORM``) as in the official code, also when C != 19
  (e.g. 16-class SYNTHIA). It is a constant factor and changes no ranking.
* A pure window (one predicted class) has impurity ``-log(1 + 1e-6)`` (RA: divided by
  log 19, about -3.24e-7 in float32), i.e. slightly NEGATIVE, not 0. Its score is therefore
  slightly negative and, among pure windows, the one with the LOWEST uncertainty ranks
  first. This only matters once every impure window is used up; we keep it for fidelity.
* Counts and means are over in-image pixels only (no border bias), like the official code.
* Everything is float32, like the official (GPU) code; results agree with a float64
  evaluation to about 1e-6 relative.
"""
from __future__ import annotations

import math
import sys
from functools import lru_cache

import numpy as np

from ._util import box_sum, check_radius, run_row_chunks, window_count
from .stats import EPS, check_prob, pixel_stats

__all__ = ["RIPU_LOG_NORM", "ripu_score", "window_impurity", "check_mode"]

RIPU_LOG_NORM = math.log(19.0)  # hard-coded in the official code

_MODES = {"region": "region", "ra": "region", "pixel": "pixel", "pa": "pixel"}


def check_mode(mode) -> str:
    m = _MODES.get(str(mode).lower()) if mode is not None else None
    if m is None:
        raise ValueError(f"mode must be 'region' (RA) or 'pixel' (PA), got {mode!r}")
    return m


def _field_bits(n_max: int) -> int:
    """Width of a packed counter that holds 0..n_max (one of 4, 8, 16, 32)."""
    for b in (4, 8, 16, 32):
        if n_max < (1 << b):
            return b
    raise ValueError("window too large")


@lru_cache(maxsize=16)
def _group_table(bits: int, full: int) -> np.ndarray:
    """T[v] = sum over the fields of the 16-bit value v of -(k/N) log(k/N + 1e-6), k = field,
    N = ``full`` (float32 terms, like the official arithmetic; summed in float64)."""
    v = np.arange(1 << 16, dtype=np.int64)
    mask = (1 << bits) - 1
    tot = np.zeros(1 << 16, dtype=np.float64)
    for j in range(16 // bits):
        k = ((v >> (bits * j)) & mask).astype(np.float32)
        x = k / np.float32(full)
        f = -(x * np.log(x + np.float32(EPS)))
        f[k > full] = 0.0  # cannot occur
        tot += f.astype(np.float64)
    return tot.astype(np.float32)


def window_impurity(pred: np.ndarray, num_classes: int, radius: int) -> np.ndarray:
    """Entropy (natural log, +1e-6 inside the log) of the predicted-class histogram of the
    clipped (2r+1)^2 window around every pixel: ``-sum_c (n_c/n) log(n_c/n + 1e-6)``.

    ``pred`` is an (H, W) integer class map with values in [0, num_classes).

    How: the one-hot maps of the classes present (per row chunk) are packed as small counters into uint64
    words (4 bits per class for r = 1, so 16 classes per word); one separable box sum per
    word counts every class at once (wrap-around uint64 arithmetic keeps window differences
    of prefix sums exact). Full-window pixels then read the impurity of 1-4 counters at a
    time from a 65536-entry table; border pixels (n < (2r+1)^2) are evaluated in float32.
    """
    r = check_radius(radius)
    pred = np.asarray(pred)
    H, W = pred.shape
    N = (2 * r + 1) ** 2
    bits = _field_bits(N)
    per_word = 64 // bits
    n_lut = max(int(num_classes), int(pred.max()) + 1 if pred.size else 1)
    one = np.uint64(1)

    def packing(sub):
        """Per-word class -> counter tables for the classes present in ``sub``."""
        present = np.flatnonzero(np.bincount(sub.ravel(), minlength=n_lut))
        n_words = -(-present.size // per_word)
        luts = np.zeros((n_words, n_lut), dtype=np.uint64)
        used = []  # number of counters used in each word
        for w in range(n_words):
            cls = present[w * per_word:(w + 1) * per_word]
            luts[w, cls] = np.left_shift(one, (np.arange(cls.size) * bits).astype(np.uint64))
            used.append(cls.size)
        return luts, used

    table = _group_table(bits, N) if bits <= 16 else None
    fields_per_group = 16 // bits if bits <= 16 else 0
    little = sys.byteorder == "little"
    nh = (np.minimum(np.arange(H) + r, H - 1) - np.maximum(np.arange(H) - r, 0) + 1)
    nw = (np.minimum(np.arange(W) + r, W - 1) - np.maximum(np.arange(W) - r, 0) + 1)
    out = np.empty((H, W), dtype=np.float32)
    fmask = np.uint64((1 << bits) - 1)

    def float_block(cnts, used, rs: slice, cs: slice, a: int) -> np.ndarray:
        n = np.multiply.outer(nh[a + rs.start:a + rs.stop], nw[cs]).astype(np.float32)
        tot = np.zeros(n.shape, dtype=np.float32)
        for w, cw in enumerate(cnts):
            blk = cw[rs, cs]
            for j in range(used[w]):
                k = ((blk >> np.uint64(bits * j)) & fmask).astype(np.float32)
                x = k / n
                tot -= x * np.log(x + np.float32(EPS))
        return tot

    def work(a: int, b: int) -> None:
        a0, b0 = max(0, a - r), min(H, b + r)
        sub = pred[a0:b0]
        acc = out[a:b]
        luts, used = packing(sub)
        n_words = len(used)
        cnts = []
        sub_i = sub.astype(np.intp)  # np.take with uint8 indices into a uint64 table is very slow
        for w in range(n_words):
            packed = np.take(luts[w], sub_i)
            v = box_sum(packed, r, axis=0)[a - a0:b - a0]
            cnts.append(box_sum(v, r, axis=1))
        rows = b - a
        if table is not None:
            acc.fill(0.0)
            for w, cw in enumerate(cnts):
                g16 = cw.view(np.uint16).reshape(rows, W, 4)
                for g in range(-(-used[w] // fields_per_group)):
                    acc += np.take(table, g16[:, :, g if little else 3 - g])
            # border pixels (window clipped): exact float path, overwriting
            blocks = []
            top = max(0, min(r - a, rows))  # rows with global index < r
            bot = max(0, min(b - (H - r), rows))  # rows with global index >= H - r
            if top:
                blocks.append((slice(0, top), slice(0, W)))
            if bot:
                blocks.append((slice(rows - bot, rows), slice(0, W)))
            lo_r, hi_r = top, rows - bot
            if hi_r > lo_r:
                cl = min(r, W)
                if cl:
                    blocks.append((slice(lo_r, hi_r), slice(0, cl)))
                cr = max(cl, W - r)
                if cr < W:
                    blocks.append((slice(lo_r, hi_r), slice(cr, W)))
            for rs, cs in blocks:
                acc[rs, cs] = float_block(cnts, used, rs, cs, a)
        else:
            acc[:] = float_block(cnts, used, slice(0, rows), slice(0, W), a)

    rows = max(8, 4 * r, (1 << 16) // max(1, W))  # halo of 2r rows per chunk: keep it <= 1/2
    run_row_chunks(H, work, rows)
    return out


def ripu_score(prob, mode, radius) -> dict:
    """RIPU maps of one image.

    Args:
        prob: (C, H, W) float32 softmax probabilities (at label resolution).
        mode: ``"region"`` (RA) or ``"pixel"`` (PA).
        radius: window radius k (official: 1 for RA, 32 for PA).

    Returns:
        dict of (H, W) float32 arrays ``impurity``, ``uncertainty``, ``score``.
        RA: impurity and uncertainty normalised by log(19), ``score = impurity * uncertainty``.
        PA: impurity and uncertainty (= the pixel's own entropy) in nats, unnormalised.
    """
    p = check_prob(prob)
    m = check_mode(mode)
    r = check_radius(radius)
    C, H, W = p.shape
    st = pixel_stats(p, argmax=True, entropy=True)
    imp = window_impurity(st["pred"], C, r)
    ent = st["entropy"]
    if m == "pixel":
        return {"impurity": imp, "uncertainty": ent, "score": ent * imp}
    inv = np.float32(1.0 / RIPU_LOG_NORM)
    imp *= inv
    ent *= inv
    u = box_sum(box_sum(ent, r, axis=0, dtype=np.float32), r, axis=1, dtype=np.float32)
    # divide by n = n_rows(i) * n_cols(j) without building an (H, W) count map
    cnt = window_count(H, 1, r)[:, 0].astype(np.float32), window_count(1, W, r)[0].astype(np.float32)
    u /= cnt[0][:, None]
    u /= cnt[1][None, :]
    return {"impurity": imp, "uncertainty": u, "score": imp * u}
