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


def tiny_segmentor(seed: int = 0, num_classes: int = 19):
    """A randomly initialised default Segmentor at output stride 16 (method and model unit tests)."""
    import torch

    from core.models import Segmentor

    torch.manual_seed(seed)
    return Segmentor(num_classes, output_stride=16, weights=None)


def step_marked(workdir, name: str) -> bool:
    """Whether a run in ``workdir`` has marked step ``name`` done (False while project.db is missing or
    locked): for tests that kill a run at a chosen step."""
    import sqlite3
    from pathlib import Path

    db = Path(workdir) / "project.db"
    if not db.exists():
        return False
    try:
        con = sqlite3.connect(db, timeout=1)
        try:
            return bool(con.execute("SELECT count(*) FROM steps WHERE name = ?", (name,)).fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return False
