"""The embedded synthcity benchmark: determinism, contract, class coverage, cache reuse, crash safety."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from core.data import synthcity as sc
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


def test_domains_differ():
    """Same class, different look: the mean colour of road and sky differ clearly between domains."""
    means = {}
    for domain in ("source", "target"):
        acc = {0: [], 10: []}
        for i in range(6):
            s = sc.render_synthcity(0, domain, "train", i, (128, 256))
            for c in acc:
                acc[c].append(s["image"][s["label"] == c].reshape(-1, 3).mean(0))
        means[domain] = {c: np.mean(v, 0) for c, v in acc.items()}
    for c in (0, 10):
        assert np.abs(means["source"][c] - means["target"][c]).max() > 25


def test_reuse_does_not_regenerate(tiny_root, monkeypatch):
    before = (tiny_root / "meta.json").stat().st_mtime_ns

    def boom(*a, **k):
        raise AssertionError("regenerated")

    monkeypatch.setattr(sc, "_render", boom)
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
    real = sc._gen_one

    def flaky(task, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(task, **kw)

    monkeypatch.setattr(sc, "_gen_one", flaky)
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
