"""SYNTHIA-RAND-CITYSCAPES in its official layout::

    ROOT/RGB/0000000.png ...            RGB, 1280x760
    ROOT/GT/LABELS/0000000.png ...      16-bit PNG: class id in the first (R) channel, instance id in G
    ROOT/Depth/Depth/0000000.png ...    16-bit PNG depth in centimetres (first channel), optional

Labels are read with cv2.IMREAD_UNCHANGED (16 bits kept; cv2 returns BGR, so the file's first channel
is index 2) and the SYNTHIA ids (table below) are mapped to the 16 classes SYNTHIA shares with
Cityscapes, in SYNTHIA16's trainId order (road 0 ... bicycle 15). Ids with no Cityscapes counterpart
(void, parking-slot, road-work, lanemarking) and the three classes outside the 16 (terrain, truck,
train) become 255, as in the UDA papers. ``num_classes=19`` maps to the 19 Cityscapes trainIds
instead (terrain, truck, train then keep their trainIds 9, 14, 16). 255 stays 255; other ids (> 22)
raise DatasetError naming the file (``unknown_ids="ignore"``: 255).

Depth (``depth=None``: loaded when Depth/Depth exists; True: required; False: never) is returned as
float32 metres (raw * ``depth_scale``, default 0.01 for centimetres), resized (nearest) to the image.

Sizes: the native 1280x760 is the papers' training size (``size=(760, 1280)``); labels follow the
image unless ``label_size="full"`` or ``(H, W)``. See core.data.folder for caching and validation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.data.base import DatasetError
from core.data.folder import FileDataset, IdMap, Item, list_files, read_first_channel, require_dir, stems
from core.data.labels import CITYSCAPES19, SYNTHIA16

# SYNTHIA class ids (GT/LABELS, first channel), with SYNTHIA's class names.
SYNTHIA_CLASSES = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence", 6: "vegetation", 7: "pole",
    8: "car", 9: "traffic sign", 10: "pedestrian", 11: "bicycle", 12: "motorcycle", 13: "parking-slot",
    14: "road-work", 15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus", 20: "train",
    21: "wall", 22: "lanemarking",
}
# SYNTHIA id -> Cityscapes class name; ids not listed (void, parking-slot, road-work, lanemarking) -> 255.
SYNTHIA_TO_CITYSCAPES = {
    3: "road", 4: "sidewalk", 2: "building", 21: "wall", 5: "fence", 7: "pole", 15: "traffic light",
    9: "traffic sign", 6: "vegetation", 16: "terrain", 1: "sky", 10: "person", 17: "rider", 8: "car",
    18: "truck", 19: "bus", 20: "train", 12: "motorcycle", 11: "bicycle",
}


def synthia_id_map(num_classes: int = 16, unknown: str = "error") -> IdMap:
    """SYNTHIA id -> trainId of SYNTHIA16 (num_classes=16) or CITYSCAPES19 (num_classes=19)."""
    space = {16: SYNTHIA16, 19: CITYSCAPES19}.get(num_classes)
    if space is None:
        raise DatasetError(f"SYNTHIA num_classes must be 16 or 19, got {num_classes!r}")
    tid = {c.name: c.train_id for c in space.classes}
    table = {sid: tid[n] for sid, n in SYNTHIA_TO_CITYSCAPES.items() if n in tid}
    return IdMap(table, SYNTHIA_CLASSES, f"SYNTHIA ids 0..{max(SYNTHIA_CLASSES)} or 255", unknown)


class Synthia(FileDataset):
    kind = "synthia"

    def __init__(self, root: str | Path, size=(760, 1280), label_size=None, *, num_classes: int = 16,
                 depth: bool | None = None, depth_scale: float = 0.01, unknown_ids: str = "error",
                 cache_dir=None, cache_format: str = "png", skip_bad: bool = False):
        root = require_dir(Path(root), "SYNTHIA dataset")
        img_dir = require_dir(root / "RGB", "SYNTHIA RGB/ folder")
        lab_dir = require_dir(root / "GT" / "LABELS", "SYNTHIA GT/LABELS folder")
        depth_dir = root / "Depth" / "Depth"
        if depth is None:
            depth = depth_dir.is_dir()
        elif depth:
            require_dir(depth_dir, "SYNTHIA Depth/Depth folder (depth=True)")
        images = stems(img_dir, "images")
        labels = stems(lab_dir, "label files")
        depths = {p.stem: p for p in list_files(depth_dir, (".png",))} if depth else {}
        items, problems = [], []
        for stem, img in images.items():
            lab = labels.get(stem)
            if lab is None:
                problems.append(f"{img}: no label file (expected {lab_dir / (stem + '.png')})")
                continue
            d = None
            if depth:
                d = depths.get(stem)
                if d is None:
                    problems.append(f"{img}: no depth file (expected {depth_dir / (stem + '.png')})")
                    continue
            items.append(Item(stem, img, lab, d))
        space = SYNTHIA16 if num_classes == 16 else CITYSCAPES19
        super().__init__(root, items, space, synthia_id_map(num_classes, unknown_ids), size=size,
                         label_size=label_size, cache_dir=cache_dir, cache_format=cache_format,
                         skip_bad=skip_bad, problems=problems, depth_scale=depth_scale)

    def _read_label_raw(self, path: Path) -> np.ndarray:
        return read_first_channel(path, "label")
