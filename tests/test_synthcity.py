"""The embedded synthcity benchmark: determinism, contract, class coverage, shared colour families,
cache reuse and versioning, crash safety."""
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data import synthcity as sc
from core.data.synthcity import cache as sc_cache
from core.data.base import DatasetError, check_sample
from core.data.labels import CITYSCAPES19

TINY = (64, 128)
COUNTS = (6, 4, 4)


def _all(root):
    return [sc.SynthCity(root, "source"), sc.SynthCity(root, "target", "train"), sc.SynthCity(root, "target", "val")]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    return sc.ensure_synthcity(tmp_path_factory.mktemp("sc"), seed=0, size=TINY, counts=COUNTS, workers=2,
                               progress=False)


def test_contract(tiny_root):
    meta = json.loads((tiny_root / "meta.json").read_text())
    assert meta["seed"] == 0 and meta["size"] == list(TINY) and meta["version"] == sc.VERSION
    names = set()
    for ds, n in zip(_all(tiny_root), COUNTS):
        assert len(ds) == n == len(ds.names)
        assert ds.label_space is CITYSCAPES19
        for i in range(len(ds)):
            s = ds[i]
            check_sample(s, 19)
            assert s["image"].shape == TINY + (3,) and s["label"].shape == TINY
            assert s["name"] == ds.names[i]
            if ds.domain == "source":
                d = s["depth"]
                assert d.dtype == np.float32 and d.shape == TINY
                assert np.all(d > 0) and np.all(d <= sc.MAX_DEPTH)
                assert np.all(d[s["label"] == 10] == np.float32(sc.MAX_DEPTH))  # sky saturates
                assert np.median(d[s["label"] == 0]) < 100  # road is near
            else:
                assert "depth" not in s
        names.update(ds.names)
        with pytest.raises(IndexError):
            ds[len(ds)]
    assert len(names) == sum(COUNTS)
    assert "src_00000" in names and "tgt_train_00003" in names and "tgt_val_00001" in names


def test_stored_equals_rendered(tiny_root):
    for domain, split in (("source", "train"), ("target", "val")):
        s = sc.SynthCity(tiny_root, domain, split)[2]
        r = sc.render_synthcity(0, domain, split, 2, TINY)
        assert np.array_equal(s["image"], r["image"]) and np.array_equal(s["label"], r["label"])
        if domain == "source":
            assert np.allclose(s["depth"], np.clip(r["depth"], 0.01, sc.MAX_DEPTH), atol=0.006)


def test_deterministic_across_workers_and_seeds(tiny_root, tmp_path):
    other = sc.ensure_synthcity(tmp_path / "b", seed=0, size=TINY, counts=COUNTS, workers=1, progress=False)
    for a, b in zip(_all(tiny_root), _all(other)):
        for i in range(len(a)):
            sa, sb = a[i], b[i]
            for k in sa:
                assert np.array_equal(np.asarray(sa[k]), np.asarray(sb[k])), (a.domain, i, k)
    r0 = sc.render_synthcity(1, "target", "train", 0, TINY)
    r1 = sc.render_synthcity(0, "target", "train", 0, TINY)
    assert not np.array_equal(r0["image"], r1["image"])
    s0 = sc.render_synthcity(1, "source", "train", 3, TINY)
    s1 = sc.render_synthcity(0, "source", "train", 3, TINY)
    assert not np.array_equal(s0["label"], s1["label"])


def test_class_coverage_default_size():
    """Every one of the 19 classes appears in a small sample of each domain at the default size."""
    for domain in ("source", "target"):
        seen = np.zeros(256, np.int64)
        for i in range(40):
            lab = sc.render_synthcity(0, domain, "train", i)["label"]
            seen += np.bincount(lab.ravel(), minlength=256)
        missing = [CITYSCAPES19.names[c] for c in range(19) if seen[c] == 0]
        assert not missing, (domain, missing)
        assert 0 < seen[255] < 0.1 * seen.sum()  # a little ignore, not much


def test_render_is_deterministic():
    for domain, split in (("source", "train"), ("target", "val")):
        a = sc.render_synthcity(5, domain, split, 7, (96, 192))
        b = sc.render_synthcity(5, domain, split, 7, (96, 192))
        assert a.keys() == b.keys()
        for k in a:
            assert np.array_equal(a[k], b[k]), (domain, k)


def test_rendering_does_not_need_the_cache():
    """render.py (and everything it imports) works with the cache module made unimportable."""
    code = ("import sys; sys.modules['core.data.synthcity.cache'] = None\n"
            "from core.data.synthcity import render_synthcity\n"
            "for d, s in (('source', 'train'), ('target', 'val')):\n"
            "    r = render_synthcity(0, d, s, 1, (32, 64)); assert r['image'].shape == (32, 64, 3)\n"
            "print('ok')")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1"))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


ROAD, BUILDING, VEG, SKY = 0, 2, 8, 10


def _lab_means(domain, split, n=10, size=(128, 256)):
    """Per-class mean colour in CIELAB (L 0..100, a/b signed) over n images."""
    sums, cnt = np.zeros((19, 3)), np.zeros(19)
    for i in range(n):
        r = sc.render_synthcity(0, domain, split, i, size)
        lab = cv2.cvtColor(r["image"], cv2.COLOR_RGB2LAB).astype(np.float64)
        lab[..., 0] *= 100 / 255
        lab[..., 1:] -= 128
        y = r["label"].ravel()
        ok = y < 19
        sums += np.stack([np.bincount(y[ok], lab.reshape(-1, 3)[ok, c], 19) for c in range(3)], 1)
        cnt += np.bincount(y[ok], minlength=19)
    return sums / np.maximum(cnt, 1)[:, None], cnt


def test_domains_share_colour_families():
    """v2: the source is a game render of the *same materials* as the target photo, so each class's mean
    colour stays near its own target mean. Measured on these 10 + 10 images at 128x256 (Lab distance to the
    own target mean; rank = how many of the other 18 target class means are closer), v3: road 5.9 (rank 0),
    building 9.1 (1), vegetation 12.8 (0), sky 21.2 (0; mostly sunny blue vs overcast grey is the intended
    lighting gap); v2 (always sunny, heavier target noise): 4.7, 11.7, 19.7, 26.7. v1's pastel source fails
    every distance: road 26.1, building 35.7, vegetation 65.5, sky 53.1. Thresholds: ~1.5-2.5x the v2
    values, well under v1's."""
    S, cs = _lab_means("source", "train")
    T, ct = _lab_means("target", "train")
    assert np.all(cs[[ROAD, BUILDING, VEG, SKY]] > 0) and np.all(ct[[ROAD, BUILDING, VEG, SKY]] > 0)
    D = np.linalg.norm(S[:, None, :] - T[None, :, :], axis=2)  # source class x target class
    limits = {ROAD: (12, 3), BUILDING: (18, 3), VEG: (28, 2), SKY: (40, 1)}  # (max distance, max rank)
    for c, (dmax, rmax) in limits.items():
        rank = int((D[c] < D[c, c]).sum())
        assert D[c, c] < dmax and rank <= rmax, (CITYSCAPES19.names[c], round(float(D[c, c]), 1), rank)


def test_domains_differ_in_look():
    """Same materials, different look: a sunny blue sky vs an overcast one, game-engine saturation vs a dull
    photo (measured on these 6 + 6 images, v3: sky b* gap 22.8, mean HSV saturation ratio 1.13; v2: 26.7
    and 1.26, before a third of the source skies turned overcast and the target's noise was lowered)."""
    S, _ = _lab_means("source", "train", 6)
    T, _ = _lab_means("target", "train", 6)
    assert T[SKY, 2] - S[SKY, 2] > 15  # source sky much bluer (b* more negative)
    sat = {}
    for d in ("source", "target"):
        sat[d] = np.mean([cv2.cvtColor(sc.render_synthcity(0, d, "train", i, (128, 256))["image"],
                                       cv2.COLOR_RGB2HSV)[..., 1].mean() for i in range(6)])
    assert sat["source"] > 1.1 * sat["target"], sat


def test_source_weather_is_sunny_or_overcast():
    """v3: GTA5-like game weather, a third of the source images overcast (a grey sky: CIELAB b* of the
    sky above -21; the sunny blue skies are below it). Measured on these 30 images at 64x128: 11 overcast
    (b* -7 to -19), 19 sunny (-24 to -43)."""
    b = []
    for i in range(30):
        r = sc.render_synthcity(0, "source", "train", i, TINY)
        sky = r["label"] == SKY
        assert sky.any()
        b.append(cv2.cvtColor(r["image"], cv2.COLOR_RGB2LAB)[..., 2][sky].mean() - 128)
    overcast = np.mean(np.array(b) > -21)
    assert 0.2 <= overcast <= 0.5, np.round(b, 1)


def test_target_camera_has_one_white_balance():
    """v4: every target photo comes from one camera with one white balance (Cityscapes: one car, one
    camera), so a grey road stays equally grey from image to image. v3 cast each image at random, and a
    model read the reddest roads as terrain. Road R-B (mean colour) over these 30 images at 64x128, v4:
    std 5.6, range -14.5 to 8.6; v3: std 9.4, range -20.0 to 17.3 (this test fails on v3)."""
    rb = []
    for i in range(30):
        r = sc.render_synthcity(0, "target", "train", i, TINY)
        road = r["label"] == ROAD
        assert road.any()
        m = r["image"][road].astype(np.float64).mean(0)
        rb.append(m[0] - m[2])
    rb = np.array(rb)
    assert rb.std() < 7.5 and rb.max() < 13, np.round(rb, 1)


def test_target_camera_is_clean():
    """v5: the target camera is as clean as Cityscapes' (8-bit PNGs from an HDR automotive camera):
    sensor noise sigma 1-2.5 and JPEG quality 90-97 (v4: 2-5 and 75-95, which hid poles and cars from a
    source-trained model). Measured as the high-pass residual (grey minus its Gaussian blur, sigma 1.5 px)
    inside the eroded sky, where the render has almost no texture grain, over these 30 images at 128x256: v5
    mean 2.51 (2.07-2.83); v4 mean 3.24 (2.60-3.97; this test fails on v4)."""
    res = []
    for i in range(30):
        r = sc.render_synthcity(0, "target", "train", i, (128, 256))
        sky = cv2.erode((r["label"] == SKY).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        assert sky.sum() > 50
        g = cv2.cvtColor(r["image"], cv2.COLOR_RGB2GRAY).astype(np.float32)
        res.append((g - cv2.GaussianBlur(g, (0, 0), 1.5))[sky].std())
    assert np.mean(res) < 2.85, np.round(res, 2)


def test_version_is_in_the_cache_key(tmp_path):
    """An older set (older name, or an older meta.json under the current name) is never reused as v5."""
    assert sc.VERSION == 5
    counts = sc._norm_counts(COUNTS)
    name = sc._folder_name(0, TINY, counts)
    assert name.startswith("synthcity_v5_")
    stale = tmp_path / name
    (stale / "source" / "images").mkdir(parents=True)
    meta = sc_cache._meta(0, TINY, counts)
    meta["version"] = 3
    (stale / "meta.json").write_text(json.dumps(meta))
    assert not sc_cache._is_complete(stale, sc_cache._meta(0, TINY, counts))
    root = sc.ensure_synthcity(tmp_path, seed=0, size=TINY, counts=COUNTS, workers=1, progress=False)
    assert root == stale and json.loads((root / "meta.json").read_text())["version"] == 5
    assert len(sc.SynthCity(root, "source")) == COUNTS[0]


def test_reuse_does_not_regenerate(tiny_root, monkeypatch):
    before = (tiny_root / "meta.json").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("regenerated")

    monkeypatch.setattr(sc_cache, "_render", boom)
    again = sc.ensure_synthcity(tiny_root.parent, seed=0, size=TINY, counts=COUNTS, workers=2, progress=False)
    assert again == tiny_root and (tiny_root / "meta.json").stat().st_mtime_ns == before


def test_leftover_temp_and_incomplete_folder_are_cleaned(tmp_path):
    name = sc._folder_name(0, TINY, sc._norm_counts(COUNTS))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".{name}.tmp-{dead.pid}-deadbeef"
    (stale / "source" / "images").mkdir(parents=True)
    (stale / "source" / "images" / "src_00000.png").write_bytes(b"garbage")
    half = tmp_path / name  # e.g. a copy that was interrupted: no meta.json
    (half / "source" / "images").mkdir(parents=True)
    root = sc.ensure_synthcity(tmp_path, seed=0, size=TINY, counts=COUNTS, workers=1, progress=False)
    assert root == half and (root / "meta.json").exists()
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert len(sc.SynthCity(root, "source")) == COUNTS[0]


def test_interrupted_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = sc_cache._gen_one

    def flaky(task, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(sc_cache, "_gen_one", flaky)
    with pytest.raises(KeyboardInterrupt):
        sc.ensure_synthcity(tmp_path, seed=0, size=TINY, counts=COUNTS, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        sc.SynthCity(tmp_path, "source", "val")
    with pytest.raises(ValueError):
        sc.SynthCity(tmp_path, "real")
    with pytest.raises(DatasetError):
        sc.SynthCity(tmp_path, "target", "train")
    with pytest.raises(ValueError):
        sc.ensure_synthcity(tmp_path, counts={"source": 0})
    with pytest.raises(ValueError):
        sc.ensure_synthcity(tmp_path, counts={"sauce": 3})


def test_missing_file_names_the_file(tmp_path):
    root = sc.ensure_synthcity(tmp_path, seed=0, size=TINY, counts=(2, 1, 1), workers=1, progress=False)
    os.remove(root / "target" / "val" / "labels" / "tgt_val_00000.png")
    with pytest.raises(DatasetError, match="tgt_val_00000"):
        sc.SynthCity(root, "target", "val")[0]
