"""The provider: everything the annotator needs to know about an image, without the model.

``app`` builds a provider from the trainer's outputs (predictions, RIPU score maps, CRA trust
maps written to ``workdir/cache``) and passes it to :func:`annotator.build_app`; the annotator
never imports torch or ``core.train``.

A provider answers, for an image name:

- ``image(name)``      -> uint8 ``(H, W, 3)`` RGB
- ``prediction(name)`` -> uint8 ``(H, W)`` trainIds (255 = no prediction), the pre-fill
- ``heatmap(name)``    -> float ``(H, W)`` uncertainty x impurity, or None
- ``untrusted(name)``  -> bool ``(H, W)`` CRA untrusted pixels, or None
- ``superpixels(name, box)`` -> uint16 ``(L, h, w)`` SLIC ids at L granularities for the
  crop ``box = (y0, x0, y1, x1)`` (end-exclusive); :class:`BaseProvider` computes these with
  :mod:`annotator.superpixels` and caches them under ``cache_dir``.

:class:`ArrayProvider` serves in-memory dicts and/or ``<name>.npz`` files in a folder.
"""
from __future__ import annotations

import hashlib
import os
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Protocol, runtime_checkable

import numpy as np

from core.fileio import atomic_write

from annotator import superpixels as _sp


class ProviderError(ValueError):
    """The provider cannot serve an image, or served arrays of the wrong shape or type."""


@runtime_checkable
class Provider(Protocol):
    def image(self, name: str) -> np.ndarray: ...

    def prediction(self, name: str) -> np.ndarray: ...

    def heatmap(self, name: str) -> np.ndarray | None: ...

    def untrusted(self, name: str) -> np.ndarray | None: ...

    def superpixels(self, name: str, box: tuple[int, int, int, int]) -> np.ndarray: ...


class BaseProvider:
    """Implements :meth:`superpixels` (SLIC on the crop, disk cache under ``cache_dir``) and
    default ``heatmap``/``untrusted`` (None). Subclasses provide ``image`` and ``prediction``."""

    cache_dir: Path | None = None
    levels = _sp.LEVELS

    def image(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def prediction(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def heatmap(self, name: str) -> np.ndarray | None:
        return None

    def untrusted(self, name: str) -> np.ndarray | None:
        return None

    def superpixels(self, name: str, box: tuple[int, int, int, int]) -> np.ndarray:
        y0, x0, y1, x1 = (int(v) for v in box)
        crop = np.asarray(self.image(name))[y0:y1, x0:x1]
        return _sp.cached_slic_levels(crop, self.cache_dir, self.levels)


def _file_stem(name: str) -> str:
    """A safe file name for an image name (hash suffix when characters had to be replaced)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    if safe != name or not safe:
        safe = f"{safe[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:10]}"
    return safe


class ArrayProvider(BaseProvider):
    """Serve arrays from memory (dicts keyed by image name) and/or from ``folder/<name>.npz``
    files with keys ``image``, ``prediction`` and optional ``heatmap``, ``untrusted`` (write
    them with :meth:`write_npz`). Memory wins over files. Superpixels are cached under
    ``cache_dir`` (default: ``folder``, else no disk cache)."""

    def __init__(self, images: Mapping[str, np.ndarray] | None = None,
                 predictions: Mapping[str, np.ndarray] | None = None,
                 heatmaps: Mapping[str, np.ndarray] | None = None,
                 untrusted: Mapping[str, np.ndarray] | None = None,
                 folder: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, max_open: int = 8):
        self._mem = {"image": dict(images or {}), "prediction": dict(predictions or {}),
                     "heatmap": dict(heatmaps or {}), "untrusted": dict(untrusted or {})}
        self.folder = Path(folder) if folder is not None else None
        cd = cache_dir if cache_dir is not None else folder
        self.cache_dir = Path(cd) if cd is not None else None
        self._files: OrderedDict[str, dict] = OrderedDict()
        self._max_open = max(1, int(max_open))
        self._lock = threading.Lock()

    # -- files ---------------------------------------------------------------------------
    @staticmethod
    def npz_path(folder: str | os.PathLike, name: str) -> Path:
        return Path(folder) / (_file_stem(name) + ".npz")

    @classmethod
    def write_npz(cls, folder: str | os.PathLike, name: str, image: np.ndarray, prediction: np.ndarray,
                  heatmap: np.ndarray | None = None, untrusted: np.ndarray | None = None) -> Path:
        """Write one image's arrays to ``folder/<name>.npz`` atomically; returns the path."""
        arrays = {"image": np.asarray(image, np.uint8), "prediction": np.asarray(prediction, np.uint8)}
        if heatmap is not None:
            arrays["heatmap"] = np.asarray(heatmap, np.float32)
        if untrusted is not None:
            arrays["untrusted"] = np.asarray(untrusted, bool)
        return atomic_write(cls.npz_path(Path(folder), name), lambda f: np.savez(f, **arrays), fsync=False)

    def _file(self, name: str) -> dict | None:
        if self.folder is None:
            return None
        with self._lock:
            if name in self._files:
                self._files.move_to_end(name)
                return self._files[name]
        path = self.npz_path(self.folder, name)
        if not path.is_file():
            return None
        try:
            with np.load(path) as z:
                data = {k: z[k] for k in z.files}
        except Exception as e:  # noqa: BLE001
            raise ProviderError(f"cannot read {path}: {e}") from None
        with self._lock:
            self._files[name] = data
            while len(self._files) > self._max_open:
                self._files.popitem(last=False)
        return data

    def _get(self, key: str, name: str, required: bool):
        if name in self._mem[key]:
            return self._mem[key][name]
        data = self._file(name)
        if data is not None and key in data:
            return data[key]
        if required:
            where = f" or in {self.folder}" if self.folder is not None else ""
            raise ProviderError(f"no {key} for image {name!r} in memory{where}")
        return None

    # -- provider ------------------------------------------------------------------------
    def image(self, name: str) -> np.ndarray:
        return self._get("image", name, True)

    def prediction(self, name: str) -> np.ndarray:
        return self._get("prediction", name, True)

    def heatmap(self, name: str) -> np.ndarray | None:
        return self._get("heatmap", name, False)

    def untrusted(self, name: str) -> np.ndarray | None:
        return self._get("untrusted", name, False)

    def names(self) -> list[str]:
        """Image names available in memory (files are not listed)."""
        return sorted(self._mem["image"])


@dataclass
class ImageView:
    """A provider's arrays for one image, checked for shape and type."""
    name: str
    image: np.ndarray        # (H, W, 3) uint8
    prediction: np.ndarray   # (H, W) uint8
    heatmap: np.ndarray | None    # (H, W) float32, or None
    untrusted: np.ndarray | None  # (H, W) bool, or None

    @property
    def shape(self) -> tuple[int, int]:
        return self.prediction.shape


def load_view(provider: Provider, name: str) -> ImageView:
    """Fetch and validate one image's arrays; :class:`ProviderError` names what is wrong."""
    img = np.asarray(provider.image(name))
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4) or img.dtype != np.uint8:
        raise ProviderError(f"provider image for {name!r} must be uint8 (H, W, 3), got {img.shape} {img.dtype}")
    img = np.ascontiguousarray(img[..., :3])
    h, w = img.shape[:2]
    pred = np.asarray(provider.prediction(name))
    if pred.shape != (h, w) or not np.issubdtype(pred.dtype, np.integer):
        raise ProviderError(f"provider prediction for {name!r} must be integer (H, W) = {(h, w)}, "
                            f"got {pred.shape} {pred.dtype}")
    pred = pred.astype(np.uint8, copy=False)
    heat = provider.heatmap(name)
    if heat is not None:
        heat = np.asarray(heat, np.float32)
        if heat.shape != (h, w):
            raise ProviderError(f"provider heatmap for {name!r} must be (H, W) = {(h, w)}, got {heat.shape}")
    unt = provider.untrusted(name)
    if unt is not None:
        unt = np.asarray(unt).astype(bool, copy=False)
        if unt.shape != (h, w):
            raise ProviderError(f"provider untrusted mask for {name!r} must be (H, W) = {(h, w)}, got {unt.shape}")
    return ImageView(name, img, pred, heat, unt)


def superpixels_for(provider: Provider, name: str, box: tuple[int, int, int, int],
                    cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """The provider's superpixels for a crop; providers without the method get SLIC here."""
    fn = getattr(provider, "superpixels", None)
    if callable(fn):
        sp = np.asarray(fn(name, box))
    else:
        y0, x0, y1, x1 = box
        crop = np.asarray(provider.image(name))[y0:y1, x0:x1, :3]
        sp = _sp.cached_slic_levels(np.ascontiguousarray(crop, np.uint8),
                                    cache_dir if cache_dir is not None else getattr(provider, "cache_dir", None))
    if sp.ndim == 2:
        sp = sp[None]
    return sp
