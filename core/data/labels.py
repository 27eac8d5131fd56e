"""Label spaces: an ordered class table (name, trainId, dataset id, colour).

``IGNORE`` (255) means unlabeled / void everywhere, in memory and on disk.
Cityscapes-19 comes from cityscapesscripts' label table, the source of ids and colours.
This module imports no torch, so storage and the annotator may use it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IGNORE = 255


@dataclass(frozen=True)
class ClassInfo:
    name: str
    train_id: int
    id: int  # the dataset's own id (Cityscapes labelIds for Cityscapes-19)
    color: tuple[int, int, int]


@dataclass(frozen=True)
class LabelSpace:
    name: str
    classes: tuple[ClassInfo, ...]
    # class names the 13-class mIoU* (SYNTHIA protocol) is computed over; empty when unused
    mIoU13: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    def palette(self) -> np.ndarray:
        """(256,3) uint8 colour table indexed by trainId; 255 and unused ids are black."""
        pal = np.zeros((256, 3), np.uint8)
        for c in self.classes:
            pal[c.train_id] = c.color
        return pal

    def train_to_id(self, void_id: int = 0) -> np.ndarray:
        """(256,) uint8 lookup trainId -> dataset id; 255 maps to ``void_id``."""
        lut = np.full(256, void_id, np.uint8)
        for c in self.classes:
            lut[c.train_id] = c.id
        return lut

    def unlabeled_values(self) -> dict:
        """What unlabeled pixels are written as in each export format, chosen so they never equal a
        class: ``labelTrainIds`` 255; ``labelIds`` 0 (Cityscapes' 'unlabeled' id) unless a class uses
        id 0, then 255, else the smallest free id; ``color`` black unless a class is black, then the
        first free of white, magenta, cyan, grey."""
        ids = {c.id for c in self.classes}
        void_id = next(v for v in (0, IGNORE, *range(256)) if v not in ids)
        colors = {tuple(c.color) for c in self.classes}
        candidates = ((0, 0, 0), (255, 255, 255), (255, 0, 255), (0, 255, 255), (128, 128, 128))
        color = next((c for c in candidates if c not in colors),
                     next((v, v, 255 - v) for v in range(256) if (v, v, 255 - v) not in colors))
        return {"labelTrainIds": IGNORE, "labelIds": void_id, "color": list(color)}

    def colorize(self, train_ids: np.ndarray) -> np.ndarray:
        return self.palette()[train_ids]

    def to_json(self) -> list[dict]:
        return [dict(name=c.name, train_id=c.train_id, id=c.id, color=list(c.color)) for c in self.classes]


def _cityscapes19() -> LabelSpace:
    from cityscapesscripts.helpers.labels import labels

    rows = sorted((lb for lb in labels if 0 <= lb.trainId < 255), key=lambda lb: lb.trainId)
    classes = tuple(ClassInfo(lb.name, lb.trainId, lb.id, tuple(lb.color)) for lb in rows)
    assert [c.train_id for c in classes] == list(range(19))
    return LabelSpace("cityscapes19", classes)


def cityscapes_id_to_train() -> np.ndarray:
    """(256,) uint8 lookup Cityscapes labelId -> trainId (255 for void / ignored ids)."""
    from cityscapesscripts.helpers.labels import labels

    lut = np.full(256, IGNORE, np.uint8)
    for lb in labels:
        if 0 <= lb.id < 256 and 0 <= lb.trainId < 255:
            lut[lb.id] = lb.trainId
    return lut


CITYSCAPES19 = _cityscapes19()

# SYNTHIA shares 16 of the 19 Cityscapes classes (no terrain, truck, train); the papers'
# mIoU* drops wall, fence and pole as well.
_SYNTHIA16_NAMES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
                    "traffic sign", "vegetation", "sky", "person", "rider", "car", "bus",
                    "motorcycle", "bicycle")
_by_name = {c.name: c for c in CITYSCAPES19.classes}
SYNTHIA16 = LabelSpace(
    "synthia16",
    tuple(ClassInfo(n, i, _by_name[n].id, _by_name[n].color) for i, n in enumerate(_SYNTHIA16_NAMES)),
    mIoU13=tuple(n for n in _SYNTHIA16_NAMES if n not in ("wall", "fence", "pole")),
)


class LabelSpaceError(ValueError):
    """A classes.json that cannot be used; the message names the file and the problem."""


def load_classes_json(path: str | Path) -> LabelSpace:
    """Read a user ``classes.json``: a list of {"name", "id", "color": [r,g,b]} (``train_id`` optional,
    defaults to the position). Train ids must be 0..N-1 and below 255; names and ids must be unique
    (LabelSpaceError naming the file and the classes otherwise)."""
    path = Path(path)
    try:
        rows = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise LabelSpaceError(f"{path}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise LabelSpaceError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(rows, list) or not rows:
        raise LabelSpaceError(f"{path}: expected a non-empty JSON list of classes")
    classes = []
    for i, r in enumerate(rows):
        if not isinstance(r, dict) or "name" not in r:
            raise LabelSpaceError(f"{path}: entry {i} must be an object with at least a 'name'")
        color = r.get("color", [(37 * i) % 256, (91 * i) % 256, (173 * i) % 256])
        if not (isinstance(color, list) and len(color) == 3 and all(isinstance(v, int) and 0 <= v < 256 for v in color)):
            raise LabelSpaceError(f"{path}: entry {i} ({r['name']}): 'color' must be [r,g,b] with 0..255")
        ident = r.get("id", i)
        tid = r.get("train_id", i)
        if not isinstance(ident, int) or not 0 <= ident < 256 or not isinstance(tid, int):
            raise LabelSpaceError(f"{path}: entry {i} ({r['name']}): 'id' must be an integer 0..255")
        classes.append(ClassInfo(str(r["name"]), tid, ident, tuple(color)))
    if sorted(c.train_id for c in classes) != list(range(len(classes))) or len(classes) >= 255:
        raise LabelSpaceError(f"{path}: train ids must be 0..N-1 (N < 255)")
    if len({c.name for c in classes}) != len(classes):
        raise LabelSpaceError(f"{path}: class names must be unique")
    by_id: dict[int, str] = {}
    for c in classes:
        if c.id in by_id:
            raise LabelSpaceError(f"{path}: classes {by_id[c.id]!r} and {c.name!r} share id {c.id}; every class "
                                  "needs its own id (the id is the value its pixels hold in the masks)")
        by_id[c.id] = c.name
    classes.sort(key=lambda c: c.train_id)
    return LabelSpace(path.stem, tuple(classes))
