"""Export labeled masks in the Cityscapes layout, plus a JSON manifest.

Per target image with labels, named after its stem (a trailing ``_leftImg8bit`` is dropped as
Cityscapes does): ``<stem>_gtFine_labelTrainIds.png`` (255 = unlabeled),
``<stem>_gtFine_labelIds.png`` (dataset ids; unlabeled -> 0 'unlabeled'), ``<stem>_gtFine_color.png``
(label-space palette; unlabeled black), and ``manifest.json``. When a class of the label space uses
id 0 or colour black, unlabeled takes another value that no class uses
(``LabelSpace.unlabeled_values``); ``manifest.json["unlabeled"]`` always says what was written.
Every file is first written to a temporary file in ``out_dir``; only when all of them are written
are they moved into place with ``os.replace`` (manifest last), so a failed re-export leaves the
previous export whole. Nothing is written outside ``out_dir``.
"""
from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from sqlite_utils import Database

from core import fileio
from core.data.labels import IGNORE, LabelSpace
from storage.db import InvalidInput, StoreError, now_iso
from storage.labels import _compose, _size, agreement, honeypot_scores, image_labels

Dense = Callable[[str], "tuple[np.ndarray, np.ndarray]"]
SUFFIXES = ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png", "_gtFine_color.png")


def safe_stem(name: str) -> str:
    """The file stem used for an image name; :class:`InvalidInput` for names that could
    escape the output folder (``..``, ``/``, ``\\``, absolute or drive paths, control chars)."""
    if not isinstance(name, str) or not name.strip():
        raise InvalidInput(f"image name {name!r} cannot be used as a file name")
    if ".." in name or "/" in name or "\\" in name or os.path.isabs(name) or re.match(r"^[A-Za-z]:", name) \
            or any(ord(c) < 32 for c in name) or name in (".",):
        raise InvalidInput(f"image name {name!r} is not a plain file name (contains '..', a path separator "
                           f"or is absolute); refusing to export it")
    return name[: -len("_leftImg8bit")] if name.endswith("_leftImg8bit") and len(name) > 12 else name


def _os_error(path: Path, e: OSError) -> StoreError:
    if e.errno == errno.ENOSPC:
        return StoreError(f"disk full while writing {path}; export stopped, no partial files left")
    return StoreError(f"cannot write {path}: {e.strerror or e}")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _png(arr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", arr)
    if not ok:
        raise StoreError("could not encode PNG")
    return buf.tobytes()


def export(db: Database, out_dir: str | os.PathLike, label_space: LabelSpace, dense: Dense | None = None,
           threshold: float = 0.9, domain: str = "target") -> dict:
    """Write masks for every ``domain`` image that has non-rejected labels, and ``manifest.json``;
    returns the manifest dict.

    ``dense``: optional callable ``name -> (pred uint8 (H,W) trainIds, confidence float (H,W))``;
    pixels without a human label take ``pred`` where ``confidence >= threshold`` (255 below).
    Human labels always win. Image names are validated before anything is written; a name that
    could escape ``out_dir`` raises :class:`InvalidInput`. A full disk raises one
    :class:`StoreError` and leaves no temp files.
    """
    out = Path(out_dir)
    images = db.execute(
        "SELECT DISTINCT i.id, i.name FROM images i JOIN queries q ON q.image = i.id JOIN labels l "
        "ON l.query = q.id WHERE l.review != 'rejected' AND q.honeypot = 0 AND i.domain = ? ORDER BY i.name",
        (domain,)).fetchall()
    stems = {}
    for img, name in images:
        stem = safe_stem(name)
        if stem in stems.values():
            raise InvalidInput(f"two images export to the same stem {stem!r}")
        stems[img] = stem
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StoreError(f"cannot create export folder {out}: {e.strerror or e}") from None
    unlabeled = label_space.unlabeled_values()
    train_to_id = label_space.train_to_id(void_id=unlabeled["labelIds"])
    palette = label_space.palette()
    palette[IGNORE] = unlabeled["color"]
    palette_bgr = palette[:, ::-1].copy()
    names = {c.train_id: c.name for c in label_space.classes}

    def named(rows):   # per-class IoU keyed by class name in the manifest
        return [{**s, "iou": {names.get(c, str(c)): v for c, v in s["iou"].items()}} for s in rows]

    manifest = {"created": now_iso(), "label_space": label_space.name, "classes": label_space.to_json(),
                "unlabeled": unlabeled, "honeypots": named(honeypot_scores(db)), "agreement": named(agreement(db)),
                "dense": dense is not None, "threshold": threshold if dense is not None else None,
                "files": list(SUFFIXES), "images": {}}
    # two phases: every new file is staged (written and fsync'ed under a temp name in out_dir) before any
    # is moved into place, so a failure (disk full...) leaves the previous export whole; the manifest
    # goes last, then files of the previous export that the new one lacks are removed.
    for leftover in out.glob(".*.part"):   # temp files of an export killed midway
        leftover.unlink(missing_ok=True)
    old = _previous_files(out)
    staged: list[tuple[Path, Path]] = []
    try:
        for img, name in images:
            stem = stems[img]
            rows, mask, human, h, w, dense_px = _image_mask(db, img, name, dense, threshold)
            for suffix, arr in zip(SUFFIXES, (mask, train_to_id[mask], palette_bgr[mask])):
                staged.append((_stage(out / (stem + suffix), _png(arr)), out / (stem + suffix)))
            manifest["images"][stem] = {
                "name": name, "height": h, "width": w,
                "labeled_pixels": int(np.count_nonzero(human != IGNORE)),
                "dense_pixels": dense_px,
                "labels": len(rows),
                "rounds": sorted({r["round"] for r in rows if r["round"] is not None}),
                "annotators": sorted({r["annotator"] for r in rows}),
                "ms": int(sum(r["ms"] for r in rows)),          # active milliseconds of the annotators
                "edits": int(sum(r.get("edits") or 0 for r in rows)),
                "prefill": sorted({r["prefill"] for r in rows if r.get("prefill")}),
            }
        staged.append((_stage(out / "manifest.json", json.dumps(manifest, indent=2).encode()), out / "manifest.json"))
    except BaseException:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    for stale in old - {final.name for _, final in staged}:
        (out / stale).unlink(missing_ok=True)
    _fsync_dir(out)  # make the renames durable too
    return manifest


def _previous_files(out: Path) -> set[str]:
    """The files the previous export in ``out`` wrote (from its manifest.json), if any."""
    try:
        prev = json.loads((out / "manifest.json").read_text())
        names = {str(stem) + suffix for stem in prev.get("images", {}) for suffix in SUFFIXES}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()
    return {n for n in names if n == Path(n).name and not n.startswith(".")}   # plain names inside out only


def _stage(path: Path, data: bytes) -> Path:
    try:
        return fileio.stage(path, data)
    except OSError as e:
        raise _os_error(path, e) from None


def _image_mask(db: Database, img: int, name: str, dense: Dense | None, threshold: float):
    """(label rows, exported trainId mask, human-only mask, height, width, pixels filled by --dense)."""
    rows = image_labels(db, img)
    h, w = _size_or_dense(db, img, name, dense)
    human = _compose(rows, h, w)
    mask, dense_px = human, 0
    if dense is not None:
        mask = _merge_dense(name, human, dense, threshold)
        dense_px = int(np.count_nonzero((human == IGNORE) & (mask != IGNORE)))
    return rows, mask, human, h, w, dense_px


def _size_or_dense(db: Database, img: int, name: str, dense: Dense | None) -> tuple[int, int]:
    try:
        return _size(db, img, None, None)
    except InvalidInput:
        if dense is None:
            raise
        return tuple(np.asarray(dense(name)[0]).shape[:2])


def _merge_dense(name: str, human: np.ndarray, dense: Dense, threshold: float) -> np.ndarray:
    pred, conf = dense(name)
    pred, conf = np.asarray(pred), np.asarray(conf)
    if pred.shape != human.shape or conf.shape != human.shape:
        raise InvalidInput(f"dense prediction for {name!r} has shape {pred.shape}/{conf.shape}, "
                           f"expected {human.shape}")
    fill = np.where(conf >= threshold, pred, IGNORE).astype(np.uint8)
    return np.where(human != IGNORE, human, fill).astype(np.uint8)
