"""Tiny dataset trees in the official layouts and file naming, built on the fly (nothing downloaded).

Every image shows the same simple street layout (``scene``), shifted a little per index, with the
classes' Cityscapes colours plus noise, so loaders, id mappings and resizing can be checked:

    rows   0-30%  sky
    rows  30-60%  building (left half) | vegetation (right half)
    rows  60-90%  road, sidewalk on the right 15%, a car box and a person box
    rows  90-100% void (GTA5/Cityscapes "ego vehicle" id 1, SYNTHIA void 0)

Functions return the dataset root (a Path). Used by tests/test_datasets.py and the end-to-end CLI tests.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from core.data.labels import CITYSCAPES19

SCENE_CLASSES = ("sky", "building", "vegetation", "road", "sidewalk", "car", "person", "void")
# Cityscapes labelIds (= GTA5 ids) and SYNTHIA ids of the scene's classes
CITYSCAPES_IDS = {"sky": 23, "building": 11, "vegetation": 21, "road": 7, "sidewalk": 8, "car": 26,
                  "person": 24, "void": 1}
SYNTHIA_IDS = {"sky": 1, "building": 2, "vegetation": 6, "road": 3, "sidewalk": 4, "car": 8,
               "person": 10, "void": 0}
_COLORS = {c.name: c.color for c in CITYSCAPES19.classes}
_COLORS["void"] = (0, 0, 0)


def scene(h: int, w: int, i: int = 0) -> np.ndarray:
    """(h, w) array of indices into SCENE_CLASSES for image number ``i``."""
    k = {n: j for j, n in enumerate(SCENE_CLASSES)}
    s = np.full((h, w), k["sky"], np.uint8)
    r = lambda f: int(round(f * h))  # noqa: E731
    c = lambda f: int(round(f * w))  # noqa: E731
    s[r(.3):r(.6), :c(.5)] = k["building"]
    s[r(.3):r(.6), c(.5):] = k["vegetation"]
    s[r(.6):r(.9), :] = k["road"]
    s[r(.6):r(.9), c(.85):] = k["sidewalk"]
    dx = (i % 3) * max(1, w // 32)
    s[r(.5):r(.8), c(.2) + dx:c(.45) + dx] = k["car"]
    s[r(.45):r(.8), c(.6):c(.7)] = k["person"]
    s[r(.9):, :] = k["void"]
    return s


def scene_ids(h: int, w: int, i: int, ids: dict[str, int]) -> np.ndarray:
    lut = np.array([ids[n] for n in SCENE_CLASSES], np.int64)
    return lut[scene(h, w, i)]


def scene_rgb(h: int, w: int, i: int = 0, seed: int = 0) -> np.ndarray:
    pal = np.array([_COLORS[n] for n in SCENE_CLASSES], np.int16)
    rng = np.random.default_rng(seed * 1000 + i)
    img = pal[scene(h, w, i)] + rng.integers(-12, 13, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_rgb(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return path


def write_ids(path: Path, ids: np.ndarray, palette: bool = False) -> Path:
    """8-bit single-channel id PNG (``palette=True``: a 'P' image with Cityscapes colours, as GTA5)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.ascontiguousarray(ids, dtype=np.uint8))
    if palette:  # putpalette turns the "L" image into a "P" image with the same indices
        from cityscapesscripts.helpers.labels import labels
        pal = np.zeros((256, 3), np.uint8)
        for lb in labels:
            if 0 <= lb.id < 256:
                pal[lb.id] = lb.color
        im.putpalette(pal.ravel().tolist())
    im.save(path)
    return path


def write_png16(path: Path, first: np.ndarray, second: np.ndarray | None = None, third: np.ndarray | None = None):
    """16-bit 3-channel PNG with ``first`` in the file's first (R) channel (cv2 writes BGR)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    z = np.zeros_like(first, dtype=np.uint16)
    bgr = np.stack([z if third is None else third, z if second is None else second, first], -1).astype(np.uint16)
    assert cv2.imwrite(str(path), bgr)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to ``keep`` of its bytes (a truncated download)."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def make_gta5(root, n: int = 3, size=(40, 72), seed: int = 0) -> Path:
    """``root/images/00001.png``, ``root/labels/00001.png`` (palette PNG of Cityscapes labelIds)."""
    root = Path(root)
    h, w = size
    for i in range(n):
        name = f"{i + 1:05d}.png"
        write_rgb(root / "images" / name, scene_rgb(h, w, i, seed))
        write_ids(root / "labels" / name, scene_ids(h, w, i, CITYSCAPES_IDS), palette=True)
    return root


CITIES = {"train": ("aachen", "bochum"), "val": ("frankfurt", "lindau")}


def cityscapes_stem(split: str, i: int) -> str:
    cities = CITIES.get(split, (split,))
    return f"{cities[i % len(cities)]}_{i // len(cities):06d}_{19 + i:06d}"


def make_cityscapes(root, n_train: int = 3, n_val: int = 2, size=(32, 64), seed: int = 0) -> Path:
    """``leftImg8bit/{train,val}/<city>/<stem>_leftImg8bit.png`` and ``gtFine/.../<stem>_gtFine_labelIds.png``
    (plus ``_gtFine_color.png`` as in the real release)."""
    root = Path(root)
    h, w = size
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            stem = cityscapes_stem(split, i)
            city = stem.split("_")[0]
            write_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", scene_rgb(h, w, i, seed + 1))
            ids = scene_ids(h, w, i, CITYSCAPES_IDS)
            write_ids(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", ids)
            write_rgb(root / "gtFine" / split / city / f"{stem}_gtFine_color.png", scene_rgb(h, w, i, 99))
    return root


def make_synthia(root, n: int = 3, size=(38, 64), seed: int = 0, depth: bool = True) -> Path:
    """``RGB/0000000.png``; ``GT/LABELS/0000000.png`` 16-bit, class id in R and an instance id in G;
    ``Depth/Depth/0000000.png`` 16-bit depth in centimetres (all three channels), rows farther at the top."""
    root = Path(root)
    h, w = size
    for i in range(n):
        name = f"{i:07d}.png"
        write_rgb(root / "RGB" / name, scene_rgb(h, w, i, seed + 2))
        ids = scene_ids(h, w, i, SYNTHIA_IDS)
        inst = np.where(ids == SYNTHIA_IDS["car"], 1000 + i, 0)  # instance ids above 255 in G
        write_png16(root / "GT" / "LABELS" / name, ids, inst)
        if depth:
            d = synthia_depth_cm(h, w, i)
            write_png16(root / "Depth" / "Depth" / name, d, d, d)
    return root


def synthia_depth_cm(h: int, w: int, i: int = 0) -> np.ndarray:
    """Depth in cm: 50 m at the top row down to 2 m at the bottom, + i cm."""
    col = np.linspace(5000, 200, h).round().astype(np.int64) + i
    return np.repeat(col[:, None], w, 1)


def make_folder(root, n: int = 3, classes=None, size=(24, 32), seed: int = 0, masks: bool = True,
                split: str | None = None) -> Path:
    """``images/img_000.png`` + ``masks/img_000.png`` (+ ``classes.json``); with ``split`` under
    ``images/<split>/`` and ``masks/<split>/``.

    ``classes=None``: no classes.json; masks hold Cityscapes labelIds (void rows are id 1).
    ``classes`` = list of names (a classes.json with ids 1..N in that order; scene classes not listed,
    and the void rows, are 255 in the masks) or a list of classes.json entries (dicts) used as is;
    the scene class named like an entry gets that entry's id."""
    root = Path(root)
    h, w = size
    if classes is not None:
        entries = [c if isinstance(c, dict) else {"name": c, "id": j + 1} for j, c in enumerate(classes)]
        for j, e in enumerate(entries):
            e.setdefault("id", j + 1)
            e.setdefault("color", list(_COLORS.get(e["name"], ((40 * j) % 256, (90 * j) % 256, (150 * j) % 256))))
        (root).mkdir(parents=True, exist_ok=True)
        (root / "classes.json").write_text(json.dumps(entries, indent=1))
        ids = {n: 255 for n in SCENE_CLASSES}
        ids.update({e["name"]: e["id"] for e in entries if e["name"] in ids})
    else:
        ids = CITYSCAPES_IDS
    sub = (split,) if split else ()
    for i in range(n):
        name = f"img_{i:03d}"
        write_rgb(root.joinpath("images", *sub, name + ".png"), scene_rgb(h, w, i, seed + 3))
        if masks:
            write_ids(root.joinpath("masks", *sub, name + ".png"), scene_ids(h, w, i, ids))
    return root
