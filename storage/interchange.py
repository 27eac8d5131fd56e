"""Round trips with the labeling tools people already use: Label Studio and CVAT.

:func:`export_round` writes the open round's queries (the images, each query's box or point, and the
model's prediction inside each box as a pre-annotation) in a tool's import format;
:func:`read_tool_export` reads what the tool exports after labeling back into
:class:`ToolDrawing` objects (one per annotator and image: a trainId map plus labeled points), and
:func:`answers_from_drawings` turns them into answers of the round's queries for
:func:`storage.import_labels` (the same checks as the browser's saves, all or nothing).

Formats (the versions the fixtures of tests/test_interchange.py follow):

- ``label-studio``: Label Studio 1.x JSON tasks (``tasks.json``, with ``predictions``) plus a
  labeling config (``label_config.xml``: ``BrushLabels`` "class", ``RectangleLabels`` "query",
  ``KeyPointLabels`` "point"); brush masks in Label Studio's RLE (``label_studio_converter.brush``,
  HumanSignal's own encoder and decoder); keypoints in percent of the image size. Read back: Label
  Studio's "JSON" export (tasks with ``annotations``).
- ``cvat``: "CVAT for images 1.1" XML (``annotations.xml`` + ``images/``): region queries as
  ``<box label="query">``, pixel queries as ``<points>`` labeled with the predicted class, the
  prediction as ``<mask>`` shapes (CVAT's mask RLE: run lengths over the mask's box, row-major,
  starting with a run of background). Read back: masks, polygons and points of the same format.

Nothing here imports torch; images and predictions come from the caller (``app``).
"""
from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from skimage.draw import polygon2mask

from core.data.labels import IGNORE, LabelSpace
from core.fileio import atomic_write
from storage.db import Database, InvalidInput
from storage.queue import get_round, round_queries

FORMATS = ("label-studio", "cvat")
QUERY_LABEL = "query"          # the tools' label for the query boxes (never a class)
LS_FILES = ("tasks.json", "label_config.xml")
CVAT_FILE = "annotations.xml"


@dataclass
class ToolDrawing:
    """What one annotator drew on one image in a tool: ``classes`` uint8 (H, W) trainIds, 255 where
    nothing was drawn; ``points`` {(y, x): trainId} from point tools (pixel queries)."""
    image: str
    annotator: str
    classes: np.ndarray
    points: dict[tuple[int, int], int] = field(default_factory=dict)


def _brush():
    from label_studio_converter import brush   # Label Studio's own RLE (imported on use: ~1 s)
    return brush


def _hex(rgb) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb)


def _round_images(db: Database, round_id: int) -> dict[str, list[dict]]:
    """The round's open queries (pending or leased) grouped by image name."""
    out: dict[str, list[dict]] = {}
    for q in round_queries(db, round_id, open_only=True):
        out.setdefault(q["name"], []).append(q)
    return out


# ------------------------------------------------------------------------------------------ export

def export_round(db: Database, round_id: int, out_dir: str | os.PathLike, label_space: LabelSpace, fmt: str,
                 image: Callable[[str], np.ndarray], prediction: Callable[[str], np.ndarray]) -> dict:
    """Write round ``round_id``'s open queries for tool ``fmt`` ('label-studio' | 'cvat') into
    ``out_dir``: ``images/<name>.png`` (``image(name)``: uint8 (H, W, 3) RGB at the labels'
    resolution) and the tool's import file(s), with ``prediction(name)`` (uint8 (H, W) trainIds)
    inside each region as the pre-annotation. Returns {"images", "queries", "files"}. InvalidInput
    for an unknown format or a round without open queries."""
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    rnd = get_round(db, round_id)
    groups = _round_images(db, round_id)
    if rnd is None or not groups:
        raise InvalidInput(f"round {rnd['idx'] if rnd else round_id} has no open queries to export")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    entries = []
    for name, queries in sorted(groups.items()):
        img, pred = image(name), prediction(name)
        ok, buf = cv2.imencode(".png", np.ascontiguousarray(img[..., ::-1]))
        atomic_write(out / "images" / f"{name}.png", buf.tobytes())
        entries.append((name, pred, queries))
    if fmt == "label-studio":
        files = _ls_export(out, entries, label_space, rnd)
    else:
        files = _cvat_export(out, entries, label_space, rnd)
    return {"images": len(entries), "queries": sum(len(q) for _, _, q in entries), "files": files}


def _box(q) -> tuple[int, int, int, int]:
    return int(q["y0"]), int(q["x0"]), int(q["y1"]), int(q["x1"])


def _ls_export(out: Path, entries, space: LabelSpace, rnd: dict) -> list[str]:
    brush = _brush()
    names = {c.train_id: c.name for c in space.classes}
    tasks = []
    for name, pred, queries in entries:
        H, W = pred.shape
        result, meta = [], []
        common = {"to_name": "image", "original_width": W, "original_height": H, "image_rotation": 0}
        inside = np.zeros((H, W), bool)
        for q in queries:
            if q["kind"] == "region":
                y0, x0, y1, x1 = _box(q)
                inside[y0:y1, x0:x1] = True
                meta.append({"id": q["id"], "kind": "region", "box": [y0, x0, y1, x1]})
                result.append({**common, "from_name": QUERY_LABEL, "type": "rectanglelabels", "id": f"q{q['id']}",
                               "value": {"x": 100 * x0 / W, "y": 100 * y0 / H, "width": 100 * (x1 - x0) / W,
                                         "height": 100 * (y1 - y0) / H, "rotation": 0,
                                         "rectanglelabels": [QUERY_LABEL]}})
            else:
                y, x = int(q["y"]), int(q["x"])
                meta.append({"id": q["id"], "kind": "pixel", "y": y, "x": x})
                result.append({**common, "from_name": "point", "type": "keypointlabels", "id": f"p{q['id']}",
                               "value": {"x": 100 * (x + 0.5) / W, "y": 100 * (y + 0.5) / H, "width": 0.5,
                                         "keypointlabels": [names.get(int(pred[y, x]), names[0])]}})
        for cls in np.unique(pred[inside]):
            if int(cls) not in names:
                continue
            mask = ((pred == cls) & inside).astype(np.uint8) * 255
            result.append({**common, "from_name": "class", "type": "brushlabels", "id": f"b{int(cls)}",
                           "value": {"format": "rle", "rle": [int(v) for v in brush.mask2rle(mask)],
                                     "brushlabels": [names[int(cls)]]}})
        tasks.append({"data": {"image": f"/data/local-files/?d=images/{name}.png",
                               "segstudio": {"image": name, "round": rnd["idx"], "height": H, "width": W,
                                             "queries": meta}},
                      "predictions": [{"model_version": f"segstudio round {rnd['idx']} pre-fill", "result": result}]})
    labels = "".join(f'    <Label value="{c.name}" background="{_hex(c.color)}"/>\n' for c in space.classes)
    config = ("<View>\n  <Image name=\"image\" value=\"$image\" zoom=\"true\"/>\n"
              f"  <BrushLabels name=\"class\" toName=\"image\">\n{labels}  </BrushLabels>\n"
              f"  <KeyPointLabels name=\"point\" toName=\"image\">\n{labels}  </KeyPointLabels>\n"
              f"  <RectangleLabels name=\"{QUERY_LABEL}\" toName=\"image\">\n"
              f"    <Label value=\"{QUERY_LABEL}\" background=\"#ff0000\"/>\n  </RectangleLabels>\n</View>\n")
    atomic_write(out / "tasks.json", json.dumps(tasks).encode())
    atomic_write(out / "label_config.xml", config.encode())
    return list(LS_FILES)


def cvat_rle(mask: np.ndarray) -> list[int]:
    """CVAT's mask RLE of a bool (h, w) mask: run lengths, row-major, starting with background."""
    flat = mask.ravel().astype(np.int8)
    edges = np.flatnonzero(np.diff(flat)) + 1
    runs = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] + runs) if flat.size and flat[0] else runs


def cvat_unrle(counts: list[int], h: int, w: int) -> np.ndarray:
    """The bool (h, w) mask of CVAT's mask RLE; InvalidInput when the runs do not cover h*w pixels."""
    if sum(counts) != h * w or any(c < 0 for c in counts):
        raise InvalidInput(f"a mask's runs cover {sum(counts)} pixels, but its box has {h}x{w} = {h * w}")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape(h, w)


def _cvat_export(out: Path, entries, space: LabelSpace, rnd: dict) -> list[str]:
    names = {c.train_id: c.name for c in space.classes}
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    task = ET.SubElement(ET.SubElement(root, "meta"), "task")
    ET.SubElement(task, "name").text = f"segstudio round {rnd['idx']}"
    ET.SubElement(task, "size").text = str(len(entries))
    ET.SubElement(task, "mode").text = "annotation"
    labels = ET.SubElement(task, "labels")
    for n, color in [(c.name, c.color) for c in space.classes] + [(QUERY_LABEL, (255, 0, 0))]:
        lab = ET.SubElement(labels, "label")
        ET.SubElement(lab, "name").text = n
        ET.SubElement(lab, "color").text = _hex(color)
        ET.SubElement(lab, "type").text = "any"
    for i, (name, pred, queries) in enumerate(entries):
        H, W = pred.shape
        im = ET.SubElement(root, "image", id=str(i), name=f"{name}.png", width=str(W), height=str(H))
        for q in queries:
            if q["kind"] == "region":
                y0, x0, y1, x1 = _box(q)
                ET.SubElement(im, "box", label=QUERY_LABEL, source="auto", occluded="0", xtl=f"{x0}", ytl=f"{y0}",
                              xbr=f"{x1}", ybr=f"{y1}", z_order="0")
                crop = pred[y0:y1, x0:x1]
                for cls in np.unique(crop):
                    if int(cls) in names:
                        ET.SubElement(im, "mask", label=names[int(cls)], source="auto", occluded="0",
                                      rle=", ".join(map(str, cvat_rle(crop == cls))), left=str(x0), top=str(y0),
                                      width=str(x1 - x0), height=str(y1 - y0), z_order="0")
            else:
                y, x = int(q["y"]), int(q["x"])
                ET.SubElement(im, "points", label=names.get(int(pred[y, x]), names[0]), source="auto",
                              occluded="0", points=f"{x + 0.5:.2f},{y + 0.5:.2f}", z_order="1")
    ET.indent(root)
    atomic_write(out / CVAT_FILE, b'<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="utf-8"))
    return [CVAT_FILE]


# ------------------------------------------------------------------------------------------ import

def read_tool_export(path: str | os.PathLike, fmt: str, label_space: LabelSpace,
                     sizes: dict[str, tuple[int, int]], annotator: str | None = None,
                     round_idx: int | None = None) -> list[ToolDrawing]:
    """Read a tool's export of labeled tasks: Label Studio's JSON export (``fmt='label-studio'``) or
    a CVAT for images 1.1 ``annotations.xml`` (``fmt='cvat'``). ``sizes``: the project's images
    {name: (H, W)}; every image must be one of them at that size. ``annotator``: the name stored
    with the answers (default: 'label-studio:<user>' from each annotation's ``completed_by``, or
    'cvat'). ``round_idx``: the open round; a file exported for another round is refused. Raises
    InvalidInput with one line naming the file and what is wrong (not that tool's format, another
    round's export, an image the project does not have, a size that differs, a label that is not a
    class, a broken mask or point, two drawings of one image under one annotator name)."""
    p = Path(path)
    if fmt not in FORMATS:
        raise InvalidInput(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if not p.is_file():
        raise InvalidInput(f"{p}: no such file")
    by_name = {c.name: c.train_id for c in label_space.classes}
    try:
        if fmt == "label-studio":
            drawings = _ls_read(p, by_name, sizes, annotator, round_idx)
        else:
            drawings = _cvat_read(p, by_name, sizes, annotator or "cvat", round_idx)
        seen = set()
        for d in drawings:
            if (d.image, d.annotator) in seen:
                raise InvalidInput(f"image {d.image} has two drawings that would both be stored as "
                                   f"{d.annotator!r} (several annotations of one task and --annotator?)")
            seen.add((d.image, d.annotator))
        return drawings
    except InvalidInput as e:
        raise InvalidInput(f"{p}: {e}") from None


def _class_of(label: str, by_name: dict[str, int], where: str) -> int:
    if label not in by_name:
        raise InvalidInput(f"{where}: label {label!r} is not a class of this project")
    return by_name[label]


def _ls_read(p: Path, by_name, sizes, annotator, round_idx) -> list[ToolDrawing]:
    try:
        tasks = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidInput(f"not a Label Studio JSON export ({e})") from None
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InvalidInput("not a Label Studio JSON export (expected a list of tasks)")
    brush = _brush()
    out = []
    for ti, task in enumerate(tasks):
        meta = (task.get("data") or {}).get("segstudio") if isinstance(task.get("data"), dict) else None
        if not isinstance(meta, dict) or "image" not in meta:
            raise InvalidInput(f"task {ti} was not exported by 'launch.py export --format label-studio' "
                               "(no data.segstudio)")
        name = str(meta["image"])
        if round_idx is not None and meta.get("round") != round_idx:
            raise InvalidInput(f"task {ti} was exported for round {meta.get('round')}, but round {round_idx} is "
                               "open: export the open round again")
        if name not in sizes:
            raise InvalidInput(f"task {ti}: image {name!r} is not in this project")
        H, W = sizes[name]
        for ai, ann in enumerate(task.get("annotations") or []):
            if not isinstance(ann, dict) or ann.get("was_cancelled"):
                continue
            where = f"task {ti} ({name}) annotation {ai}"
            who = ann.get("completed_by")
            who = who.get("email") or who.get("id") if isinstance(who, dict) else who
            d = ToolDrawing(name, annotator or f"label-studio:{who if who is not None else 'unknown'}",
                            np.full((H, W), IGNORE, np.uint8))
            for r in ann.get("result") or []:
                v = r.get("value") or {} if isinstance(r, dict) else {}
                kind = r.get("type") if isinstance(r, dict) else None
                if kind == "brushlabels":
                    if (r.get("original_width"), r.get("original_height")) != (W, H):
                        raise InvalidInput(f"{where}: a brush mask of {r.get('original_height')}x"
                                           f"{r.get('original_width')}, but the image is {H}x{W} (HxW)")
                    cls = _class_of((v.get("brushlabels") or [None])[0], by_name, where)
                    try:
                        flat = np.asarray(brush.decode_rle(v["rle"]), np.uint8)
                    except Exception as e:  # noqa: BLE001 - any failure of the decoder is a broken mask
                        raise InvalidInput(f"{where}: a brush mask that does not decode ({type(e).__name__})") from None
                    if flat.size != H * W * 4:
                        raise InvalidInput(f"{where}: a brush mask of {flat.size // 4} pixels for a {H}x{W} image")
                    d.classes[flat.reshape(H, W, 4)[..., 3] > 0] = cls
                elif kind == "keypointlabels":
                    cls = _class_of((v.get("keypointlabels") or [None])[0], by_name, where)
                    try:
                        x, y = int(float(v["x"]) * W / 100), int(float(v["y"]) * H / 100)
                    except (KeyError, TypeError, ValueError):
                        raise InvalidInput(f"{where}: a keypoint without numeric x, y") from None
                    if not (0 <= y < H and 0 <= x < W):
                        raise InvalidInput(f"{where}: a point outside the image ({y}, {x})")
                    d.points[(y, x)] = cls
            out.append(d)
    return out


def _number(value, what: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"{what} {value!r} is not a number") from None


def _cvat_read(p: Path, by_name, sizes, annotator: str, round_idx) -> list[ToolDrawing]:
    try:
        root = ET.parse(p).getroot()
    except (OSError, ET.ParseError) as e:
        raise InvalidInput(f"not a CVAT XML export ({e})") from None
    if root.tag != "annotations" or (root.findtext("version") or "").strip() != "1.1":
        raise InvalidInput("not a 'CVAT for images 1.1' export (expected <annotations> with <version>1.1)")
    task = (root.findtext("meta/task/name") or "").strip()
    if round_idx is not None and task.startswith("segstudio round ") and task != f"segstudio round {round_idx}":
        raise InvalidInput(f"the task {task!r} was exported for another round, but round {round_idx} is open: "
                           "export the open round again")
    out = []
    for im in root.iter("image"):
        name = Path(im.get("name", "")).stem
        if name not in sizes:
            raise InvalidInput(f"image {im.get('name')!r} is not in this project")
        H, W = sizes[name]
        if (_number(im.get("height"), "height"), _number(im.get("width"), "width")) != (H, W):
            raise InvalidInput(f"image {name}: {im.get('height')}x{im.get('width')} in the file, {H}x{W} in the "
                               "project (HxW)")
        d = ToolDrawing(name, annotator, np.full((H, W), IGNORE, np.uint8))
        shapes = sorted(enumerate(im), key=lambda t: (_number(t[1].get("z_order", 0), "z_order"), t[0]))
        for _, s in shapes:
            label = s.get("label", "")
            if label == QUERY_LABEL or s.tag == "box":
                continue
            where = f"image {name}, <{s.tag} label={label!r}>"
            cls = _class_of(label, by_name, where)
            try:
                if s.tag == "mask":
                    x0, y0, w, h = (int(float(s.get(k))) for k in ("left", "top", "width", "height"))
                    if x0 < 0 or y0 < 0 or x0 + w > W or y0 + h > H:
                        raise InvalidInput(f"{where}: box ({y0}, {x0}, {h}x{w}) outside the {H}x{W} image")
                    m = cvat_unrle([int(float(c)) for c in s.get("rle", "").split(",") if c.strip()], h, w)
                    d.classes[y0:y0 + h, x0:x0 + w][m] = cls
                elif s.tag == "polygon":   # a pixel is inside when its centre (x + 0.5, y + 0.5) is
                    pts = np.array([[float(c) for c in xy.split(",")] for xy in s.get("points", "").split(";")])
                    d.classes[polygon2mask((H, W), pts[:, ::-1] - 0.5)] = cls
                elif s.tag == "points":
                    for xy in s.get("points", "").split(";"):
                        x, y = (int(float(c)) for c in xy.split(","))
                        if not (0 <= y < H and 0 <= x < W):
                            raise InvalidInput(f"{where}: a point outside the image ({y}, {x})")
                        d.points[(y, x)] = cls
            except (TypeError, ValueError) as e:
                if isinstance(e, InvalidInput):
                    raise
                raise InvalidInput(f"{where}: malformed ({e})") from None
        out.append(d)
    return out


def answers_from_drawings(db: Database, round_id: int, drawings: list[ToolDrawing],
                          prediction: Callable[[str], np.ndarray] | None = None,
                          prefill: str | None = None) -> tuple[list[dict], int]:
    """The answers the drawings give to round ``round_id``'s queries (not those set aside as
    skipped or flagged): a region query takes the drawing inside its box (255 where nothing was
    drawn; a box with nothing drawn is no answer), a pixel query the point drawn on it (else the
    class painted there). ``prediction(name)``: the exported pre-annotation; an answer equal to it
    is left out (a tool that turns the pre-annotation into annotations, as CVAT's upload does,
    cannot tell what a person looked at). Returns (rows {"query_id", "annotator", "patch" |
    "point_class", "prefill"} for :func:`storage.import_labels`, how many were left out)."""
    queries: dict[str, list[dict]] = {}
    for q in round_queries(db, round_id):
        if q["status"] not in ("skipped", "flagged"):
            queries.setdefault(q["name"], []).append(q)
    rows, untouched = [], 0
    for d in drawings:
        for q in queries.get(d.image, []):
            if q["kind"] == "region":
                y0, x0, y1, x1 = _box(q)
                patch = np.full((y1 - y0, x1 - x0), IGNORE, np.uint8)
                sub = d.classes[y0:y1, x0:x1]
                patch[:sub.shape[0], :sub.shape[1]] = sub
                if not (patch != IGNORE).any():
                    continue
                if prediction is not None and np.array_equal(sub, prediction(d.image)[y0:y1, x0:x1]):
                    untouched += 1
                    continue
                rows.append({"query_id": int(q["id"]), "annotator": d.annotator, "patch": patch, "prefill": prefill})
            else:
                y, x = int(q["y"]), int(q["x"])
                cls = d.points.get((y, x), int(d.classes[y, x]))
                if cls == IGNORE:
                    continue
                if prediction is not None and cls == int(prediction(d.image)[y, x]):
                    untouched += 1
                    continue
                rows.append({"query_id": int(q["id"]), "annotator": d.annotator, "point_class": int(cls),
                             "prefill": prefill})
    return rows, untouched
