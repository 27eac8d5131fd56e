"""Wrong inputs are caught, never silently used: one test per kind of input fault (issue 14).

Every input is a tiny file tree made here in the official layouts (tests/fixtures_datasets.py) and
then spoiled the way the public bug reports describe. Runs go through the command line's own entry
point (``app.cli.main``) with 0 training iterations, so each test costs seconds.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.fixtures_datasets import (CITYSCAPES_IDS, SYNTHIA_IDS, make_cityscapes, make_folder, make_gta5,
                                     make_synthia, scene, scene_ids, scene_rgb, write_ids, write_png16, write_rgb)

FAST = ["--iterations", "0", "--round-iterations", "0", "--crop", "32x64", "--device", "cpu", "--weights", "none"]


def cli(capsys, *argv) -> tuple[int, str, str]:
    """Run ``launch.py ARGV`` in this process; (exit code, stdout, stderr)."""
    from app.cli import main

    try:
        rc = main([str(a) for a in argv])
    except SystemExit as e:   # argparse's own errors exit from inside parse_args
        rc = e.code
    out = capsys.readouterr()
    return rc, out.out, out.err


def one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def pad_top_left(a: np.ndarray, value: int) -> np.ndarray:
    """Two void rows and columns added at the top-left (the mask of the bug report)."""
    return np.pad(a, ((2, 0), (2, 0)), constant_values=value)


@pytest.fixture(scope="module")
def gta(tmp_path_factory):
    return make_gta5(tmp_path_factory.mktemp("gta") / "gta5", n=2, size=(40, 72))


def source_args(gta):
    return ["--source", f"gta5:{gta}", "--source-size", "40x72"]


# ------------------------------------------------------------------- 1. mask size differs from its image

def _spoil(kind: str, root: Path) -> Path:
    """Replace one label file of a ``kind`` tree by one two pixels taller and wider; its path."""
    if kind == "gta5":
        p = root / "labels" / "00002.png"
        write_ids(p, pad_top_left(scene_ids(40, 72, 1, CITYSCAPES_IDS), 1), palette=True)
    elif kind == "synthia":
        p = root / "GT" / "LABELS" / "0000001.png"
        write_png16(p, pad_top_left(scene_ids(40, 64, 1, SYNTHIA_IDS), 0))
    elif kind == "cityscapes":
        p = next((root / "gtFine" / "train").rglob("*_labelIds.png"))
        write_ids(p, pad_top_left(np.asarray(Image.open(p)), 1))
    else:
        p = root / "masks" / "train" / "img_000.png"
        write_ids(p, pad_top_left(np.asarray(Image.open(p)), 1))
    return p


@pytest.mark.parametrize("kind", ["gta5", "synthia", "cityscapes", "folder"])
def test_a_wrong_size_mask_stops_every_dataset_kind_naming_the_file(tmp_path, capsys, kind, gta):
    if kind == "gta5":
        root = make_gta5(tmp_path / "gta5", n=2, size=(40, 72))
        data = ["--source", f"gta5:{root}", "--source-size", "40x72",
                "--target", f"folder:{make_folder(tmp_path / 't', n=2, size=(64, 128))}"]
        image_hw, label_hw = "40x72", "42x74"
    elif kind == "synthia":
        root = make_synthia(tmp_path / "synthia", n=2, size=(40, 64), depth=False)
        data = ["--source", f"synthia:{root}", "--source-size", "40x64",
                "--target", f"folder:{make_folder(tmp_path / 't', n=2, size=(64, 128))}"]
        image_hw, label_hw = "40x64", "42x66"
    elif kind == "cityscapes":
        root = make_cityscapes(tmp_path / "cs", n_train=2, n_val=1, size=(64, 128))
        data = [*source_args(gta), "--target", f"cityscapes:{root}", "--target-size", "32x64"]
        image_hw, label_hw = "64x128", "66x130"
    else:   # the bug report's example: masks/train/t0.png is 130x66 for a 128x64 image
        root = make_folder(tmp_path / "folder", n=2, size=(64, 128), split="train")
        make_folder(tmp_path / "folder", n=1, size=(64, 128), split="val")
        data = [*source_args(gta), "--target", f"folder:{root}"]
        image_hw, label_hw = "64x128", "66x130"
    bad = _spoil(kind, root)
    rc, out, err = cli(capsys, *data, *FAST, "--budget", "none", "--workdir", tmp_path / "w")
    line = one_error_line(err)
    assert rc == 2
    assert bad.name in line and label_hw in line and image_hw in line, line
    assert "warm-up" not in out            # stopped before any training


def test_exif_orientation_is_ignored_for_images_and_masks_alike(tmp_path, caplog):
    """A phone photo stored 48x64 with EXIF orientation 6 (shown rotated, 64x48): its mask must be
    drawn on the stored pixel grid; one drawn on the rotated view is refused with a hint."""
    from core.data.base import DatasetError
    from core.data.folder import ImageFolder

    root = tmp_path / "phone"
    rgb = scene_rgb(48, 64, 0)
    exif = Image.Exif()
    exif[0x0112] = 6
    (root / "images").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "images" / "p0.jpg", exif=exif, quality=95)
    write_ids(root / "masks" / "p0.png", scene_ids(48, 64, 0, CITYSCAPES_IDS))
    with caplog.at_level(logging.WARNING):
        ds = ImageFolder(root)
        s = ds[0]
    assert s["image"].shape == (48, 64, 3) and s["label"].shape == (48, 64)
    assert np.abs(s["image"].astype(int) - rgb).mean() < 8     # the stored grid, not rotated
    assert "orientation" in caplog.text
    write_ids(root / "masks" / "p0.png", np.rot90(scene_ids(48, 64, 0, CITYSCAPES_IDS), -1))
    with pytest.raises(DatasetError, match="orientation"):
        ImageFolder(root)[0]


# ---------------------------------------------------------------- 2. folder labels follow --target-size

def test_folder_labels_keep_their_own_size_and_messages_use_cli_options(tmp_path, capsys, gta):
    root = make_folder(tmp_path / "big", n=3, size=(96, 192), split="train")
    make_folder(tmp_path / "big", n=1, size=(96, 192), split="val")
    w = tmp_path / "w"
    rc, out, err = cli(capsys, *source_args(gta), "--target", f"folder:{root}", "--target-size", "64x128", *FAST,
                       "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "2", "--workdir", w)
    assert rc == 0, err
    con = sqlite3.connect(w / "project.db")
    assert con.execute("SELECT min(height), min(width), max(height) FROM images").fetchone() == (96, 192, 96)
    con.close()
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", tmp_path / "out")
    assert rc == 0, err
    masks = sorted((tmp_path / "out").glob("*_gtFine_labelTrainIds.png"))
    assert masks and all(Image.open(m).size == (192, 96) for m in masks)

    mixed = make_folder(tmp_path / "mixed", n=2, size=(64, 128))
    write_rgb(mixed / "images" / "odd.png", scene_rgb(96, 192, 0))
    write_ids(mixed / "masks" / "odd.png", scene_ids(96, 192, 0, CITYSCAPES_IDS))
    rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{mixed}", *FAST, "--budget", "none",
                     "--workdir", tmp_path / "w2")
    line = one_error_line(err)
    assert rc == 2 and "--target-size" in line and "size=(" not in line
    assert "96x192" in line and "64x128" in line, line   # H x W, as every option takes sizes


# ---------------------------------------------- 3. failed setup locks the workdir; --resume drops options

def _five_class_folder(root: Path, n: int = 2, size=(64, 128)) -> Path:
    return make_folder(root, n=n, classes=["road", "building", "vegetation", "sky", "car"], size=size)


def test_a_failed_init_names_the_class_counts_and_leaves_the_workdir_retryable(tmp_path, capsys, gta):
    import torch

    from core.models import Segmentor
    from core.train import save_checkpoint

    torch.manual_seed(0)
    ck = tmp_path / "warmup19.pt"
    save_checkpoint(ck, {"model": Segmentor(19, weights=None).state_dict()})
    target = _five_class_folder(tmp_path / "five")
    w = tmp_path / "w"
    rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "none",
                     "--init", ck, "--workdir", w)
    line = one_error_line(err)
    assert rc == 2 and "19 classes" in line and "5" in line, line
    # nothing was recorded: the same workdir takes a new attempt with other options
    rc, out, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "none",
                       "--workdir", w)
    assert rc == 0, err
    assert "Target val after warm-up" in out


def test_resume_applies_more_rounds_and_refuses_a_changed_option_by_name(tmp_path, capsys, gta):
    target = make_folder(tmp_path / "t", n=2, size=(64, 128))
    w = tmp_path / "w"
    base = [*source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "2.2%", "--oracle",
            "--region-radius", "2", "--workdir", w]
    rc, _, err = cli(capsys, *base, "--rounds", "1")
    assert rc == 0, err
    rc, out, err = cli(capsys, *base, "--rounds", "3", "--resume")
    assert rc == 0, err
    con = sqlite3.connect(w / "project.db")
    assert [r[0] for r in con.execute("SELECT idx FROM rounds ORDER BY idx")] == [1, 2, 3]
    per_round = [r[0] for r in con.execute("SELECT count(*) FROM queries q JOIN rounds r ON r.id = q.round "
                                           "GROUP BY r.idx ORDER BY r.idx")]
    con.close()
    assert per_round[0] == per_round[1] == per_round[2] > 0    # the extra rounds keep the per-round budget
    assert "6.6%" in out                                       # and the new total is said
    rc, _, err = cli(capsys, *base, "--rounds", "3", "--resume", "--lr", "0.01")
    line = one_error_line(err)
    assert rc == 2 and "--lr" in line, line
    rc, _, err = cli(capsys, *base, "--rounds", "2", "--resume")
    assert rc == 2 and "--rounds" in one_error_line(err)


# ----------------------------------------------------------------------- 4. options only in the API

TRAIN_IDS = {"sky": 10, "building": 2, "vegetation": 8, "road": 0, "sidewalk": 1, "car": 13, "person": 11,
             "void": 255}


def test_train_id_masks_have_a_cli_switch_and_a_warning(tmp_path, capsys, gta, caplog):
    root = tmp_path / "tid"
    for i in range(2):
        write_rgb(root / "images" / f"t{i}.png", scene_rgb(64, 128, i))
        write_ids(root / "masks" / f"t{i}.png", scene_ids(64, 128, i, TRAIN_IDS))
    with caplog.at_level(logging.WARNING):
        rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{root}", *FAST, "--budget", "none",
                         "--workdir", tmp_path / "w1")
    assert "--mask-format train_ids" in caplog.text + err
    from app.cli import build_parser, config_from_args
    from app.session import load_data

    cfg = config_from_args(build_parser().parse_args(
        [*source_args(gta), "--target", f"folder:{root}", "--mask-format", "train_ids", "--workdir",
         str(tmp_path / "w2")]))
    _, target, _ = load_data(cfg)
    lab = target[0]["label"]
    k = scene(64, 128, 0)
    assert (lab[k == 5] == 13).all() and (lab[k == 3] == 0).all()   # car is car, road is road
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{root}", "--mask-format", "train_ids",
                         *FAST, "--budget", "none", "--workdir", tmp_path / "w3")
    assert rc == 0, err
    assert "--mask-format" not in caplog.text


# ------------------------------------------------------------------------ 5. rounds that do no work

def test_a_budget_below_one_region_stops_at_start_with_the_fix(tmp_path, capsys, gta):
    target = make_folder(tmp_path / "small", n=2, size=(48, 96))
    rc, out, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "2.2%",
                       "--oracle", "--workdir", tmp_path / "w")
    line = one_error_line(err)
    assert rc == 2 and "--region-radius" in line and "17x17" in line, line
    assert "warm-up" not in out


def test_an_oracle_run_on_a_target_without_masks_stops_at_start(tmp_path, capsys, gta):
    target = make_folder(tmp_path / "nomasks", n=2, size=(64, 128), masks=False)
    rc, out, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "2.2%",
                       "--oracle", "--region-radius", "2", "--workdir", tmp_path / "w")
    line = one_error_line(err)
    assert rc == 2 and "--oracle" in line and "masks" in line, line


# ------------------------------------------------------------------- 6. classes.json trusted too much

def test_classes_json_with_a_duplicate_id_is_refused(tmp_path, capsys, gta):
    target = make_folder(tmp_path / "dup", n=2, size=(64, 128),
                         classes=[{"name": "road", "id": 1}, {"name": "car", "id": 4}, {"name": "truck", "id": 4}])
    rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "none",
                     "--workdir", tmp_path / "w")
    line = one_error_line(err)
    assert rc == 2 and "car" in line and "truck" in line and "4" in line, line


def test_unlabeled_never_collides_with_a_class_in_any_export_format(tmp_path, capsys, gta):
    """A user class with id 0 and colour black: unlabeled pixels must stay distinguishable in
    _labelIds.png and _color.png, and manifest.json says what unlabeled was written as."""
    classes = [{"name": "road", "id": 0, "color": [0, 0, 0]}, {"name": "building", "id": 1},
               {"name": "sky", "id": 2}, {"name": "car", "id": 3}]
    target = make_folder(tmp_path / "zero", n=2, size=(64, 128), classes=classes)
    w = tmp_path / "w"
    rc, _, err = cli(capsys, *source_args(gta), "--target", f"folder:{target}", *FAST, "--budget", "2.2%",
                     "--oracle", "--rounds", "1", "--region-radius", "2", "--workdir", w)
    assert rc == 0, err
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", out)
    assert rc == 0, err
    manifest = json.loads((out / "manifest.json").read_text())
    unl = manifest["unlabeled"]
    assert unl["labelTrainIds"] == 255 and unl["labelIds"] not in (0, 1, 2, 3)
    assert tuple(unl["color"]) != (0, 0, 0)
    stem = sorted(out.glob("*_gtFine_labelTrainIds.png"))[0].name[: -len("_gtFine_labelTrainIds.png")]
    tid = np.asarray(Image.open(out / f"{stem}_gtFine_labelTrainIds.png"))
    ids = np.asarray(Image.open(out / f"{stem}_gtFine_labelIds.png"))
    col = np.asarray(Image.open(out / f"{stem}_gtFine_color.png").convert("RGB"))
    assert (tid == 255).any() and (tid == 0).any()           # unlabeled pixels and labeled road both there
    assert (ids[tid == 255] == unl["labelIds"]).all() and (ids[tid == 0] == 0).all()
    assert (col[tid == 255] == unl["color"]).all() and (col[tid == 0] == 0).all()


# ------------------------------------------------------------- 7. valid inputs refused with a false message

def test_one_bit_and_grey_alpha_masks_are_read(tmp_path):
    from core.data.base import DatasetError
    from core.data.folder import ImageFolder

    root = tmp_path / "bits"
    (root).mkdir()
    (root / "classes.json").write_text(json.dumps([{"name": "background", "id": 0}, {"name": "car", "id": 1}]))
    k = scene(32, 64, 0)
    car = (k == 5).astype(np.uint8)
    write_rgb(root / "images" / "a.png", scene_rgb(32, 64, 0))
    write_rgb(root / "images" / "b.png", scene_rgb(32, 64, 1))
    (root / "masks").mkdir()
    Image.fromarray(car.astype(bool)).save(root / "masks" / "a.png")                 # mode '1'
    la = np.stack([car, np.full_like(car, 255)], -1)
    Image.fromarray(la, "LA").save(root / "masks" / "b.png")                          # grey + opaque alpha
    assert Image.open(root / "masks" / "a.png").mode == "1" and Image.open(root / "masks" / "b.png").mode == "LA"
    ds = ImageFolder(root)
    for i in range(2):
        assert (ds[i]["label"] == car).all()
    la[:4, :, 1] = 0                                                                   # transparent rows
    Image.fromarray(la, "LA").save(root / "masks" / "b.png")
    with pytest.raises(DatasetError, match="alpha"):
        ds[1]


def _huge_png(path: Path, h: int, w: int) -> Path:
    """A valid 8-bit grey PNG of h x w zeros written row by row (a few hundred KB on disk)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    idat = b"".join(comp.compress(row) for _ in range(h)) + comp.flush()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                     + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_a_valid_very_large_png_is_not_called_unreadable(tmp_path):
    """Over PIL's decompression-bomb guard (2 x 89.5 Mpx): the header is read, not refused."""
    from core.data.folder import ImageFolder, header_size

    root = tmp_path / "big"
    big = _huge_png(root / "images" / "pano.png", 12000, 16000)   # 192 Mpx
    assert header_size(big) == (12000, 16000)
    ds = ImageFolder(root)                                          # unlabeled: sizes read from headers
    assert len(ds) == 1 and ds.names == ["pano"]


# ------------------------------------------------------------------------------- 8. --help lists names

def test_help_lists_every_method_and_strategy():
    from app.cli import build_parser
    from core.acquisition import STRATEGIES
    from core.methods import REGISTRY

    text = build_parser().format_help()
    block = text[text.index("UDA methods"):]
    for name in REGISTRY:
        assert f"  {name} " in block, name
    block = text[text.index("acquisition strategies"):]
    for name in STRATEGIES:
        assert f"  {name} " in block, name
