"""Resizing and batching of dataset samples (numpy in, torch tensors out)."""
from __future__ import annotations

import numpy as np
import torch

from core.data.folder import resize_image, resize_label


def to_tensor_image(img: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (3,H,W) uint8 tensor (the model normalises)."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


def resize_sparse_label(lab: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a uint8 label (255 = unlabeled) that keeps every labeled pixel.

    Output pixel (i, j) takes the stored pixel under its centre; a labeled stored pixel that no output
    pixel samples (shrinking skips rows/columns) is written to the output pixel containing it if that
    one came out unlabeled. So sparse active labels (40 px per image, thin regions) survive any
    scale; dense labels are the nearest resize, except that unlabeled (255) areas shrink slightly
    where a skipped labeled pixel falls into them."""
    h, w = size
    H, W = lab.shape[:2]
    if (H, W) == (h, w):
        return lab
    sy = np.minimum(((np.arange(h) + 0.5) * H / h).astype(np.int64), H - 1)
    sx = np.minimum(((np.arange(w) + 0.5) * W / w).astype(np.int64), W - 1)
    out = lab[sy[:, None], sx[None, :]]
    ys, xs = np.nonzero(lab != 255)
    if len(ys):
        hit_y, hit_x = np.zeros(H, bool), np.zeros(W, bool)
        hit_y[sy], hit_x[sx] = True, True
        lost = ~(hit_y[ys] & hit_x[xs])
        ys, xs = ys[lost], xs[lost]
        oy, ox = np.minimum(ys * h // H, h - 1), np.minimum(xs * w // W, w - 1)
        free = out[oy, ox] == 255
        out[oy[free], ox[free]] = lab[ys[free], xs[free]]
    return out


class SparseLabels:
    """Active labels as a ``labels(i, sample)`` callable for TrainView/fit that pickles cheaply (DataLoader
    workers): per image only the labeled pixels' flat indices (int64) and classes (uint8) are kept.
    ``masks``: {image index: uint8 (H, W), 255 = unlabeled}. Calls return a new uint8 (H, W) array."""

    def __init__(self, masks: dict):
        self.shapes, self.sparse = {}, {}
        for i, m in masks.items():
            m = np.asarray(m, np.uint8)
            idx = np.flatnonzero(m != 255)
            self.shapes[i], self.sparse[i] = m.shape, (idx, m.ravel()[idx])

    def __call__(self, i: int, sample=None) -> np.ndarray:
        out = np.full(self.shapes[i], 255, np.uint8)
        idx, val = self.sparse[i]
        out.ravel()[idx] = val
        return out


class TrainView:
    """A dataset view for training: random scale, random crop at the stored resolution, horizontal
    flip, and an optional per-image label override (active labels).

    Each sample: the image (stored size H x W) is scaled by s ~ U(scale) to (round(H*s), round(W*s)),
    padded (image 0, label 255) if smaller than ``crop`` and cropped to ``crop`` = (h, w) at a random
    place; ``crop=None`` keeps the whole scaled image. The label (any size: full-resolution labels of
    a smaller stored image are fine) gets the same geometric transform, with nearest resizing that
    keeps every labeled pixel (``resize_sparse_label``), so active labels survive crops and scales.
    Depth (source only) follows with nearest resizing. Random draws come from ``sample``'s ``rng`` (a
    numpy Generator; core.train seeds one per sample from (seed, rank, batch, position), so a batch is
    the same in a DataLoader worker as in the main process); ``view[i]`` draws from a fresh unseeded one.

    Returns {"image": uint8 (3,h,w), "label": int64 (h,w), "index", "box": float32 (5,) = (top, left,
    height, width) of the crop as fractions of the whole (scaled, unpadded) image, then 1.0 if it was
    flipped else 0.0 (pixel (i, j) of the crop lies at image fraction y = top + (i + 0.5) / h * height,
    x = left + (j + 0.5) / w * width, mirrored x -> 1 - x when flipped: the image-position priors of
    the depth method), optional "depth": float32 (h,w)}.
    """

    def __init__(self, dataset, crop: tuple[int, int] | None, flip: bool = False, labels=None,
                 scale: tuple[float, float] = (1.0, 1.0)):
        self.dataset, self.flip = dataset, flip
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        self.scale = (float(scale[0]), float(scale[1]))
        self.labels = labels  # callable(i, sample) -> uint8 label (H,W), or None = dataset label

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.sample(i, np.random.default_rng())

    def sample(self, i: int, rng: np.random.Generator) -> dict:
        s = self.dataset[i]
        lab = s["label"] if self.labels is None else self.labels(i, s)
        img, depth = s["image"], s.get("depth")
        H, W = img.shape[:2]
        f = rng.uniform(*self.scale) if self.scale[0] != self.scale[1] else self.scale[0]
        sh, sw = max(1, round(H * f)), max(1, round(W * f))
        img = resize_image(img, (sh, sw))
        lab = resize_sparse_label(np.asarray(lab, np.uint8), (sh, sw))
        if depth is not None:
            depth = resize_label(depth, (sh, sw))
        y = x = 0
        ch, cw = sh, sw
        if self.crop is not None:
            ch, cw = self.crop
            ph, pw = max(0, ch - sh), max(0, cw - sw)
            if ph or pw:
                img = np.pad(img, ((0, ph), (0, pw), (0, 0)))
                lab = np.pad(lab, ((0, ph), (0, pw)), constant_values=255)
                if depth is not None:
                    depth = np.pad(depth, ((0, ph), (0, pw)), mode="edge")
            y = int(rng.integers(0, img.shape[0] - ch + 1))
            x = int(rng.integers(0, img.shape[1] - cw + 1))
            img, lab = img[y:y + ch, x:x + cw], lab[y:y + ch, x:x + cw]
            if depth is not None:
                depth = depth[y:y + ch, x:x + cw]
        flipped = bool(self.flip and rng.random() < 0.5)
        if flipped:
            img, lab = img[:, ::-1], lab[:, ::-1]
            depth = None if depth is None else depth[:, ::-1]
        box = torch.tensor([y / sh, x / sw, ch / sh, cw / sw, float(flipped)], dtype=torch.float32)
        out = {"image": to_tensor_image(img), "label": torch.from_numpy(lab.astype(np.int64)), "index": i,
               "box": box}
        if depth is not None:
            out["depth"] = torch.from_numpy(np.ascontiguousarray(depth))
        return out
