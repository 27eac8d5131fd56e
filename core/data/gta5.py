"""GTA5 (Playing for Data, Richter et al. 2016) in its official layout::

    ROOT/images/00001.png ...   RGB, 1914x1052 (a few differ)
    ROOT/labels/00001.png ...   palette PNG whose indices are Cityscapes labelIds (0..33)

Labels are mapped to the 19 Cityscapes trainIds with cityscapesscripts' table
(``core.data.labels.cityscapes_id_to_train``): 7 road -> 0, 26 car -> 13, void ids (0..6, 9, 10, ...)
-> 255. 255 in a label file stays 255; any other value (> 33) raises DatasetError naming the file,
or becomes 255 with ``unknown_ids="ignore"``.

Sizes (the papers' protocol): images are resized to 1280x720 (``size=(720, 1280)``); the label follows
the image (nearest) unless ``label_size="full"`` (native resolution) or ``(H, W)``. A label must
have its image's size, as in every dataset kind (core.data.folder): a pair of different sizes is a
DatasetError naming the file and both sizes, or with ``skip_bad`` the pair is dropped and reported
(resizing one to the other would shift every pixel when the difference is padding or cropping).
There is no split: a source dataset uses every image. See core.data.folder for caching/validation.
"""
from __future__ import annotations

from pathlib import Path

from core.data.folder import FileDataset, cityscapes_id_map, pair_by_stem, require_dir, stems
from core.data.labels import CITYSCAPES19, LabelSpace


class GTA5(FileDataset):
    kind = "gta5"

    def __init__(self, root: str | Path, size=(720, 1280), label_size=None, *,
                 label_space: LabelSpace = CITYSCAPES19, unknown_ids: str = "error",
                 cache_dir=None, cache_format: str = "png", skip_bad: bool = False):
        root = require_dir(Path(root), "GTA5 dataset")
        img_dir = require_dir(root / "images", "GTA5 images/ folder")
        lab_dir = require_dir(root / "labels", "GTA5 labels/ folder")
        images = stems(img_dir, "images")
        labels = stems(lab_dir, "label files")
        items, problems = pair_by_stem(images, labels, lambda s: lab_dir / f"{s}.png")
        super().__init__(root, items, label_space, cityscapes_id_map(label_space, unknown_ids), size=size,
                         label_size=label_size, cache_dir=cache_dir, cache_format=cache_format,
                         skip_bad=skip_bad, problems=problems)
