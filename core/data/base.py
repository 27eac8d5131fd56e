"""The dataset contract every source/target dataset follows (embedded, GTA5, SYNTHIA, Cityscapes, folder).

A dataset is a plain sequence (``len`` + ``__getitem__``; usable as a torch Dataset) of samples::

    {"image": uint8 (H,W,3) RGB, "label": uint8 (H,W) trainIds with 255 = ignore/unlabeled,
     "name": str (unique image stem), "depth": float32 (H,W) metres (optional; source datasets with depth)}

and carries ``label_space`` (core.data.labels.LabelSpace) and ``names`` (list of stems, same order).
Images are returned at the dataset's stored/training size; labels at the size they are evaluated
and budgeted at (for the embedded data both are equal). Nothing in here imports torch.
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from core.data.labels import LabelSpace


class DatasetError(ValueError):
    """Bad dataset input (missing folder, corrupt file, unknown id...): the message names the file and the problem."""


class SegDataset(Protocol):
    label_space: LabelSpace
    names: Sequence[str]

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> dict: ...


def check_sample(s: dict, num_classes: int) -> None:
    """Assert a sample follows the contract (used by tests of every dataset)."""
    img, lab = s["image"], s["label"]
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3, img.shape
    assert lab.dtype == np.uint8 and lab.ndim == 2
    vals = np.unique(lab)
    assert np.all((vals < num_classes) | (vals == 255)), vals
    assert isinstance(s["name"], str) and s["name"]
