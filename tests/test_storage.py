"""Project store: schema, bad input, queries/leases, labels/history/review, masks, export.

Real SQLite files under tmp_path; no mocks of SQLite itself.
"""
from __future__ import annotations

import errno
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import storage as S
from core.data.labels import CITYSCAPES19, IGNORE

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def db(tmp_path):
    d = S.open_store(tmp_path / "work")
    yield d
    d.close()


def _project(db, n_img=2, h=16, w=20):
    S.add_images(db, [dict(name=f"img{i}", height=h, width=w, path=f"/data/img{i}.png") for i in range(n_img)])
    run = S.start_run(db, {"budget": "2.2%"})
    rnd = S.add_round(db, run, 1, budget=0.022, strategy="ripu")
    return run, rnd


# ------------------------------------------------------------------------------------------
# opening, schema, bad input
# ------------------------------------------------------------------------------------------

def test_open_creates_versioned_wal_store(tmp_path):
    db = S.open_store(tmp_path / "w")
    assert (tmp_path / "w" / "project.db").is_file()
    assert S.schema_version(db) == len(S.MIGRATIONS) >= 1
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] >= 10_000
    assert {"images", "runs", "steps", "rounds", "queries", "labels", "label_history", "checkpoints",
            "metrics"} <= set(db.table_names())
    S.add_images(db, [dict(name="x", height=2, width=2)])
    db.close()
    db2 = S.open_store(tmp_path / "w", create=False)  # reopen: no re-creation, data kept
    assert db2["images"].count == 1
    assert S.integrity_ok(db2)


def test_open_create_false_missing_project(tmp_path):
    with pytest.raises(S.StoreError, match="no project"):
        S.open_store(tmp_path / "nope", create=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(S.StoreError, match="no project"):
        S.open_store(tmp_path / "empty", create=False)
    assert not (tmp_path / "empty" / "project.db").exists()


def test_newer_schema_version_rejected(tmp_path):
    S.open_store(tmp_path / "w").close()
    con = sqlite3.connect(tmp_path / "w" / "project.db")
    con.execute(f"PRAGMA user_version = {len(S.MIGRATIONS) + 1}")
    con.close()
    with pytest.raises(S.StoreError, match="newer than this program"):
        S.open_store(tmp_path / "w")


def test_foreign_sqlite_db_rejected(tmp_path):
    (tmp_path / "w").mkdir()
    con = sqlite3.connect(tmp_path / "w" / "project.db")
    con.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    con.commit()
    con.close()
    with pytest.raises(S.StoreError, match="another program.*customers"):
        S.open_store(tmp_path / "w")
    # untouched: still the other program's journal mode and tables
    con = sqlite3.connect(tmp_path / "w" / "project.db")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["customers"]


def test_corrupt_file_rejected(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "project.db").write_bytes(b"this is not a database at all\n" * 100)
    with pytest.raises(S.StoreError, match="damaged or not a project database"):
        S.open_store(tmp_path / "w")


def test_empty_file_is_initialised(tmp_path):
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "project.db").write_bytes(b"")
    db = S.open_store(tmp_path / "w")
    assert S.schema_version(db) == len(S.MIGRATIONS)


def test_workdir_under_a_file_is_a_clear_error(tmp_path):
    # works as root too: no permission bit can make this path writable
    (tmp_path / "afile").write_text("x")
    with pytest.raises(S.StoreError, match="cannot create workdir"):
        S.open_store(tmp_path / "afile" / "work")
    with pytest.raises(S.StoreError, match="not a directory"):
        S.open_store(tmp_path / "afile")


def _open_error(workdir: Path) -> str:
    try:
        S.open_store(workdir).close()
    except S.StoreError as e:
        return str(e)
    return "opened"


def _open_error_as_nobody(workdir: Path) -> str:
    """Open the store in a forked child that dropped root to uid/gid 65534 (nobody), where
    permission bits apply; return the StoreError message (or 'opened')."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        code = 1
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(w, _open_error(workdir).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        msg = f.read().decode()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, msg
    return msg


def test_readonly_workdir_chmod(tmp_path):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ro-store-"))  # under /tmp: reachable after dropping root
    try:
        os.chmod(base, 0o755)
        existing, fresh = base / "existing", base / "fresh"
        S.open_store(existing).close()
        fresh.mkdir()
        for d in (existing, fresh):
            os.chmod(d, 0o555)
        if os.access(existing, os.W_OK):
            if os.geteuid() != 0:
                pytest.skip("chmod 555 does not restrict writes on this file system")
            # root ignores permission bits: check as an unprivileged user instead
            msgs = [_open_error_as_nobody(existing), _open_error_as_nobody(fresh)]
        else:
            msgs = [_open_error(existing), _open_error(fresh)]
        for m in msgs:
            assert "not writable" in m, m
        assert not (fresh / "project.db").exists()
    finally:
        for d in base.iterdir():
            os.chmod(d, 0o755)
        import shutil
        shutil.rmtree(base)


def test_migrations_run_in_order_and_once(tmp_path, monkeypatch):
    S.open_store(tmp_path / "w").close()
    calls = []

    def m2(conn):
        calls.append(1)
        conn.execute("ALTER TABLE images ADD COLUMN note TEXT")

    import storage.db as sdb
    monkeypatch.setattr(sdb, "MIGRATIONS", [*sdb.MIGRATIONS, m2])
    db = S.open_store(tmp_path / "w")
    assert S.schema_version(db) == len(sdb.MIGRATIONS) and "note" in db["images"].columns_dict
    db.close()
    S.open_store(tmp_path / "w").close()
    assert calls == [1]


def test_storage_never_imports_torch():
    code = "import sys, storage; assert 'torch' not in sys.modules, 'storage imported torch'; print('ok')"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_busy_writer_makes_others_wait_not_fail(tmp_path):
    import threading

    db = S.open_store(tmp_path / "w")
    S.add_images(db, [dict(name="a", height=4, width=4)])
    (qid,) = S.add_queries(db, None, "a", "pixel", [(0, 0)])
    locked, done = threading.Event(), threading.Event()

    def hold_lock():  # another connection holds the write lock for a while
        other = S.open_store(tmp_path / "w")
        other.conn.execute("BEGIN IMMEDIATE")
        locked.set()
        time.sleep(0.5)
        other.conn.execute("COMMIT")
        other.close()
        done.set()

    t = threading.Thread(target=hold_lock)
    t.start()
    locked.wait(10)
    t0 = time.time()
    S.save_label(db, qid, "alice", point_class=3)  # waits for the lock instead of "database is locked"
    assert done.is_set() and time.time() - t0 > 0.2
    t.join()
    assert S.get_query(db, qid)["status"] == "done"


# ------------------------------------------------------------------------------------------
# images, runs, steps, rounds, metrics
# ------------------------------------------------------------------------------------------

def test_images_runs_steps_metrics(db):
    ids = S.add_images(db, [dict(name="a", height=4, width=5), dict(name="b", domain="source")])
    again = S.add_images(db, [dict(name="a", split="val")])
    assert again["a"] == ids["a"] and db["images"].count == 2
    assert S.get_image(db, "a")["split"] == "val" and S.get_image(db, "a")["height"] == 4
    with pytest.raises(S.InvalidInput):
        S.image_id(db, "zzz")

    run = S.start_run(db, {"seed": 3})
    assert S.last_run(db)["config"] == {"seed": 3}
    assert not S.step_done(db, run, "warmup")
    S.mark_step(db, run, "warmup")
    assert S.step_done(db, run, "warmup") and not S.step_done(db, run, "round1.score")
    S.mark_step(db, run, "round1.score", status="started")
    assert not S.step_done(db, run, "round1.score")

    assert S.add_round(db, run, 1, "40px", "ripu") == S.add_round(db, run, 1, "40px", "ripu")
    S.add_checkpoint(db, run, "warmup", "/w/ck0.pt")
    S.add_checkpoint(db, run, "round1.train", "/w/ck1.pt")
    assert S.latest_checkpoint(db, run)["path"] == "/w/ck1.pt"
    assert S.latest_checkpoint(db, run, "warmup")["path"] == "/w/ck0.pt"

    S.add_metric(db, run, None, "mIoU", 30.5)
    S.add_metric(db, run, 1, "mIoU", 40.0)
    S.add_metric(db, run, 1, "iou", [0.5, 0.25])
    S.add_metric(db, run, 1, "mIoU", 41.0)  # latest wins
    assert S.metrics_table(db, run) == [{"round": None, "mIoU": 30.5}, {"round": 1, "mIoU": 41.0, "iou": [0.5, 0.25]}]
    assert S.metrics_table(db) == S.metrics_table(db, run)


def test_add_queries_validation_and_idempotency(db):
    _, rnd = _project(db)
    a = S.add_queries(db, rnd, "img0", "region", [(0, 0, 4, 4, 0.9), dict(y0=4, x0=4, y1=8, x1=8, score=0.1)])
    b = S.add_queries(db, rnd, "img0", "region", [(0, 0, 4, 4, 0.9)])
    p = S.add_queries(db, rnd, "img0", "pixel", [(1, 2, 0.5), (1, 2, 0.5)])
    assert b == a[:1] and p[0] == p[1] and db["queries"].count == 3
    for bad in [(4, 4, 4, 8), (0, 0, -1, 3), (1, 2)]:
        with pytest.raises(S.InvalidInput):
            S.add_queries(db, rnd, "img0", "region", [bad])
    with pytest.raises(S.InvalidInput):
        S.add_queries(db, rnd, "img0", "polygon", [(1, 1)])
    with pytest.raises(S.InvalidInput):
        S.add_queries(db, 999, "img0", "pixel", [(1, 1)])
    assert db["queries"].count == 3  # failed calls added nothing


# ------------------------------------------------------------------------------------------
# leases
# ------------------------------------------------------------------------------------------

def test_leases_order_exclusive_and_sticky(db):
    _, rnd = _project(db)
    ids = S.add_queries(db, rnd, "img0", "pixel", [(0, 0, 0.1), (0, 1, 0.9), (0, 2, 0.5)])
    qa = S.lease_next(db, "alice", round=rnd)
    assert qa["id"] == ids[1] and qa["status"] == "leased" and qa["lease_owner"] == "alice"
    assert S.lease_next(db, "alice", round=rnd)["id"] == ids[1]  # same annotator gets its lease back
    qb = S.lease_next(db, "bob", round=rnd)
    assert qb["id"] == ids[2]
    assert S.pending_count(db, rnd) == 1
    assert S.lease_next(db, "carol", kind="region") is None
    with pytest.raises(S.LeaseError, match="alice"):
        S.save_label(db, ids[1], "bob", point_class=1)
    assert S.release(db, ids[1], "bob") is False
    assert S.release(db, ids[1], "alice") is True
    assert S.pending_count(db, rnd) == 2
    assert S.renew(db, ids[2], "bob", minutes=5) and not S.renew(db, ids[2], "alice")


def test_expired_lease_returns_to_queue(db):
    _, rnd = _project(db)
    (qid,) = S.add_queries(db, rnd, "img0", "pixel", [(3, 3, 1.0)])
    assert S.lease_next(db, "alice", minutes=10)["id"] == qid
    assert S.lease_next(db, "bob") is None and S.pending_count(db) == 0
    db.execute("UPDATE queries SET lease_expiry = ? WHERE id = ?", (time.time() - 1, qid))
    assert S.pending_count(db) == 1
    assert S.round_progress(db, rnd)["pending"] == 1
    q = S.lease_next(db, "bob")
    assert q["id"] == qid and q["lease_owner"] == "bob"
    with pytest.raises(S.LeaseError):  # alice's lease is gone; bob holds it now
        S.save_label(db, qid, "alice", point_class=2)
    S.save_label(db, qid, "bob", point_class=2)
    assert S.get_query(db, qid)["status"] == "done"


def test_skip_flag_with_reasons(db):
    _, rnd = _project(db)
    q1, q2, q3 = S.add_queries(db, rnd, "img0", "pixel", [(0, 0, 3), (0, 1, 2), (0, 2, 1)])
    assert S.lease_next(db, "alice")["id"] == q1
    S.skip(db, q1, "alice", "ambiguous boundary")
    with pytest.raises(S.InvalidInput, match="reason"):
        S.flag(db, q2, "alice", "  ")
    S.flag(db, q2, "bob", "image is blurry")
    r1, r2 = S.get_query(db, q1), S.get_query(db, q2)
    assert (r1["status"], r1["reason"], r1["status_by"], r1["lease_owner"]) == ("skipped", "ambiguous boundary", "alice", None)
    assert (r2["status"], r2["reason"], r2["status_by"]) == ("flagged", "image is blurry", "bob")
    assert S.lease_next(db, "carol")["id"] == q3  # skipped/flagged left the queue
    with pytest.raises(S.LeaseError):
        S.skip(db, q3, "alice", "no")
    prog = S.round_progress(db, rnd)
    assert (prog["skipped"], prog["flagged"], prog["leased"], prog["total"]) == (1, 1, 1, 3)
    S.requeue(db, q2)
    assert S.get_query(db, q2)["status"] == "pending"


# ------------------------------------------------------------------------------------------
# labels, history, review
# ------------------------------------------------------------------------------------------

def test_label_idempotent_and_history(db):
    _, rnd = _project(db)
    (qid,) = S.add_queries(db, rnd, "img0", "region", [(2, 3, 6, 8, 0.5)])
    S.lease_next(db, "alice")
    p1 = np.full((4, 5), 7, np.uint8)
    p1[0, 0] = 255
    lid = S.save_label(db, qid, "alice", patch=p1, ms=1200)
    assert S.get_query(db, qid)["status"] == "done" and S.get_query(db, qid)["lease_owner"] is None
    assert S.save_label(db, qid, "alice", patch=p1.copy(), ms=1200) == lid  # retry of the same submit
    assert db["labels"].count == 1 and db["label_history"].count == 0

    p2 = p1.copy()
    p2[1:, :] = 8
    assert S.save_label(db, qid, "alice", patch=p2, ms=500) == lid  # edit
    assert db["labels"].count == 1 and db["label_history"].count == 1
    cur = S.get_label(db, lid)
    np.testing.assert_array_equal(cur["patch"], p2)
    assert cur["ms"] == 1700 and cur["review"] == "pending"   # active time adds up over the edits
    (old,) = S.label_versions(db, lid)
    np.testing.assert_array_equal(old["patch"], p1)
    assert old["ms"] == 1200 and old["annotator"] == "alice"

    with pytest.raises(S.InvalidInput, match="shape"):
        S.save_label(db, qid, "alice", patch=np.zeros((5, 4), np.uint8))
    with pytest.raises(S.InvalidInput, match="exactly one"):
        S.save_label(db, qid, "alice")
    with pytest.raises(S.InvalidInput):
        S.save_label(db, 12345, "alice", point_class=1)
    assert db["labels"].count == 1 and db["label_history"].count == 1


def test_review_reject_returns_query_to_queue(db):
    _, rnd = _project(db)
    q1, q2 = S.add_queries(db, rnd, "img0", "pixel", [(1, 1, 1.0), (2, 2, 0.5)])
    l1 = S.save_label(db, q1, "alice", point_class=4, ms=10)
    l2 = S.save_label(db, q2, "alice", point_class=5, ms=10)
    S.review(db, l2, True, "rev")
    S.review(db, l1, False, "rev")
    assert S.get_label(db, l2)["review"] == "approved"
    assert S.get_label(db, l1)["review"] == "rejected" and S.get_label(db, l1)["reviewer"] == "rev"
    assert S.get_query(db, q1)["status"] == "pending"
    m = S.label_mask(db, "img0")
    assert m[1, 1] == IGNORE and m[2, 2] == 5  # rejected label no longer in the mask
    assert S.lease_next(db, "bob")["id"] == q1
    S.save_label(db, q1, "bob", point_class=6)
    assert S.label_mask(db, "img0")[1, 1] == 6
    # the same annotator re-answering a rejected label identically counts as a new answer
    S.review(db, S.get_label(db, l2)["id"], False, "rev")
    S.save_label(db, q2, "alice", point_class=5, ms=10)
    assert S.get_label(db, l2)["review"] == "pending" and S.get_query(db, q2)["status"] == "done"
    assert S.label_mask(db, "img0")[2, 2] == 5
    with pytest.raises(S.InvalidInput):
        S.review(db, 999, True, "rev")


def test_label_mask_composition(db):
    _, rnd = _project(db, h=10, w=12)
    qa, qb = S.add_queries(db, rnd, "img0", "region", [(0, 0, 6, 6, 1.0), (4, 4, 12, 14, 0.5)])
    (qp,) = S.add_queries(db, rnd, "img0", "pixel", [(9, 0, 0.2)])
    (qc,) = S.add_queries(db, rnd, "img1", "region", [(0, 0, 2, 2, 0.1)])
    pa = np.full((6, 6), 1, np.uint8)
    pa[0, :] = 255  # left unlabeled inside the box
    S.save_label(db, qa, "alice", patch=pa)
    pb = np.full((8, 10), 2, np.uint8)
    pb[0, 0] = 255  # (4,4): does not overwrite the earlier label below
    S.save_label(db, qb, "bob", patch=pb)  # box runs past the image: clipped
    S.save_label(db, qp, "carol", point_class=3)
    S.save_label(db, qc, "alice", point_class=9)  # region answered with one class

    expect = np.full((10, 12), 255, np.uint8)
    expect[1:6, 0:6] = 1
    expect[4:10, 4:12] = 2
    expect[4, 4] = 1
    expect[9, 0] = 3
    m = S.label_mask(db, "img0")
    assert m.dtype == np.uint8 and m.shape == (10, 12)
    np.testing.assert_array_equal(m, expect)
    np.testing.assert_array_equal(S.label_mask(db, S.image_id(db, "img0"), 5, 5), expect[:5, :5])
    assert S.label_mask(db, "img1")[:3, :3].tolist() == [[9, 9, 255], [9, 9, 255], [255, 255, 255]]
    assert S.labeled_pixel_count(db) == {"img0": int((expect != 255).sum()), "img1": 4}

    prog = S.round_progress(db, rnd)
    assert prog["done"] == prog["total"] == 4 and prog["annotators"] == {"alice": 2, "bob": 1, "carol": 1}


# ------------------------------------------------------------------------------------------
# export
# ------------------------------------------------------------------------------------------

def _labeled_project(db, h=12, w=16):
    S.add_images(db, [dict(name="aachen_000000_000019_leftImg8bit", height=h, width=w),
                      dict(name="bremen_1", height=h, width=w), dict(name="nolabels", height=h, width=w),
                      dict(name="src_0", height=h, width=w, domain="source")])
    run = S.start_run(db)
    r1, r2 = S.add_round(db, run, 1), S.add_round(db, run, 2)
    rng = np.random.default_rng(0)
    (qa,) = S.add_queries(db, r1, "aachen_000000_000019_leftImg8bit", "region", [(0, 0, h, w)])
    patch = rng.integers(0, 19, (h, w)).astype(np.uint8)
    patch[rng.random((h, w)) < 0.3] = 255
    S.save_label(db, qa, "alice", patch=patch, ms=900)
    (qb,) = S.add_queries(db, r2, "bremen_1", "pixel", [(5, 6)])
    S.save_label(db, qb, "bob", point_class=18, ms=50)
    (qc,) = S.add_queries(db, r2, "bremen_1", "region", [(0, 0, 2, 2)])
    S.save_label(db, qc, "alice", point_class=0, ms=25)
    (qs,) = S.add_queries(db, r1, "src_0", "pixel", [(1, 1)])
    S.save_label(db, qs, "alice", point_class=1)
    return patch


def _read(path):
    return np.array(Image.open(path))


def test_export_round_trip_cityscapes(db, tmp_path):
    from cityscapesscripts.helpers.labels import trainId2label

    patch = _labeled_project(db)
    out = tmp_path / "export"
    man = S.export(db, out, CITYSCAPES19)
    stems = ["aachen_000000_000019", "bremen_1"]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [s + suf for s in stems for suf in ("_gtFine_labelTrainIds.png", "_gtFine_labelIds.png", "_gtFine_color.png")]
        + ["manifest.json"])
    for stem, name in zip(stems, ["aachen_000000_000019_leftImg8bit", "bremen_1"]):
        tid = _read(out / f"{stem}_gtFine_labelTrainIds.png")
        assert tid.dtype == np.uint8 and tid.ndim == 2
        np.testing.assert_array_equal(tid, S.label_mask(db, name))
        ids = _read(out / f"{stem}_gtFine_labelIds.png")
        col = _read(out / f"{stem}_gtFine_color.png")
        assert col.shape == tid.shape + (3,)
        for t in np.unique(tid):
            sel = tid == t
            if t == 255:
                assert (ids[sel] == 0).all() and (col[sel] == 0).all()
            else:
                lb = trainId2label[int(t)]
                assert (ids[sel] == lb.id).all(), lb.name
                assert (col[sel] == np.array(lb.color)).all(), lb.name
    np.testing.assert_array_equal(_read(out / "aachen_000000_000019_gtFine_labelTrainIds.png"), patch)

    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == man
    a, b = man["images"]["aachen_000000_000019"], man["images"]["bremen_1"]
    assert a["labeled_pixels"] == int((patch != 255).sum()) and a["rounds"] == [1] and a["annotators"] == ["alice"]
    assert a["ms"] == 900 and b["labeled_pixels"] == 5 and b["rounds"] == [2]
    assert b["annotators"] == ["alice", "bob"] and b["ms"] == 75
    assert not list(out.glob(".tmp-*"))


def test_export_dense_merge_human_wins(db, tmp_path):
    S.add_images(db, [dict(name="t0", height=4, width=4)])
    (q,) = S.add_queries(db, None, "t0", "region", [(0, 0, 2, 2)])
    S.save_label(db, q, "alice", point_class=5)
    pred = np.full((4, 4), 7, np.uint8)
    conf = np.full((4, 4), 0.95, np.float32)
    conf[3, :] = 0.5
    conf[2, 0] = 0.9  # exactly the threshold: filled
    calls = []

    def dense(name):
        calls.append(name)
        return pred, conf

    man = S.export(db, tmp_path / "o", CITYSCAPES19, dense=dense, threshold=0.9)
    got = _read(tmp_path / "o" / "t0_gtFine_labelTrainIds.png")
    expect = np.array([[5, 5, 7, 7], [5, 5, 7, 7], [7, 7, 7, 7], [255, 255, 255, 255]], np.uint8)
    np.testing.assert_array_equal(got, expect)
    assert calls == ["t0"]
    assert man["images"]["t0"]["labeled_pixels"] == 4 and man["images"]["t0"]["dense_pixels"] == 8
    with pytest.raises(S.InvalidInput, match="shape"):
        S.export(db, tmp_path / "o2", CITYSCAPES19, dense=lambda n: (pred[:3], conf[:3]))


@pytest.mark.parametrize("name", ["../escape", "a/b", "a\\b", "/abs/x", "..", "C:evil"])
def test_export_rejects_path_traversal(db, tmp_path, name):
    S.add_images(db, [dict(name="fine", height=2, width=2), dict(name=name, height=2, width=2)])
    for img in ("fine", name):
        (q,) = S.add_queries(db, None, img, "pixel", [(0, 0)])
        S.save_label(db, q, "a", point_class=1)
    out = tmp_path / "deep" / "out"
    with pytest.raises(S.StoreError, match="not a plain file name"):
        S.export(db, out, CITYSCAPES19)
    assert not out.exists()  # validated before anything was written
    written = [p for p in tmp_path.rglob("*.png")]
    assert written == []


def test_export_disk_full_one_error_no_temp_files(db, tmp_path, monkeypatch):
    _labeled_project(db)
    import core.fileio as fio

    real = fio.os.fsync
    n = {"i": 0}

    def flaky(fd):   # the 4th file's data does not fit (its bytes are written, the flush to disk fails)
        n["i"] += 1
        if n["i"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(fio.os, "fsync", flaky)
    out = tmp_path / "o"
    with pytest.raises(S.StoreError, match="disk full") as ei:
        S.export(db, out, CITYSCAPES19)
    assert "bremen_1_gtFine_labelTrainIds.png" in str(ei.value)
    assert list(out.iterdir()) == []   # nothing is moved into place before every file is written; no temp files


def test_round_budget_is_stored_as_spec_value_and_unit_and_old_rows_migrate(tmp_path):
    """What the loop stores ("2.2%", "40px") is typed, and a version-1 project whose REAL budget column
    holds the loop's text (SQLite keeps '2.2%' as TEXT there) or a fraction is migrated."""
    from storage.db import MIGRATIONS

    # a version-1 project as the loop wrote it before the migration
    (tmp_path / "old").mkdir()
    con = sqlite3.connect(tmp_path / "old" / "project.db")
    MIGRATIONS[0](con)
    con.execute("PRAGMA user_version = 1")
    con.execute("INSERT INTO rounds (run, idx, budget, strategy) VALUES (1, 1, '2.2%', 'ripu')")
    con.execute("INSERT INTO rounds (run, idx, budget, strategy) VALUES (1, 2, 0.022, 'ripu')")
    con.execute("INSERT INTO rounds (run, idx, budget, strategy) VALUES (2, 1, '40px', 'rand')")
    con.commit()
    con.close()
    db = S.open_store(tmp_path / "old")
    rows = [tuple(r) for r in db.execute("SELECT budget_spec, budget_value, budget_unit FROM rounds ORDER BY id")]
    assert rows == [("2.2%", 2.2, "percent"), ("2.2%", 2.2, "percent"), ("40px", 40.0, "pixels")]
    # new rounds
    db2 = S.open_store(tmp_path / "new")
    a = S.add_round(db2, None, 1, budget="2.2%")
    b = S.add_round(db2, None, 2, budget="40px")
    got = {r["id"]: (r["budget_spec"], r["budget_value"], r["budget_unit"]) for r in db2.query("SELECT * FROM rounds")}
    assert got == {a: ("2.2%", 2.2, "percent"), b: ("40px", 40.0, "pixels")}
    with pytest.raises(S.StoreError, match="budget"):
        S.add_round(db2, None, 3, budget="40pz")


def test_effort_fields_accumulate_and_feed_the_round_plot(db):
    """labels.ms (active milliseconds), edits and prefill: a changed answer adds its effort, a re-sent
    one does not; effort_by_round sums human labels per round cumulatively (the oracle's excluded);
    a version-2 project migrates to them (schema 3)."""
    run, rnd = _project(db)
    rnd2 = S.add_round(db, run, 2, budget="2.2%", strategy="ripu")
    (q1,) = S.add_queries(db, rnd, "img0", "region", [(0, 0, 4, 4, 0.9)])
    (q2,) = S.add_queries(db, rnd2, "img1", "pixel", [(3, 3, 0.5)])
    (q3,) = S.add_queries(db, rnd2, "img1", "pixel", [(5, 5, 0.4)])
    lid = S.save_label(db, q1, "alice", patch=np.full((4, 4), 7, np.uint8), ms=4000, edits=3, prefill="warmup")
    S.save_label(db, q1, "alice", patch=np.full((4, 4), 7, np.uint8), ms=4000, edits=3, prefill="warmup")  # resend
    S.save_label(db, q1, "alice", patch=np.full((4, 4), 8, np.uint8), ms=1000, edits=2, prefill="warmup")  # edit
    cur = S.get_label(db, lid)
    assert (cur["ms"], cur["edits"], cur["prefill"]) == (5000, 5, "warmup")
    S.save_label(db, q2, "bob", point_class=7, ms=1500, prefill="round1")
    S.save_label(db, q3, "oracle", point_class=7, ms=9999)
    assert S.effort_by_round(db, run) == [{"round": 1, "annotation_ms": 5000, "labels": 1},
                                          {"round": 2, "annotation_ms": 6500, "labels": 2}]
    stats = {r["annotator"]: r for r in S.annotator_stats(db)}
    assert stats["alice"]["ms_per_region"] == 5000 and stats["alice"]["ms_per_point"] is None
    assert stats["bob"]["ms_per_point"] == 1500 and stats["alice"]["edits"] == 5
    with pytest.raises(S.InvalidInput, match="edits"):
        S.save_label(db, q2, "bob", point_class=8, edits=-1)
    assert S.schema_version(db) == S.SCHEMA_VERSION and "edits" in db["labels"].columns_dict and "prefill" in db["label_history"].columns_dict
