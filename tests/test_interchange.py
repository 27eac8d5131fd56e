"""Round trips with Label Studio and CVAT on projects that `launch.py` made (no --oracle: the run is
stopped while it waits in the annotator, its round 1 queries open).

Each test edits the exported file the way the tool would after a person labeled (fixtures follow the
tools' documented formats: Label Studio 1.x JSON export with BrushLabels RLE from
label_studio_converter.brush, KeyPointLabels in percent; CVAT for images 1.1 XML with <mask rle>,
<polygon>, <points>), imports it with `launch.py import`, and checks `storage.label_mask` against
the edit; a malformed or foreign file gives one error line and stores nothing; importing the same
file again stores nothing twice.
"""
import json
import shutil
import sqlite3
import xml.etree.ElementTree as ET

import numpy as np
import pytest

import storage
from storage.interchange import cvat_rle, cvat_unrle
from tests.test_input_faults import cli, one_error_line
from tests.test_loop_browser import SYNTH, _start

CAR, PERSON = 13, 11      # Cityscapes trainIds


def _made_by_launch(tmp_path_factory, cache, name, args):
    tmp = tmp_path_factory.mktemp(name)
    proj = _start(tmp, name, [*SYNTH, *args, "--rounds", "1"], cache)
    try:
        proj.wait_for_annotator(1)
    finally:
        proj.proc.kill()
        proj.proc.wait()
    return proj.workdir


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def region_project(tmp_path_factory, cache):
    return _made_by_launch(tmp_path_factory, cache, "ra", ["--budget", "2.2%", "--region-radius", "2"])


@pytest.fixture(scope="module")
def pixel_project(tmp_path_factory, cache):
    return _made_by_launch(tmp_path_factory, cache, "pa", ["--budget", "40px", "--region-radius", "2"])


@pytest.fixture
def workdir(request, tmp_path):
    """A copy of a module project (each test changes its store)."""
    src = request.getfixturevalue(request.param)
    dst = tmp_path / "w"
    shutil.copytree(src, dst)
    return dst


def _labels(w) -> int:
    con = sqlite3.connect(w / "project.db")
    n = con.execute("SELECT count(*) FROM labels").fetchone()[0] + \
        con.execute("SELECT count(*) FROM label_history").fetchone()[0]
    con.close()
    return n


def _queries(w) -> list[dict]:
    db = storage.open_store(w, create=False)
    try:
        return storage.round_queries(db, storage.current_round(db)["id"])
    finally:
        db.close()


def _pred(w, name) -> np.ndarray:
    with np.load(w / "cache" / "round1" / f"{name}.npz") as z:
        return z["pred"]


def _mask(w, name) -> np.ndarray:
    db = storage.open_store(w, create=False)
    try:
        return storage.label_mask(db, name)
    finally:
        db.close()


@pytest.mark.parametrize("workdir", ["region_project"], indirect=True)
def test_label_studio_round_trip_of_region_queries(workdir, tmp_path, capsys):
    from label_studio_converter import brush

    out = tmp_path / "ls"
    rc, _, err = cli(capsys, "export", "--format", "label-studio", "--workdir", workdir, "--out", out)
    assert rc == 0, err
    tasks = json.loads((out / "tasks.json").read_text())
    assert "<BrushLabels" in (out / "label_config.xml").read_text()
    queries = _queries(workdir)
    assert sum(len(t["data"]["segstudio"]["queries"]) for t in tasks) == len(queries) > 0
    expected = {}
    for t in tasks:    # the pre-annotation is the model's prediction inside the boxes
        meta = t["data"]["segstudio"]
        name, H, W = meta["image"], meta["height"], meta["width"]
        assert (out / "images" / f"{name}.png").exists()
        pred, shown = _pred(workdir, name), np.full((H, W), 255, np.uint8)
        names = {c: i for i, c in enumerate(storage_names())}
        for r in t["predictions"][0]["result"]:
            if r["type"] == "brushlabels":
                m = np.asarray(brush.decode_rle(r["value"]["rle"])).reshape(H, W, 4)[..., 3] > 0
                shown[m] = names[r["value"]["brushlabels"][0]]
        want = np.full((H, W), 255, np.uint8)
        for q in meta["queries"]:
            y0, x0, y1, x1 = q["box"]
            want[y0:y1, x0:x1] = pred[y0:y1, x0:x1]
        assert (shown == want).all()
        # the annotator keeps the prediction and paints the first query's box "car" (what LS exports)
        y0, x0, y1, x1 = meta["queries"][0]["box"]
        want[y0:y1, x0:x1] = CAR
        expected[name] = want
        result = [r for r in t["predictions"][0]["result"] if r["type"] != "brushlabels"]
        for cls in np.unique(want[want != 255]):
            result.append({"from_name": "class", "to_name": "image", "type": "brushlabels", "original_width": W,
                           "original_height": H, "image_rotation": 0,
                           "value": {"format": "rle", "rle": [int(v) for v in brush.mask2rle(
                               (want == cls).astype(np.uint8) * 255)], "brushlabels": [storage_names()[cls]]}})
        t["annotations"] = [{"id": 1, "completed_by": 7, "was_cancelled": False, "result": result,
                             "lead_time": 12.5}]
    exported = tmp_path / "ls_export.json"
    exported.write_text(json.dumps(tasks))

    # foreign and malformed files: one line, nothing stored
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps([{"data": {"image": "x.png"}, "annotations": []}]))
    bad_class = tmp_path / "bad_class.json"
    bad = json.loads(exported.read_text())
    bad[-1]["annotations"][0]["result"][-1]["value"]["brushlabels"] = ["unicorn"]
    bad_class.write_text(json.dumps(bad))
    not_json = tmp_path / "not.json"
    not_json.write_text("<annotations/>")
    stale = tmp_path / "stale.json"
    old = json.loads(exported.read_text())
    old[0]["data"]["segstudio"]["round"] = 0
    stale.write_text(json.dumps(old))
    for f, words in ((foreign, "data.segstudio"), (bad_class, "unicorn"), (not_json, "not a Label Studio"),
                     (stale, "exported for round 0")):
        rc, _, err = cli(capsys, "import", "--format", "label-studio", "--workdir", workdir, f)
        line = one_error_line(err)
        assert rc == 2 and words in line, line
        assert _labels(workdir) == 0

    rc, out_text, err = cli(capsys, "import", "--format", "label-studio", "--workdir", workdir, exported)
    assert rc == 0, err
    assert f"imported {len(queries)} answers" in out_text, out_text
    for name, want in expected.items():
        assert (_mask(workdir, name) == want).all()
    con = sqlite3.connect(workdir / "project.db")
    assert {r[0] for r in con.execute("SELECT DISTINCT annotator FROM labels")} == {"label-studio:7"}
    con.close()
    n = _labels(workdir)
    rc, out_text, _ = cli(capsys, "import", "--format", "label-studio", "--workdir", workdir, exported)
    assert rc == 0 and "imported 0 answers" in out_text and _labels(workdir) == n   # nothing stored twice


def storage_names():
    from core.data.labels import CITYSCAPES19
    return CITYSCAPES19.names


def _export_cvat(workdir, tmp_path, capsys) -> ET.ElementTree:
    out = tmp_path / "cvat"
    rc, _, err = cli(capsys, "export", "--format", "cvat", "--workdir", workdir, "--out", out)
    assert rc == 0, err
    return ET.parse(out / "annotations.xml")


@pytest.mark.parametrize("workdir", ["pixel_project"], indirect=True)
def test_cvat_round_trip_of_pixel_queries(workdir, tmp_path, capsys):
    tree = _export_cvat(workdir, tmp_path, capsys)
    root = tree.getroot()
    assert root.findtext("version") == "1.1"
    queries = {(q["name"], q["y"], q["x"]): q for q in _queries(workdir)}
    points = [(im, p) for im in root.iter("image") for p in im.iter("points")]
    assert len(points) == len(queries) > 0
    expected = {}
    for k, (im, p) in enumerate(points):   # the annotator relabels every other point "person" (CVAT keeps x,y)
        name = im.get("name")[:-4]
        x, y = (int(float(v)) for v in p.get("points").split(","))
        assert (name, y, x) in queries
        assert p.get("label") == storage_names()[_pred(workdir, name)[y, x]]     # pre-filled with the prediction
        if k % 2:
            p.set("label", "person")
            p.set("source", "manual")
        expected[(name, y, x)] = storage_names().index(p.get("label"))
    edited = tmp_path / "annotations.xml"
    tree.write(edited, encoding="utf-8", xml_declaration=True)

    other = tmp_path / "v10.xml"      # a CVAT export of another version: refused, nothing stored
    other.write_text(edited.read_text().replace("<version>1.1</version>", "<version>2.0</version>"))
    rc, _, err = cli(capsys, "import", "--format", "cvat", "--workdir", workdir, other)
    assert rc == 2 and "1.1" in one_error_line(err) and _labels(workdir) == 0

    rc, out_text, err = cli(capsys, "import", "--format", "cvat", "--workdir", workdir, edited,
                            "--annotator", "ann")
    assert rc == 0, err
    relabeled = {k for k, c in expected.items() if c == PERSON and storage_names()[_pred(workdir, k[0])[k[1], k[2]]]
                 != "person"}
    assert relabeled
    for (name, y, x), cls in expected.items():   # points left at the pre-annotation are not answers (yet)
        assert _mask(workdir, name)[y, x] == (cls if (name, y, x) in relabeled else 255)
    assert f"{len(expected) - len(relabeled)} left out" in out_text, out_text
    rc, out_text, err = cli(capsys, "import", "--format", "cvat", "--workdir", workdir, edited,
                            "--annotator", "ann", "--accept-unchanged")
    assert rc == 0, err
    for (name, y, x), cls in expected.items():
        assert _mask(workdir, name)[y, x] == cls


@pytest.mark.parametrize("workdir", ["region_project"], indirect=True)
def test_cvat_masks_and_polygons_answer_region_queries(workdir, tmp_path, capsys):
    tree = _export_cvat(workdir, tmp_path, capsys)
    im = next(iter(tree.getroot().iter("image")))
    name = im.get("name")[:-4]
    box = next(iter(im.iter("box")))
    x0, y0, x1, y1 = (int(float(box.get(k))) for k in ("xtl", "ytl", "xbr", "ybr"))
    for m in [m for m in im.iter("mask") if (int(m.get("left")), int(m.get("top"))) == (x0, y0)]:
        im.remove(m)          # the annotator replaced the first box's masks by two polygons sharing an edge
    xm = x0 + 2
    ET.SubElement(im, "polygon", label="car", source="manual", occluded="0", z_order="2",
                  points=f"{x0}.0,{y0}.0;{xm}.0,{y0}.0;{xm}.0,{y1}.0;{x0}.0,{y1}.0")
    ET.SubElement(im, "polygon", label="person", source="manual", occluded="0", z_order="2",
                  points=f"{xm}.0,{y0}.0;{x1}.0,{y0}.0;{x1}.0,{y1}.0;{xm}.0,{y1}.0")
    edited = tmp_path / "annotations.xml"
    tree.write(edited, encoding="utf-8", xml_declaration=True)
    rc, _, err = cli(capsys, "import", "--format", "cvat", "--workdir", workdir, edited)
    assert rc == 0, err
    got = _mask(workdir, name)
    assert (got[y0:y1, x0:xm] == CAR).all() and (got[y0:y1, xm:x1] == PERSON).all()   # [x0, xm) and [xm, x1)
    others = [(int(float(b.get("ytl"))), int(float(b.get("xtl")))) for b in im.iter("box")][1:]
    for y, x in others:   # boxes whose masks nobody touched are no answers (CVAT's upload made them annotations)
        assert got[y, x] == 255


def test_cvat_mask_rle_matches_the_documented_runs():
    m = np.array([[0, 0, 1], [1, 1, 0]], bool)
    assert cvat_rle(m) == [2, 3, 1]                   # background first
    assert cvat_rle(~m) == [0, 2, 3, 1]              # a mask starting with foreground starts with 0
    assert (cvat_unrle([2, 3, 1], 2, 3) == m).all()
    with pytest.raises(storage.InvalidInput):
        cvat_unrle([2, 3], 2, 3)
