"""Cityscapes in its official layout::

    ROOT/leftImg8bit/{train,val}/<city>/<city>_<seq>_<frame>_leftImg8bit.png     2048x1024 RGB
    ROOT/gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png      8-bit labelIds

The sample name (stem) is the file name without ``_leftImg8bit`` (``aachen_000000_000019``), the stem
the project's Cityscapes-compatible export writes back (``<stem>_gtFine_labelTrainIds.png``).
labelIds (0..33) are mapped to trainIds by cityscapesscripts' table: 7 road -> 0, 26 car -> 13,
void ids (0..6, 9, 10, 14..16, 18, 29, 30) -> 255; license plate (id -1) is never drawn into
labelIds files; 255 stays 255. Other values raise DatasetError (``unknown_ids="ignore"``: 255).
``label_space=SYNTHIA16`` maps to the 16 SYNTHIA classes instead (terrain, truck, train -> 255).

Sizes: training images at 1024x512 (``size=(512, 1024)``); labels follow the image (nearest) unless
``label_size="full"`` (2048x1024, what evaluation and annotation budgets use) or ``(H, W)``.
``require_labels=False`` accepts a split without gtFine (an unlabeled target: labels all 255).
"""
from __future__ import annotations

from pathlib import Path

from core.data.base import DatasetError
from core.data.folder import FileDataset, Item, cityscapes_id_map, require_dir
from core.data.labels import CITYSCAPES19, LabelSpace

IMG_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIX = "_gtFine_labelIds.png"


class Cityscapes(FileDataset):
    kind = "cityscapes"

    def __init__(self, root: str | Path, split: str = "train", size=(512, 1024), label_size=None, *,
                 label_space: LabelSpace = CITYSCAPES19, require_labels: bool = True, unknown_ids: str = "error",
                 cache_dir=None, cache_format: str = "png", skip_bad: bool = False):
        root = require_dir(Path(root), "Cityscapes dataset")
        if not split or "/" in split or "\\" in split:
            raise DatasetError(f"{root}: bad Cityscapes split {split!r} (expected train or val)")
        self.split = split
        img_root = require_dir(root / "leftImg8bit" / split, f"Cityscapes leftImg8bit/{split} folder")
        gt_root = root / "gtFine" / split
        if not gt_root.is_dir():
            if require_labels:
                raise DatasetError(f"{gt_root}: Cityscapes gtFine/{split} folder not found "
                                   f"(the command line needs gtFine for both splits; an unlabeled target can be a folder:PATH)")
            gt_root = None
        items, problems = [], []
        for city in sorted(p for p in img_root.iterdir() if p.is_dir()):
            for img in sorted(city.glob("*" + IMG_SUFFIX)):
                stem = img.name[: -len(IMG_SUFFIX)]
                lab = gt_root / city.name / (stem + LABEL_SUFFIX) if gt_root is not None else None
                if lab is not None and not lab.is_file():
                    if require_labels:
                        problems.append(f"{img}: no label file (expected {lab})")
                        continue
                    lab = None
                items.append(Item(stem, img, lab))
        if not items and not problems:
            raise DatasetError(f"{img_root}: no <city>/*{IMG_SUFFIX} images")
        super().__init__(root, items, label_space, cityscapes_id_map(label_space, unknown_ids), size=size,
                         label_size=label_size, cache_dir=cache_dir, cache_format=cache_format,
                         skip_bad=skip_bad, problems=problems)
