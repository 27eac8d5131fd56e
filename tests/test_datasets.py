"""Real-dataset loaders (GTA5, SYNTHIA, Cityscapes, folder) and the registry, on tiny trees built in tmp_path
in the official layouts (tests/fixtures_datasets.py)."""
from __future__ import annotations

import json
import os
import pickle
import sys
import types

import cv2
import numpy as np
import pytest
from PIL import Image

from core.data.base import DatasetError, check_sample
from core.data.cityscapes import Cityscapes
from core.data.folder import ImageFolder, cityscapes_id_map
from core.data.gta5 import GTA5
from core.data.labels import CITYSCAPES19, SYNTHIA16, cityscapes_id_to_train
from core.data.registry import build_dataset, parse_dataset_spec
from core.data.synthia import SYNTHIA_CLASSES, Synthia, synthia_id_map
from tests.fixtures_datasets import (CITYSCAPES_IDS, SYNTHIA_IDS, make_cityscapes, make_folder, make_gta5,
                                     make_synthia, synthia_depth_cm, truncate, write_ids, write_png16, write_rgb)


def cs_table() -> dict[int, int]:
    """labelId -> trainId straight from cityscapesscripts (255 for void), independent of the loaders."""
    from cityscapesscripts.helpers.labels import labels
    return {lb.id: (lb.trainId if 0 <= lb.trainId < 255 else 255) for lb in labels if lb.id >= 0}


def one_line_error(excinfo, *fragments):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for f in fragments:
        assert str(f) in msg, (f, msg)
    return msg


# ------------------------------------------------------------------------------------------ id tables

def test_cityscapes_id_table_matches_cityscapesscripts():
    m = cityscapes_id_map(CITYSCAPES19)
    assert np.array_equal(m.lut[:256], cityscapes_id_to_train())
    for lid, tid in cs_table().items():
        assert m.lut[lid] == tid, lid
    assert (m.lut[7], m.lut[26], m.lut[24], m.lut[33]) == (0, 13, 11, 18)
    assert all(m.lut[i] == 255 for i in (0, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 255))


def test_synthia_id_table():
    m16, m19 = synthia_id_map(16), synthia_id_map(19)
    t16 = {c.name: c.train_id for c in SYNTHIA16.classes}
    expect16 = {3: t16["road"], 4: t16["sidewalk"], 2: t16["building"], 21: t16["wall"], 5: t16["fence"],
                7: t16["pole"], 15: t16["traffic light"], 9: t16["traffic sign"], 6: t16["vegetation"],
                1: t16["sky"], 10: t16["person"], 17: t16["rider"], 8: t16["car"], 19: t16["bus"],
                12: t16["motorcycle"], 11: t16["bicycle"]}
    assert expect16[3] == 0 and expect16[11] == 15 and expect16[1] == 9 and expect16[8] == 12
    for sid in SYNTHIA_CLASSES:
        assert m16.lut[sid] == expect16.get(sid, 255), (sid, SYNTHIA_CLASSES[sid])
    # 19-class variant: terrain, truck, train keep their Cityscapes trainIds; lanemarking etc. are ignored
    assert (m19.lut[16], m19.lut[18], m19.lut[20], m19.lut[1], m19.lut[22], m19.lut[0]) == (9, 14, 16, 10, 255, 255)
    with pytest.raises(DatasetError):
        synthia_id_map(13)


# ----------------------------------------------------------------------------------------------- GTA5

def test_gta5_samples_sizes_and_mapping(tmp_path):
    root = make_gta5(tmp_path / "gta", 3, size=(40, 72))
    ds = GTA5(root, size=(20, 36))
    assert len(ds) == 3 and ds.names == ["00001", "00002", "00003"] and ds.label_space is CITYSCAPES19
    for s in ds:
        check_sample(s, 19)
        assert s["image"].shape == (20, 36, 3) and s["label"].shape == (20, 36) and "depth" not in s
    raw = np.asarray(Image.open(root / "labels" / "00002.png"))  # palette indices = labelIds
    full = ds.label(1)  # default: full resolution
    assert full.shape == (40, 72)
    table = cs_table()
    assert np.array_equal(full, np.vectorize(lambda v: table[v])(raw).astype(np.uint8))
    assert set(np.unique(full[raw == 7])) == {0} and set(np.unique(full[raw == 26])) == {13}
    assert set(np.unique(full[raw == 1])) == {255}
    # label_size options
    assert GTA5(root, size=(20, 36), label_size="full")[0]["label"].shape == (40, 72)
    assert GTA5(root, size=(20, 36), label_size=(10, 18))[0]["label"].shape == (10, 18)
    s = GTA5(root, size=None)[0]
    assert s["image"].shape == (40, 72, 3) and s["label"].shape == (40, 72)
    # nearest resize keeps the layout: top row sky (10), bottom row void (255), road band 0
    lab = ds[0]["label"]
    assert set(np.unique(lab[0])) == {10} and set(np.unique(lab[-1])) == {255} and lab[14, 1] == 0


def test_gta5_unknown_and_ignore_ids(tmp_path):
    root = make_gta5(tmp_path / "gta", 2)
    ids = np.asarray(Image.open(root / "labels" / "00002.png")).copy()
    ids[0, :5] = 40
    ids[1, :5] = 255
    write_ids(root / "labels" / "00002.png", ids, palette=True)
    ds = GTA5(root, size=(20, 36))  # construction is cheap: the label is not decoded yet
    with pytest.raises(DatasetError) as e:
        ds[1]
    one_line_error(e, "00002.png", "unknown label id", "40")
    lab = GTA5(root, size=None, unknown_ids="ignore")[1]["label"]
    assert (lab[0, :5] == 255).all() and (lab[1, :5] == 255).all()
    assert GTA5(root, size=None)[0]["label"].shape == (40, 72)  # the other file is fine
    with pytest.raises(DatasetError):
        GTA5(root, unknown_ids="maybe")


def test_gta5_missing_label_and_folders(tmp_path):
    root = make_gta5(tmp_path / "gta", 3)
    (root / "labels" / "00002.png").unlink()
    with pytest.raises(DatasetError) as e:
        GTA5(root)
    one_line_error(e, "00002.png", "no label")
    ds = GTA5(root, skip_bad=True)
    assert ds.names == ["00001", "00003"] and len(ds.skipped) == 1 and "00002" in ds.skipped[0]

    with pytest.raises(DatasetError) as e:
        GTA5(tmp_path / "nowhere")
    one_line_error(e, "nowhere", "not found")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    (tmp_path / "empty" / "labels").mkdir()
    with pytest.raises(DatasetError) as e:
        GTA5(tmp_path / "empty")
    one_line_error(e, "images", "no images (*.png)")
    (tmp_path / "nolabels" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        GTA5(tmp_path / "nolabels")
    one_line_error(e, "labels", "not found")


def test_truncated_and_corrupt_files(tmp_path):
    root = make_gta5(tmp_path / "gta", 3, size=(40, 72))
    truncate(root / "images" / "00002.png", 0.5)
    (root / "labels" / "00003.png").write_bytes(b"this is not a png")
    ds = GTA5(root, size=(20, 36))
    with pytest.raises(DatasetError) as e:
        ds[1]
    one_line_error(e, "00002.png", "cannot decode image")
    with pytest.raises(DatasetError) as e:
        ds[2]
    one_line_error(e, "00003.png", "cannot decode label")
    with pytest.raises(DatasetError) as e:
        ds.validate(progress=False)
    one_line_error(e, "00002.png", "corrupt or truncated")
    assert len(ds) == 3  # raising leaves the dataset as it was
    bad = ds.validate(progress=False, skip_bad=True)
    assert len(bad) == 2 and "00002.png" in bad[0] and "00003.png" in bad[1]
    assert ds.names == ["00001"] and check_sample(ds[0], 19) is None


def test_skip_bad_replaces_on_load(tmp_path):
    root = make_gta5(tmp_path / "gta", 3)
    truncate(root / "images" / "00002.png", 0.3)
    ds = GTA5(root, size=(20, 36), skip_bad=True)
    assert len(ds) == 3  # not found by the cheap construction checks
    s = ds[1]
    assert s["name"] == "00003" and len(ds.skipped) == 1 and "00002.png" in ds.skipped[0]
    with pytest.raises(IndexError):
        ds[3]
    assert ds[-1]["name"] == "00003"


def test_gta5_label_size_differs_from_image(tmp_path):
    root = make_gta5(tmp_path / "gta", 1, size=(40, 72))
    ids = np.asarray(Image.open(root / "labels" / "00001.png"))
    write_ids(root / "labels" / "00001.png", cv2.resize(ids, (70, 38), interpolation=cv2.INTER_NEAREST), palette=True)
    ds = GTA5(root, size=(20, 36))
    with pytest.raises(DatasetError) as e:     # refused like every kind: resizing would shift the pixels
        ds[0]
    one_line_error(e, "00001.png", "38x70 (HxW)", "40x72")
    with pytest.raises(DatasetError, match="38x70"):
        GTA5(root, size=(20, 36), label_size="full")[0]
    with pytest.raises(DatasetError, match="--skip-bad"):
        ds.check_sizes(progress=False)
    make_gta5(tmp_path / "gta", 2, size=(40, 72))     # a second, good pair
    write_ids(root / "labels" / "00001.png", cv2.resize(ids, (70, 38), interpolation=cv2.INTER_NEAREST), palette=True)
    ds = GTA5(root, size=(20, 36), skip_bad=True)
    problems = ds.check_sizes(progress=False)
    assert ds.names == ["00002"] and len(problems) == 1 and "00001.png" in problems[0]


def test_validate_full_decodes_and_checks_ids(tmp_path):
    root = make_gta5(tmp_path / "gta", 2)
    ids = np.asarray(Image.open(root / "labels" / "00001.png")).copy()
    ids[3, 3] = 99
    write_ids(root / "labels" / "00001.png", ids, palette=True)
    ds = GTA5(root, size=(20, 36))
    assert ds.validate(progress=False) == []  # header-level scan: the file is well-formed
    with pytest.raises(DatasetError) as e:
        ds.validate(progress=False, full=True)
    one_line_error(e, "00001.png", "99")


# ----------------------------------------------------------------------------------------------- cache

@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_resize_cache(tmp_path, monkeypatch, fmt):
    root = make_gta5(tmp_path / "gta", 2, size=(40, 72))
    cache = tmp_path / "cache"
    ds = GTA5(root, size=(20, 36), cache_dir=cache, cache_format=fmt)
    first = [ds[i] for i in range(2)]
    files = [p for p in cache.rglob("*") if p.is_file()]
    assert len(files) == 4 and not any(p.name.endswith(".tmp") for p in files)
    assert sum(p.suffix == f".{fmt}" for p in files) >= 2
    ref = GTA5(root, size=(20, 36))
    for i in range(2):
        assert np.array_equal(first[i]["image"], ref[i]["image"]) and np.array_equal(first[i]["label"], ref[i]["label"])

    import core.data.folder as folder

    def boom(*a, **k):
        raise AssertionError("decoded the source instead of the cache")
    monkeypatch.setattr(folder, "read_rgb", boom)
    monkeypatch.setattr(folder, "read_index_image", boom)
    again = GTA5(root, size=(20, 36), cache_dir=cache, cache_format=fmt)[0]
    assert np.array_equal(again["image"], first[0]["image"]) and np.array_equal(again["label"], first[0]["label"])
    monkeypatch.undo()

    # an edited source file (new mtime/size) is re-read
    p = root / "images" / "00001.png"
    write_rgb(p, np.full((40, 72, 3), 200, np.uint8))
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = GTA5(root, size=(20, 36), cache_dir=cache, cache_format=fmt)[0]
    assert (new["image"] == 200).all()
    # a different output size is a different entry
    assert GTA5(root, size=(10, 18), cache_dir=cache, cache_format=fmt)[0]["image"].shape == (10, 18, 3)


def test_dataset_pickles(tmp_path):
    root = make_gta5(tmp_path / "gta", 2)
    ds = GTA5(root, size=(20, 36), cache_dir=tmp_path / "c")
    ds2 = pickle.loads(pickle.dumps(ds))
    assert ds2.names == ds.names and np.array_equal(ds2[1]["label"], ds[1]["label"])


# ----------------------------------------------------------------------------------------- Cityscapes

def test_cityscapes_layout_and_mapping(tmp_path):
    root = make_cityscapes(tmp_path / "cs", n_train=3, n_val=2, size=(32, 64))
    ds = Cityscapes(root, "train", size=(16, 32))
    assert ds.names == ["aachen_000000_000019", "aachen_000001_000021", "bochum_000000_000020"]
    assert len(Cityscapes(root, "val", size=(16, 32))) == 2 and ds.has_labels
    for s in ds:
        check_sample(s, 19)
        assert s["image"].shape == (16, 32, 3) and s["label"].shape == (16, 32)
    stem = ds.names[0]
    raw = np.asarray(Image.open(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png"))
    full = Cityscapes(root, "train", size=(16, 32), label_size="full")[0]["label"]
    assert full.shape == (32, 64)
    assert set(np.unique(full[raw == 7])) == {0} and set(np.unique(full[raw == 26])) == {13}
    assert set(np.unique(full[raw == 24])) == {11} and set(np.unique(full[raw == 1])) == {255}
    table = cs_table()
    assert np.array_equal(full, np.vectorize(lambda v: table[v])(raw).astype(np.uint8))
    # void ids anywhere in 0..33 are accepted and ignored
    ids = raw.copy()
    ids[0, :8] = [0, 2, 3, 4, 5, 6, 9, 10]
    write_ids(root / "gtFine" / "train" / "aachen" / f"{stem}_gtFine_labelIds.png", ids)
    assert (Cityscapes(root, "train", label_size="full")[0]["label"][0, :8] == 255).all()


def test_cityscapes_in_synthia16_space(tmp_path):
    root = make_cityscapes(tmp_path / "cs", 1, 1)
    s = Cityscapes(root, "val", size=None, label_space=SYNTHIA16)[0]
    check_sample(s, 16)
    raw = np.asarray(Image.open(next((root / "gtFine" / "val").rglob("*_labelIds.png"))))
    assert s["label"][raw == 26][0] == 12 and s["label"][raw == 23][0] == 9 and s["label"][raw == 7][0] == 0
    ids = raw.copy()
    ids[0, 0], ids[0, 1] = 22, 27  # terrain, truck: not in SYNTHIA16
    write_ids(next((root / "gtFine" / "val").rglob("*_labelIds.png")), ids)
    lab = Cityscapes(root, "val", size=None, label_space=SYNTHIA16)[0]["label"]
    assert lab[0, 0] == 255 and lab[0, 1] == 255


def test_cityscapes_errors(tmp_path):
    root = make_cityscapes(tmp_path / "cs", 2, 1)
    with pytest.raises(DatasetError) as e:
        Cityscapes(root, "test")
    one_line_error(e, "leftImg8bit", "test", "not found")
    lab = next((root / "gtFine" / "train" / "bochum").glob("*_labelIds.png"))
    ids = np.asarray(Image.open(lab)).copy()
    ids[2, 2] = 34
    write_ids(lab, ids)
    with pytest.raises(DatasetError) as e:
        Cityscapes(root, "train")[1]
    one_line_error(e, lab.name, "unknown label id", "34", "0..33")
    lab.unlink()
    with pytest.raises(DatasetError) as e:
        Cityscapes(root, "train")
    one_line_error(e, "bochum_000000_000020_leftImg8bit.png", "no label")
    ds = Cityscapes(root, "train", require_labels=False)
    assert len(ds) == 2 and not ds.has_labels and (ds[1]["label"] == 255).all()
    assert ds.label(1).shape == (32, 64)
    import shutil
    shutil.rmtree(root / "gtFine")
    with pytest.raises(DatasetError) as e:
        Cityscapes(root, "train")
    one_line_error(e, "gtFine", "folder:PATH")
    assert not Cityscapes(root, "val", require_labels=False).has_labels
    shutil.rmtree(root / "leftImg8bit" / "val" / "frankfurt")
    with pytest.raises(DatasetError) as e:
        Cityscapes(root, "val", require_labels=False)
    one_line_error(e, "no <city>/*_leftImg8bit.png")


def test_cityscapes_label_size_mismatch_is_an_error(tmp_path):
    root = make_cityscapes(tmp_path / "cs", 1, 0)
    lab = next((root / "gtFine" / "train").rglob("*_labelIds.png"))
    write_ids(lab, np.full((30, 60), 7, np.uint8))
    ds = Cityscapes(root, "train", size=(16, 32))
    with pytest.raises(DatasetError) as e:
        ds.validate(progress=False)
    one_line_error(e, lab.name, "30x60 (HxW)", "32x64")
    with pytest.raises(DatasetError):
        Cityscapes(root, "train", label_size="full")[0]


# ---------------------------------------------------------------------------------------------- SYNTHIA

def test_synthia_16bit_ids_and_depth(tmp_path):
    root = make_synthia(tmp_path / "syn", 3, size=(38, 64))
    ds = Synthia(root, size=(19, 32))
    assert ds.label_space is SYNTHIA16 and ds.names == ["0000000", "0000001", "0000002"] and ds.has_depth
    for s in ds:
        check_sample(s, 16)
        assert s["image"].shape == (19, 32, 3) and s["label"].shape == (19, 32)
        assert s["depth"].dtype == np.float32 and s["depth"].shape == (19, 32)
    raw = cv2.imread(str(root / "GT" / "LABELS" / "0000001.png"), cv2.IMREAD_UNCHANGED)[:, :, 2]
    full = Synthia(root, size=None)[1]
    expect = {SYNTHIA_IDS["road"]: 0, SYNTHIA_IDS["sidewalk"]: 1, SYNTHIA_IDS["building"]: 2,
              SYNTHIA_IDS["vegetation"]: 8, SYNTHIA_IDS["sky"]: 9, SYNTHIA_IDS["person"]: 10,
              SYNTHIA_IDS["car"]: 12, SYNTHIA_IDS["void"]: 255}
    for sid, tid in expect.items():
        assert set(np.unique(full["label"][raw == sid])) == {tid}, (sid, tid)
    assert np.allclose(full["depth"], synthia_depth_cm(38, 64, 1) / 100.0)
    assert full["depth"][0, 0] == pytest.approx(50.01) and full["depth"][-1, 0] == pytest.approx(2.01)
    s19 = Synthia(root, size=None, num_classes=19)[1]
    assert s19["label"][raw == SYNTHIA_IDS["car"]][0] == 13 and s19["label"][raw == SYNTHIA_IDS["sky"]][0] == 10
    assert "depth" not in Synthia(root, depth=False)[0]


def test_synthia_errors(tmp_path):
    root = make_synthia(tmp_path / "syn", 3)
    p = root / "GT" / "LABELS" / "0000002.png"
    ids = cv2.imread(str(p), cv2.IMREAD_UNCHANGED)[:, :, 2].copy()
    ids[0, 0] = 300  # a 16-bit value, not a SYNTHIA id
    write_png16(p, ids)
    with pytest.raises(DatasetError) as e:
        Synthia(root)[2]
    one_line_error(e, "0000002.png", "unknown label id", "300")
    (root / "Depth" / "Depth" / "0000001.png").unlink()
    with pytest.raises(DatasetError) as e:
        Synthia(root)
    one_line_error(e, "0000001.png", "no depth")
    assert len(Synthia(root, depth=False)) == 3
    (root / "GT" / "LABELS" / "0000000.png").unlink()
    assert Synthia(root, depth=False, skip_bad=True).names == ["0000001", "0000002"]
    root2 = make_synthia(tmp_path / "syn2", 1, depth=False)
    assert not Synthia(root2).has_depth
    with pytest.raises(DatasetError) as e:
        Synthia(root2, depth=True)
    one_line_error(e, "Depth", "not found")


# ----------------------------------------------------------------------------------------------- folder

def test_folder_with_classes_json(tmp_path):
    root = make_folder(tmp_path / "f", 3, classes=["road", "car", "sky"], size=(24, 32))
    ds = ImageFolder(root)
    assert ds.label_space.names == ["road", "car", "sky"] and ds.label_space.num_classes == 3 and ds.has_labels
    assert ds.names == ["img_000", "img_001", "img_002"]
    raw = np.asarray(Image.open(root / "masks" / "img_001.png"))
    lab = ds[1]["label"]
    check_sample(ds[1], 3)
    assert lab.shape == (24, 32) and ds[1]["image"].shape == (24, 32, 3)
    for rid, tid in ((1, 0), (2, 1), (3, 2), (255, 255)):
        assert set(np.unique(lab[raw == rid])) == {tid}
    # ids need not equal train ids
    cj = [{"name": "thing", "id": 40, "color": [1, 2, 3]}, {"name": "stuff", "id": 7, "color": [4, 5, 6]}]
    root2 = make_folder(tmp_path / "f2", 1, classes=cj)
    (root2 / "masks" / "img_000.png").unlink()
    write_ids(root2 / "masks" / "img_000.png", np.array([[40, 7, 255, 40]] * 24 * 8, np.uint8).reshape(24, 32))
    lab2 = ImageFolder(root2)[0]["label"]
    assert (lab2[0, :4] == [0, 1, 255, 0]).all()


def test_folder_without_classes_json_uses_cityscapes_label_ids(tmp_path):
    root = make_folder(tmp_path / "f", 2, classes=None)
    ds = ImageFolder(root, split="train")  # no split folders: every split is the flat folder
    assert ds.label_space is CITYSCAPES19 and len(ds) == 2
    raw = np.asarray(Image.open(root / "masks" / "img_000.png"))
    lab = ds[0]["label"]
    check_sample(ds[0], 19)
    assert lab[raw == CITYSCAPES_IDS["road"]][0] == 0 and lab[raw == CITYSCAPES_IDS["car"]][0] == 13
    assert lab[raw == CITYSCAPES_IDS["void"]][0] == 255
    tr = ImageFolder(root, mask_format="train_ids", require_labels=True)
    with pytest.raises(DatasetError) as e:  # labelIds such as 21, 23, 26 are not train ids 0..18
        tr[0]
    one_line_error(e, "img_000.png", "train ids 0..18")
    write_ids(root / "masks" / "img_001.png", np.full((24, 32), 18, np.uint8))
    assert (tr[1]["label"] == 18).all()
    with pytest.raises(DatasetError):
        ImageFolder(root, mask_format="rgb")


def test_folder_unknown_mask_id_and_bad_classes_json(tmp_path):
    root = make_folder(tmp_path / "f", 2, classes=["road", "car"])
    write_ids(root / "masks" / "img_001.png", np.full((24, 32), 9, np.uint8))
    ds = ImageFolder(root)
    with pytest.raises(DatasetError) as e:
        ds[1]
    one_line_error(e, "img_001.png", "unknown label id", "9", "classes")
    (root / "classes.json").write_text('[{"name": "road", "id": 1,]')
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "classes.json", "not valid JSON")
    (root / "classes.json").write_text(json.dumps({"road": 1}))
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "classes.json")
    (root / "classes.json").write_text(json.dumps([{"name": "road", "id": 255}]))
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "classes.json", "255")


def test_folder_mixed_sizes(tmp_path):
    root = make_folder(tmp_path / "f", 3, classes=None, size=(24, 32))
    write_rgb(root / "images" / "img_002.png", np.zeros((30, 40, 3), np.uint8))
    write_ids(root / "masks" / "img_002.png", np.full((30, 40), 7, np.uint8))
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "img_002.png", "mixed image sizes", "2 at 24x32", "1 at 30x40", "--target-size HxW")
    ds = ImageFolder(root, size=(24, 32))
    assert all(s["image"].shape == (24, 32, 3) and s["label"].shape == (24, 32) for s in ds)
    assert ImageFolder(root, size=(24, 32), label_size="full")[2]["label"].shape == (30, 40)


def test_folder_masks_missing_or_mismatched(tmp_path):
    root = make_folder(tmp_path / "f", 3, classes=None)
    (root / "masks" / "img_001.png").unlink()
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "img_001.png", "no mask")
    ds = ImageFolder(root, require_labels=False)
    assert len(ds) == 3 and not ds.has_labels and (ds[1]["label"] == 255).all()
    write_ids(root / "masks" / "img_002.png", np.full((20, 32), 7, np.uint8))
    ds = ImageFolder(root, require_labels=False)
    with pytest.raises(DatasetError) as e:
        ds.validate(progress=False)
    one_line_error(e, "img_002.png", "20x32 (HxW)", "24x32")
    assert ds.validate(progress=False, skip_bad=True) and ds.names == ["img_000", "img_001"]
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "masks" / "img_000.png")
    with pytest.raises(DatasetError) as e:
        ImageFolder(root, require_labels=False)[0]
    one_line_error(e, "img_000.png", "single-channel")


def test_folder_unlabeled_split_and_naming(tmp_path):
    root = make_folder(tmp_path / "f", 2, masks=False)
    ds = ImageFolder(root)
    assert not ds.has_labels and all((s["label"] == 255).all() and s["label"].shape == (24, 32) for s in ds)
    root = make_folder(tmp_path / "g", 2, classes=["road"], split="val")
    make_folder(tmp_path / "g", 3, classes=["road"], split="train")
    assert len(ImageFolder(root, split="val")) == 2 and len(ImageFolder(root, split="train")) == 3
    Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / "images" / "val" / "img_000.jpg")
    with pytest.raises(DatasetError) as e:
        ImageFolder(root, split="val")
    one_line_error(e, "img_000", "unique")
    (tmp_path / "e" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        ImageFolder(tmp_path / "e")
    one_line_error(e, "no images")
    with pytest.raises(DatasetError) as e:
        ImageFolder(tmp_path / "nope")
    one_line_error(e, "nope", "not found")


def test_folder_truncated_jpeg(tmp_path):
    root = make_folder(tmp_path / "f", 2, masks=False, size=(120, 160))
    for p in sorted((root / "images").glob("*.png")):
        Image.open(p).convert("RGB").save(p.with_suffix(".jpg"), quality=90)
        p.unlink()
    truncate(root / "images" / "img_001.jpg", 0.6)
    ds = ImageFolder(root)  # the header is intact: found by validate()
    assert ds[0]["image"].shape == (120, 160, 3)
    with pytest.raises(DatasetError) as e:
        ds.validate(progress=False)
    one_line_error(e, "img_001.jpg", "truncated")


def test_folder_corrupt_header_at_construction(tmp_path):
    root = make_folder(tmp_path / "f", 3)
    (root / "images" / "img_001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(DatasetError) as e:
        ImageFolder(root)
    one_line_error(e, "img_001.png", "not a readable image")
    assert ImageFolder(root, skip_bad=True).names == ["img_000", "img_002"]


# --------------------------------------------------------------------------------------------- registry

def test_parse_dataset_spec():
    assert parse_dataset_spec("gta5:/data/gta") == ("gta5", "/data/gta")
    assert parse_dataset_spec("Cityscapes:/d/cs") == ("cityscapes", "/d/cs")
    assert parse_dataset_spec("folder:C:\\data\\x") == ("folder", "C:\\data\\x")
    assert parse_dataset_spec("synthcity") == ("synthcity", None)
    assert parse_dataset_spec("synthcity:/tmp/sc") == ("synthcity", "/tmp/sc")
    for bad, frag in (("", "empty"), ("gta5", "no path"), ("gta5:", "no path"), ("imagenet:/x", "unknown dataset kind"),
                      ("/data/gta", "unknown dataset kind")):
        with pytest.raises(DatasetError) as e:
            parse_dataset_spec(bad)
        one_line_error(e, frag)


def test_build_dataset(tmp_path):
    gta = make_gta5(tmp_path / "gta", 2)
    syn = make_synthia(tmp_path / "syn", 2)
    cs = make_cityscapes(tmp_path / "cs", 2, 1)
    fo = make_folder(tmp_path / "fo", 2, classes=["road", "car"])
    src = build_dataset(f"gta5:{gta}", "source", size=(20, 36))
    assert isinstance(src, GTA5) and src[0]["image"].shape == (20, 36, 3)
    assert isinstance(build_dataset(f"synthia:{syn}", "source"), Synthia)
    val = build_dataset(f"cityscapes:{cs}", "target", "val", cache_dir=tmp_path / "cache", label_size="full")
    assert isinstance(val, Cityscapes) and len(val) == 1 and val[0]["label"].shape == (32, 64)
    assert (tmp_path / "cache" / "datasets").is_dir()
    assert build_dataset(f"folder:{fo}", "target").label_space.num_classes == 2
    for spec, role, frag in ((f"gta5:{gta}", "target", "cannot be a target"),
                             (f"cityscapes:{cs}", "source", "cannot be a source"),
                             (f"folder:{fo}", "source", "cannot be a source"),
                             (f"gta5:{gta}", "teacher", "role"),
                             (f"gta5:{tmp_path / 'missing'}", "source", "not found")):
        with pytest.raises(DatasetError) as e:
            build_dataset(spec, role)
        one_line_error(e, frag)
    truncate(gta / "images" / "00001.png")
    ds = build_dataset(f"gta5:{gta}", "source", skip_bad=True, validate=True, progress=False)
    assert ds.names == ["00002"] and len(ds.skipped) == 1
    with pytest.raises(DatasetError):
        build_dataset(f"gta5:{gta}", "source", validate=True, progress=False)


def test_build_synthcity_is_lazy(tmp_path, monkeypatch):
    calls = {}
    fake = types.ModuleType("core.data.synthcity")

    def ensure_synthcity(cache_dir, seed=0, size=(64, 128)):
        calls["ensure"] = (cache_dir, seed, size)
        return tmp_path / "sc"

    class SynthCity:
        def __init__(self, root, domain, split):
            calls["ds"] = (root, domain, split)

    fake.ensure_synthcity, fake.SynthCity = ensure_synthcity, SynthCity
    monkeypatch.setitem(sys.modules, "core.data.synthcity", fake)
    ds = build_dataset("synthcity", "target", "val", cache_dir=tmp_path / "c", seed=3)
    assert isinstance(ds, SynthCity)
    assert calls == {"ensure": (tmp_path / "c", 3, (64, 128)), "ds": (tmp_path / "sc", "target", "val")}
    build_dataset(f"synthcity:{tmp_path / 'd'}", "source")
    assert calls["ensure"][0] == str(tmp_path / "d") and calls["ds"][1] == "source"
