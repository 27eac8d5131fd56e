"""One cache-friendly pass over a softmax map: argmax, pixel entropy, top-2 probabilities.

All per-pixel statistics the scorers and confidence maps need come from here, computed on
row chunks (about 1 MB of ``prob`` each) on a small thread pool, in float32.
"""
from __future__ import annotations

import numpy as np

from ._util import run_row_chunks

__all__ = ["EPS", "check_prob", "pixel_stats"]

EPS = 1e-6  # the official code adds 1e-6 inside every log


def check_prob(prob) -> np.ndarray:
    p = np.asarray(prob)
    if p.ndim != 3:
        raise ValueError(f"prob must be a (C, H, W) softmax map, got shape {p.shape}")
    if p.shape[0] < 1 or p.shape[1] < 1 or p.shape[2] < 1:
        raise ValueError(f"prob must be non-empty, got shape {p.shape}")
    if p.dtype != np.float32:
        p = p.astype(np.float32)
    return p


def _rows_per_chunk(C: int, W: int, target_elems: int = 1 << 18) -> int:
    return max(1, target_elems // max(1, C * W))


def pixel_stats(prob: np.ndarray, *, argmax: bool = False, entropy: bool = False,
                top2: bool = False, plogp: bool = False) -> dict:
    """Per-pixel statistics of a (C, H, W) float32 softmax map.

    Returns a dict with the requested keys:
      ``pred``   (H, W) uint8/int32 argmax, ties to the FIRST max (like ``torch.max``/``np.argmax``);
      ``p1``     (H, W) float32 max probability (returned with ``argmax`` or ``top2``);
      ``p2``     (H, W) float32 second largest probability (``top2``);
      ``entropy`` (H, W) float32 ``-sum_c p_c log(p_c + 1e-6)`` (natural log, official RIPU form);
      ``plogp``  (H, W) float32 ``-sum_c p_c log(p_c)`` with 0 log 0 = 0 (no epsilon; CRA form).
    """
    p = check_prob(prob)
    C, H, W = p.shape
    out: dict = {}
    if argmax:
        out["pred"] = np.empty((H, W), dtype=np.uint8 if C <= 256 else np.int32)
    if argmax or top2:
        out["p1"] = np.empty((H, W), dtype=np.float32)
    if top2:
        out["p2"] = np.empty((H, W), dtype=np.float32)
    if entropy:
        out["entropy"] = np.empty((H, W), dtype=np.float32)
    if plogp:
        out["plogp"] = np.empty((H, W), dtype=np.float32)
    tiny = np.float32(np.finfo(np.float32).tiny)

    def work(a: int, b: int) -> None:
        pc = p[:, a:b]
        if argmax or top2:
            best = out["p1"][a:b]
            np.copyto(best, pc[0])
            idx = out["pred"][a:b] if argmax else None
            if idx is not None:
                idx.fill(0)
            sec = out["p2"][a:b] if top2 else None
            if sec is not None:
                sec.fill(-np.inf)
            tmp = np.empty_like(best)
            m = np.empty(best.shape, dtype=bool)
            mu = m.view(np.uint8)
            t8 = np.empty(best.shape, dtype=idx.dtype) if idx is not None else None
            for c in range(1, C):
                if idx is not None:
                    # strict '>' so ties keep the first class; branch-free select:
                    # idx ^= (idx ^ c) & (-m)   (m as 0/1 -> 0/all-ones)
                    np.greater(pc[c], best, out=m)
                    if idx.dtype == np.uint8:
                        np.negative(mu, out=mu)
                        np.bitwise_xor(idx, c, out=t8)
                        np.bitwise_and(t8, mu, out=t8)
                    else:
                        np.bitwise_xor(idx, c, out=t8)
                        np.multiply(t8, m, out=t8)
                    np.bitwise_xor(idx, t8, out=idx)
                if sec is not None:
                    np.minimum(best, pc[c], out=tmp)
                    np.maximum(sec, tmp, out=sec)
                np.maximum(best, pc[c], out=best)
            if sec is not None and C == 1:
                sec.fill(0.0)
        if entropy or plogp:
            buf = np.empty(pc.shape, dtype=np.float32)
            if entropy:
                np.add(pc, np.float32(EPS), out=buf)
                np.log(buf, out=buf)
                buf *= pc
                e = out["entropy"][a:b]
                np.sum(buf, axis=0, out=e)
                np.negative(e, out=e)
            if plogp:
                np.maximum(pc, tiny, out=buf)
                np.log(buf, out=buf)
                buf *= pc
                e = out["plogp"][a:b]
                np.sum(buf, axis=0, out=e)
                np.negative(e, out=e)

    run_row_chunks(H, work, _rows_per_chunk(C, W))
    return out
