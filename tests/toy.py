"""A tiny in-memory dataset for fast training tests (each class = a coloured band)."""
import numpy as np

from core.data.labels import CITYSCAPES19


class ToyDataset:
    label_space = CITYSCAPES19

    def __init__(self, n=4, size=(32, 64), classes=(0, 2, 10, 13), seed=0, depth=False):
        rng = np.random.default_rng(seed)
        pal = CITYSCAPES19.palette()
        self.items = []
        for i in range(n):
            lab = np.zeros(size, np.uint8)
            cuts = np.sort(rng.choice(np.arange(4, size[0] - 4), len(classes) - 1, replace=False))
            for k, (a, b) in enumerate(zip([0, *cuts], [*cuts, size[0]])):
                lab[a:b] = classes[k]
            lab[:2, :2] = 255
            img = pal[lab].astype(np.int16) + rng.integers(-10, 10, (*size, 3))
            self.items.append({"image": img.clip(0, 255).astype(np.uint8), "label": lab, "name": f"toy_{i:03d}"})
            if depth:   # metres: far at the top, near at the bottom, as a street scene
                rows = np.linspace(80.0, 2.0, size[0], dtype=np.float32)[:, None]
                self.items[-1]["depth"] = np.broadcast_to(rows, size) * (1 + 0.1 * (lab == classes[-1]))
        self.names = [s["name"] for s in self.items]
        self.has_depth = depth

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return dict(self.items[i])
