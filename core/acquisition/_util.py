"""Small shared helpers: clipped box sums, square dilation, row-chunk threading.

Everything here is plain numpy. "Clipped" windows follow the official RIPU code
(zero padding): a (2r+1)^2 square around (i, j) restricted to in-image pixels.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

__all__ = ["box_sum", "window_count", "dilate_square", "run_row_chunks", "check_radius"]

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
try:
    _N_THREADS = max(1, min(8, len(os.sched_getaffinity(0))))
except AttributeError:  # not on Linux
    _N_THREADS = max(1, min(8, os.cpu_count() or 1))


def check_radius(radius) -> int:
    r = int(radius)
    if r != radius or r < 0:
        raise ValueError(f"radius must be a non-negative integer, got {radius!r}")
    return r


_POOL_PID = -1


def _pool() -> ThreadPoolExecutor:
    # a pool inherited through fork() has no live threads: make a fresh one in the child
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = ThreadPoolExecutor(_N_THREADS, thread_name_prefix="acq")
            _POOL_PID = os.getpid()
        return _POOL


def run_row_chunks(H: int, fn, rows_per_chunk: int) -> None:
    """Call ``fn(a, b)`` on row ranges covering [0, H); chunks run on a thread pool.

    numpy ufuncs release the GIL, so on large maps this uses all cores. ``fn`` must
    only write rows [a, b) of its outputs (chunks are disjoint).
    """
    rows_per_chunk = max(1, int(rows_per_chunk))
    bounds = [(a, min(a + rows_per_chunk, H)) for a in range(0, H, rows_per_chunk)]
    if len(bounds) <= 1 or _N_THREADS == 1:
        for a, b in bounds:
            fn(a, b)
        return
    futures = [_pool().submit(fn, a, b) for a, b in bounds]
    for f in futures:
        f.result()


def _axis_slice(ndim: int, axis: int, sl: slice):
    idx = [slice(None)] * ndim
    idx[axis] = sl
    return tuple(idx)


def _prefix_rows(a: np.ndarray, acc) -> np.ndarray:
    """P with P[0] = 0, P[k] = a[0] + ... + a[k-1] along axis 0.

    ``np.cumsum(axis=0)`` walks the array column by column (strided) and is an order of
    magnitude slower than adding whole contiguous rows, which is what this does.
    """
    L = a.shape[0]
    P = np.empty((L + 1,) + a.shape[1:], dtype=acc)
    P[0] = 0
    np.copyto(P[1:], a, casting="unsafe")
    for i in range(1, L):
        np.add(P[i + 1], P[i], out=P[i + 1])
    return P


def _box_from_prefix(P: np.ndarray, r: int, L: int, out: np.ndarray, axis: int) -> None:
    nd = out.ndim
    sl = lambda s: _axis_slice(nd, axis, s)  # noqa: E731
    if L > 2 * r:
        # interior i in [r, L-r): P[i+r+1] - P[i-r]
        np.subtract(P[sl(slice(2 * r + 1, L + 1))], P[sl(slice(0, L - 2 * r))], out=out[sl(slice(r, L - r))],
                    casting="unsafe")
        # left border i in [0, r): P[i+r+1]; right border i in [L-r, L): P[L] - P[i-r]
        np.copyto(out[sl(slice(0, r))], P[sl(slice(r + 1, 2 * r + 1))], casting="unsafe")
        np.subtract(P[sl(slice(L, L + 1))], P[sl(slice(L - 2 * r, L - r))], out=out[sl(slice(L - r, L))],
                    casting="unsafe")
    else:
        i = np.arange(L)
        hi = np.minimum(i + r + 1, L)
        lo = np.maximum(i - r, 0)
        np.copyto(out, np.take(P, hi, axis=axis) - np.take(P, lo, axis=axis), casting="unsafe")


def box_sum(a: np.ndarray, r: int, axis: int, dtype=None) -> np.ndarray:
    """Sum over the clipped window [i-r, i+r] along ``axis`` (0 or 1 of a 2-D array; out-of-image
    terms are 0, like zero padding).

    Integer inputs are summed exactly (uint64 inputs with wrap-around, which keeps window
    differences of packed counters exact); float inputs with float32 shifted adds for r <= 3
    (the same rounding class as a direct convolution) and a float64 prefix sum beyond.
    Implementation notes: vertical sums add whole contiguous rows; horizontal shifted adds
    run on the flattened array and then recompute the 2r border columns, because strided
    2-D adds along the last axis are several times slower in numpy.
    """
    a = np.asarray(a)
    if a.ndim != 2 or axis not in (0, 1, -1):
        raise ValueError("box_sum expects a 2-D array and axis 0 or 1")
    axis = axis % 2
    dtype = np.dtype(dtype or a.dtype)
    L = a.shape[axis]
    if r == 0 or L == 0:
        return a.astype(dtype, copy=True)
    if r <= 3:
        a = np.ascontiguousarray(a)
        out = a.astype(dtype, copy=True)
        if axis == 0:
            for d in range(1, min(r, L - 1) + 1):
                np.add(out[d:], a[:L - d], out=out[d:], casting="unsafe")
                np.add(out[:L - d], a[d:], out=out[:L - d], casting="unsafe")
            return out
        fo, fa = out.reshape(-1), a.reshape(-1)
        T = fo.size
        for d in range(1, min(r, L - 1) + 1):
            np.add(fo[d:], fa[:T - d], out=fo[d:], casting="unsafe")
            np.add(fo[:T - d], fa[d:], out=fo[:T - d], casting="unsafe")
        # columns whose window crosses a row end picked up the neighbouring row: redo them
        for j in sorted(set(range(min(r, L))) | set(range(max(L - r, 0), L))):
            lo, hi = max(j - r, 0), min(j + r + 1, L)
            col = a[:, lo].astype(dtype)
            for k in range(lo + 1, hi):
                np.add(col, a[:, k], out=col, casting="unsafe")
            out[:, j] = col
        return out
    if a.dtype == np.uint64:
        acc = np.uint64  # packed counters: wrap-around arithmetic is exact for window differences
    elif dtype.kind == "f" or a.dtype.kind == "f":
        acc = np.float64
    elif a.dtype.itemsize == 1 and L * 255 < 2 ** 31:
        acc = np.int32
    else:
        acc = np.int64
    out = np.empty(a.shape, dtype=dtype)
    if axis == 0:
        P = _prefix_rows(a, acc)
    else:
        P = np.empty((a.shape[0], L + 1), dtype=acc)
        P[:, 0] = 0
        np.cumsum(a, axis=1, dtype=acc, out=P[:, 1:])
    _box_from_prefix(P, r, L, out, axis)
    return out


def _count_1d(L: int, r: int) -> np.ndarray:
    i = np.arange(L)
    return (np.minimum(i + r, L - 1) - np.maximum(i - r, 0) + 1).astype(np.int64)


def window_count(H: int, W: int, r: int) -> np.ndarray:
    """n(i, j): number of in-image pixels in the clipped (2r+1)^2 window, (H, W) int64."""
    return np.multiply.outer(_count_1d(H, r), _count_1d(W, r))


def dilate_square(mask: np.ndarray, r: int) -> np.ndarray:
    """Chebyshev (square) dilation of a bool mask by radius r."""
    mask = np.asarray(mask, dtype=bool)
    if r == 0 or not mask.any():
        return mask.copy()
    dt = np.uint8 if (2 * r + 1) <= 255 else np.int32
    v = box_sum(mask.view(np.uint8), r, axis=0, dtype=dt)
    v = np.minimum(v, 1, out=v) if dt == np.uint8 else (v > 0).view(np.uint8)
    h = box_sum(v.astype(np.uint8, copy=False), r, axis=1, dtype=dt)
    return h > 0
