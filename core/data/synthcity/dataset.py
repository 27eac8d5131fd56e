"""``SynthCity``: reads one split of a generated set (core/data/base.py's contract)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from core.data.base import DatasetError
from core.data.labels import CITYSCAPES19

from .cache import _split_dir, _stem
from .constants import DEPTH_SCALE, _check_domain


class SynthCity:
    """One split of a generated synthcity set; follows core/data/base.py's contract.
    ``domain`` is "source" (split "train" only; samples carry ``depth`` in metres) or "target"
    ("train" or "val")."""

    label_space = CITYSCAPES19

    def __init__(self, root, domain: str, split: str = "train"):
        _check_domain(domain, split)
        self.root = Path(root)
        self.domain, self.split = domain, split
        try:
            self.meta = json.loads((self.root / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.root / 'meta.json'}: not a complete synthcity set ({e}); "
                               f"create it with ensure_synthcity()") from None
        self.dir = _split_dir(self.root, domain, split)
        n = self.meta["counts"]["source" if domain == "source" else f"target_{split}"]
        self.ext = self.meta["image_ext"][domain]
        self.names = [_stem(domain, split, i) for i in range(n)]
        self.has_depth = domain == "source"

    def __len__(self):
        return len(self.names)

    def _read(self, path, flags):
        a = cv2.imread(str(path), flags)
        if a is None:
            raise DatasetError(f"{path}: missing or unreadable")
        return a

    def __getitem__(self, i):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        stem = self.names[i]
        img = cv2.cvtColor(self._read(self.dir / "images" / f"{stem}{self.ext}", cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        lab = self._read(self.dir / "labels" / f"{stem}.png", cv2.IMREAD_UNCHANGED)
        s = {"image": img, "label": lab, "name": stem}
        if self.has_depth:
            d = self._read(self.dir / "depth" / f"{stem}.png", cv2.IMREAD_UNCHANGED)
            s["depth"] = d.astype(np.float32) / np.float32(DEPTH_SCALE)
        return s
