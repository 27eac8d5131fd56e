"""SLIC superpixels at a few granularities for the region canvas's click-fill tool.

Computed with ``skimage.segmentation.slic`` on the crop the annotator sees (query box plus
margin), never on the whole image, so one call costs ~15 ms per level on a 100x100 crop.
Results are cached on disk as ``.npz`` keyed by a hash of the crop's pixels and the parameters,
so a cached entry can never be stale. numpy + scikit-image only (no torch).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from core.fileio import atomic_write

# (name, mean superpixel area in pixels): finest first. The canvas starts on the middle one.
LEVELS: tuple[tuple[str, int], ...] = (("fine", 24), ("medium", 64), ("coarse", 160))
DEFAULT_LEVEL = 1
COMPACTNESS = 10.0
MAX_ITER = 5  # k-means iterations; 5 instead of skimage's 10 halves the time on crops, same look
_VERSION = 2  # bump when the computation changes (invalidates the cache)


def slic_levels(rgb: np.ndarray, levels: tuple[tuple[str, int], ...] = LEVELS,
                compactness: float = COMPACTNESS) -> np.ndarray:
    """``(L, H, W)`` uint16 superpixel ids of an ``(H, W, 3)`` uint8 image, one map per level
    (ids consecutive from 0 within each map). Deterministic."""
    from skimage.segmentation import slic

    rgb = np.ascontiguousarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"superpixels need an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}")
    h, w = rgb.shape[:2]
    out = np.zeros((len(levels), h, w), np.uint16)
    for i, (_, area) in enumerate(levels):
        n = max(4, int(round(h * w / float(area))))
        seg = slic(rgb, n_segments=n, compactness=compactness, start_label=0, max_num_iter=MAX_ITER)
        _, inv = np.unique(seg, return_inverse=True)  # consecutive ids
        out[i] = inv.reshape(h, w).astype(np.uint16)
    return out


def _key(rgb: np.ndarray, levels, compactness: float) -> str:
    h = hashlib.sha1()
    h.update(repr((_VERSION, rgb.shape, tuple(levels), float(compactness))).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def cached_slic_levels(rgb: np.ndarray, cache_dir: str | os.PathLike | None,
                       levels: tuple[tuple[str, int], ...] = LEVELS,
                       compactness: float = COMPACTNESS) -> np.ndarray:
    """:func:`slic_levels` with an on-disk cache under ``cache_dir/superpixels`` (no cache when
    ``cache_dir`` is None). A corrupt or unreadable cache file is recomputed and rewritten."""
    if cache_dir is None:
        return slic_levels(rgb, levels, compactness)
    folder = Path(cache_dir) / "superpixels"
    path = folder / (_key(rgb, levels, compactness) + ".npz")
    if path.is_file():
        try:
            with np.load(path) as z:
                sp = z["sp"]
            if sp.shape == (len(levels), *rgb.shape[:2]):
                return sp
        except Exception:  # noqa: BLE001 - a damaged cache entry is simply recomputed
            pass
    sp = slic_levels(rgb, levels, compactness)
    try:   # uncompressed: ~55 kB per crop, faster to write and read
        atomic_write(path, lambda f: np.savez(f, sp=sp), fsync=False)
    except OSError:
        pass  # the cache is an optimisation; a read-only cache dir must not break labeling
    return sp


def boundaries(sp: np.ndarray) -> np.ndarray:
    """Bool ``(H, W)``: pixels whose right or lower neighbour lies in another superpixel."""
    b = np.zeros(sp.shape, bool)
    b[:, :-1] |= sp[:, :-1] != sp[:, 1:]
    b[:-1, :] |= sp[:-1, :] != sp[1:, :]
    return b
