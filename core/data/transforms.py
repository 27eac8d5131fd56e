"""Resizing and batching of dataset samples (numpy in, torch tensors out)."""
from __future__ import annotations

import cv2
import numpy as np
import torch


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W,3) uint8 -> size=(h,w); area for shrinking, linear for growing."""
    h, w = size
    if img.shape[:2] == (h, w):
        return img
    interp = cv2.INTER_AREA if h < img.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(img, (w, h), interpolation=interp)


def resize_label(lab: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = size
    if lab.shape[:2] == (h, w):
        return lab
    return cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)


def to_tensor_image(img: np.ndarray) -> torch.Tensor:
    """(H,W,3) uint8 -> (3,H,W) uint8 tensor (the model normalises)."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class TrainView:
    """A dataset view resized to the training size, with optional horizontal flip and per-image
    label override (active labels). Returns {"image": uint8 (3,h,w), "label": int64 (h,w), "index"}."""

    def __init__(self, dataset, size: tuple[int, int], flip: bool = False, labels=None, keep_label_size=False):
        self.dataset, self.size, self.flip = dataset, tuple(size), flip
        self.labels = labels  # callable(i, sample) -> uint8 label (H,W), or None = dataset label
        # keep labels at their stored size (active labels: a resize would drop labeled pixels)
        self.keep_label_size = keep_label_size

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        s = self.dataset[i]
        lab = s["label"] if self.labels is None else self.labels(i, s)
        img = resize_image(s["image"], self.size)
        if not self.keep_label_size:
            lab = resize_label(lab, self.size)
        depth = s.get("depth")
        if depth is not None:
            depth = cv2.resize(depth, self.size[::-1], interpolation=cv2.INTER_NEAREST)
        if self.flip and np.random.random() < 0.5:
            img, lab = img[:, ::-1], lab[:, ::-1]
            depth = None if depth is None else depth[:, ::-1]
        out = {"image": to_tensor_image(img), "label": torch.from_numpy(lab.astype(np.int64)), "index": i}
        if depth is not None:
            out["depth"] = torch.from_numpy(np.ascontiguousarray(depth))
        return out
