"""Issue 15, faults 2 and 3: the annotator stores an answer only for a query of the open round that
the caller holds (or already answered and re-opens), with integer class ids of the label space;
a late save after the lease moved on is refused. Server functions are called directly against a
real SQLite store, logged in as a second annotator ("bob") next to "alice"; every refusal is
checked on the database: no label row, no history row, the query row unchanged."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import storage  # noqa: E402
from core.data.labels import CITYSCAPES19, IGNORE  # noqa: E402
from annotator.app import review_label  # noqa: E402
from annotator.canvas_pixel import make_pixel_functions  # noqa: E402
from annotator.canvas_region import make_region_functions  # noqa: E402
from annotator.context import AnnotatorContext, b64  # noqa: E402
from annotator.synthetic import seed_project  # noqa: E402

from tests.test_annotator_unit import POINTS, REGIONS, req  # noqa: E402  (the same synthetic project)

@pytest.fixture
def project(tmp_path):
    provider, info = seed_project(tmp_path / "work", regions=REGIONS, points=POINTS)
    ctx = AnnotatorContext(tmp_path / "work", provider, CITYSCAPES19)
    rn, rs, rk, ro = make_region_functions(ctx, prefetch=False)
    pn, ps, pk = make_pixel_functions(ctx)
    fns = SimpleNamespace(region_next=rn, region_save=rs, region_skip=rk, region_open=ro,
                          pixel_next=pn, pixel_save=ps, pixel_skip=pk)
    return SimpleNamespace(ctx=ctx, info=info, fn=fns, db=ctx.db)


def _labels(task, fill):
    """A full box answer for a region task, every pixel ``fill``."""
    return np.full(task["inner"][2:], fill, np.uint8)


def _save_region(p, user, qid, patch, shape=None):
    return p.fn.region_save({"query_id": qid, "labels": b64(patch), "shape": list(shape or patch.shape)}, req(user))


def _answers(qids, cls):
    return {"answers": [{"query_id": q, "idx": i, "cls": cls} for i, q in enumerate(qids)]}


class Stored:
    """What a refused call must leave untouched: every label and history row, and the rows of
    the queries it was about."""

    def __init__(self, db, *qids):
        self.db, self.qids = db, qids
        self.before = self._now()

    def _now(self):
        return (list(self.db.execute("SELECT * FROM labels ORDER BY id")),
                list(self.db.execute("SELECT * FROM label_history ORDER BY id")),
                [storage.get_query(self.db, q) for q in self.qids])

    def unchanged(self):
        labels, history, queries = self._now()
        assert labels == self.before[0], "a label was stored or changed"
        assert history == self.before[1], "a label version was replaced"
        assert queries == self.before[2], "a query's status or lease changed"
        return True


def _expire(db, *qids):
    # time passing: the lease ran out (20 minutes in the annotator)
    db.conn.executemany("UPDATE queries SET lease_expiry = ? WHERE id = ?", [(time.time() - 1, q) for q in qids])
    db.conn.commit()


# ------------------------------------------------------------------------------------------
# fault 2: the caller must hold the query, in the open round
# ------------------------------------------------------------------------------------------

def test_query_of_another_round_is_refused(project):
    p, db = project, project.db
    # round 1: alice answers a region and the whole pixel image; the save hands her the next region
    t = p.fn.region_next({}, req("alice"))["task"]
    r = _save_region(p, "alice", t["qid"], _labels(t, 0))
    assert r["ok"]
    answered, held = t["qid"], r["task"]["qid"]
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("alice"))["task"]["points"]]
    assert p.fn.pixel_save(_answers(pts, 1), req("alice"))["acked"] == pts
    pending = (set(p.info["region_ids"]) - {answered, held}).pop()
    # round 2 opens: the annotator (no fixed round) now serves it
    rnd2 = storage.add_round(db, p.info["run"], 2, budget="2.2%")
    (new,) = storage.add_queries(db, rnd2, "img1", "region", [(60, 60, 92, 92, 0.5)])
    mask_before = storage.label_mask(db, "img0")
    s = Stored(db, answered, held, pending, *pts)
    for user, qid in (("bob", answered), ("alice", answered), ("alice", held), ("bob", pending)):
        r = _save_region(p, user, qid, _labels(t, 13))
        assert not r["ok"] and "round" in r["error"], (user, qid, r)
    r = p.fn.region_open({"query_id": answered}, req("alice"))
    assert not r["ok"] and "round" in r["error"]
    for user in ("bob", "alice"):
        r = p.fn.pixel_save(_answers(pts, 13), req(user))
        assert r["acked"] == [] and len(r["errors"]) == len(pts)
        assert all(e["permanent"] and "round" in e["error"] for e in r["errors"])
    assert not p.fn.region_skip({"query_id": held, "reason": "x"}, req("alice"))["ok"]
    assert s.unchanged()
    np.testing.assert_array_equal(storage.label_mask(db, "img0"), mask_before)
    # the open round still works (bob's first refused save handed him its one query)
    t2 = p.fn.region_next({}, req("bob"))["task"]
    assert t2["qid"] == new and _save_region(p, "bob", new, _labels(t2, 2))["ok"]


def test_unleased_query_is_refused(project):
    p, db = project, project.db
    region = p.info["region_ids"][2]
    pts = p.info["pixel_ids"][2]
    s = Stored(db, region, *pts)
    r = _save_region(p, "bob", region, np.full((32, 32), 3, np.uint8))
    assert not r["ok"] and "not assigned to you" in r["error"]
    assert not p.fn.region_open({"query_id": region}, req("bob"))["ok"]
    r = p.fn.pixel_save(_answers(pts, 3), req("bob"))
    assert r["acked"] == [] and all(e["permanent"] and "not assigned to you" in e["error"] for e in r["errors"])
    assert s.unchanged()
    assert db["labels"].count == 0


def test_query_held_by_someone_else_is_refused(project):
    p, db = project, project.db
    t = p.fn.region_next({}, req("alice"))["task"]
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("alice"))["task"]["points"]]
    s = Stored(db, t["qid"], *pts)
    # a live lease of alice's
    r = _save_region(p, "bob", t["qid"], _labels(t, 3))
    assert not r["ok"] and "alice" in r["error"]
    r = p.fn.pixel_save(_answers(pts, 3), req("bob"))
    assert r["acked"] == [] and all(e["permanent"] for e in r["errors"])
    assert s.unchanged()
    # alice's lease ran out but nobody leased the query since: still not bob's to answer
    _expire(db, t["qid"], *pts)
    s = Stored(db, t["qid"], *pts)
    r = _save_region(p, "bob", t["qid"], _labels(t, 3))
    assert not r["ok"] and "not assigned to you" in r["error"]
    r = p.fn.pixel_save(_answers(pts, 3), req("bob"))
    assert r["acked"] == [] and all(e["permanent"] and "not assigned to you" in e["error"] for e in r["errors"])
    assert not p.fn.region_open({"query_id": t["qid"]}, req("bob"))["ok"]
    assert s.unchanged() and db["labels"].count == 0
    # alice herself may still answer (nobody took it over)
    assert _save_region(p, "alice", t["qid"], _labels(t, 3))["ok"]


@pytest.mark.parametrize("cls", [3.7, 3.0, True, "3", None, [3]])
def test_non_integer_class_is_refused(project, cls):
    p, db = project, project.db
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("bob"))["task"]["points"]]
    s = Stored(db, *pts)
    r = p.fn.pixel_save(_answers(pts[:1], cls), req("bob"))
    assert r["acked"] == [] and len(r["errors"]) == 1 and r["errors"][0]["permanent"]
    assert "integer" in r["errors"][0]["error"]
    assert s.unchanged() and db["labels"].count == 0


def test_out_of_range_class_is_refused(project):
    p, db = project, project.db
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("bob"))["task"]["points"]]
    t = p.fn.region_next({}, req("bob"))["task"]
    s = Stored(db, t["qid"], *pts)
    for cls in (19, 200, 254, 256, -1, 1000):
        r = p.fn.pixel_save(_answers(pts[:1], cls), req("bob"))
        assert r["acked"] == [] and r["errors"][0]["permanent"] and "class" in r["errors"][0]["error"], cls
    for cls in (19, 77, 254):
        bad = _labels(t, 0)
        bad[3, 4] = cls
        r = _save_region(p, "bob", t["qid"], bad)
        assert not r["ok"] and "class" in r["error"] and str(cls) in r["error"], cls
    assert s.unchanged() and db["labels"].count == 0
    # 255 is what "unsure" (pixels) and "void" (regions) store: accepted
    assert p.fn.pixel_save(_answers(pts[:1], IGNORE), req("bob"))["acked"] == pts[:1]
    assert _save_region(p, "bob", t["qid"], _labels(t, IGNORE))["ok"]


def test_wrong_patch_size_is_refused(project):
    p, db = project, project.db
    t = p.fn.region_next({}, req("bob"))["task"]
    qid = t["qid"]
    good = _labels(t, 0)
    s = Stored(db, qid)
    cases = [
        ({"labels": b64(good[:, :-1]), "shape": [32, 31]}, "shape"),       # a smaller box
        ({"labels": b64(np.zeros((33, 32), np.uint8)), "shape": [33, 32]}, "shape"),
        ({"labels": b64(good), "shape": [32, 33]}, "shape"),            # shape and data disagree
        ({"labels": b64(good[:-1]), "shape": [32, 32]}, "values"),      # too few values
        ({"labels": b64(good), "shape": [32.5, 32]}, "shape"),          # not a size
        ({"labels": b64(good), "shape": [32]}, "shape"),
        ({"labels": b64(good)}, "shape"),
        ({"labels": "not base64!", "shape": [32, 32]}, ""),
    ]
    for extra, word in cases:
        r = p.fn.region_save({"query_id": qid, **extra}, req("bob"))
        assert not r["ok"] and word in r["error"], (extra.get("shape"), r)
    # a region answer to a pixel query and a pixel answer to a region query
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("bob"))["task"]["points"]]
    assert not _save_region(p, "bob", pts[0], good)["ok"]
    assert p.fn.pixel_save(_answers([qid], 0), req("bob"))["acked"] == []
    assert s.unchanged() and db["labels"].count == 0
    assert _save_region(p, "bob", qid, good)["ok"]


# ------------------------------------------------------------------------------------------
# fault 3: a late save after the lease moved on is refused
# ------------------------------------------------------------------------------------------

def test_late_region_save_after_the_lease_moved_on_is_refused(project):
    p, db = project, project.db
    t = p.fn.region_next({}, req("alice"))["task"]
    qid = t["qid"]
    _expire(db, qid)                                        # alice went for coffee
    tb = p.fn.region_next({}, req("bob"))["task"]
    assert tb["qid"] == qid                                 # the expired lease went to bob
    assert _save_region(p, "bob", qid, _labels(tb, 13))["ok"]
    s = Stored(db, qid)
    r = _save_region(p, "alice", qid, _labels(t, 0))         # alice's late save
    assert not r["ok"] and "bob" in r["error"] and "not saved" in r["error"]
    assert s.unchanged()
    (lab,) = db.execute("SELECT annotator, review FROM labels WHERE query = ?", [qid]).fetchall()
    assert lab == ("bob", "pending")
    y0, x0, y1, x1 = t["box"]
    assert (storage.label_mask(db, t["image"])[y0:y1, x0:x1] == 13).all()   # bob's answer stands
    assert not p.fn.region_open({"query_id": qid}, req("alice"))["ok"]


def test_late_pixel_save_after_the_lease_moved_on_is_refused(project):
    p, db = project, project.db
    pts = [x["qid"] for x in p.fn.pixel_next({}, req("alice"))["task"]["points"]]
    assert p.fn.pixel_save(_answers(pts[:1], 1), req("alice"))["acked"] == pts[:1]
    _expire(db, *pts[1:])
    got = [x["qid"] for x in p.fn.pixel_next({}, req("bob"))["task"]["points"]]
    assert got == pts[1:]                                   # the unanswered points went to bob
    assert p.fn.pixel_save(_answers(pts[1:], 13), req("bob"))["acked"] == pts[1:]
    s = Stored(db, *pts)
    r = p.fn.pixel_save(_answers(pts[1:], 2), req("alice"))  # alice's queued answers arrive late
    assert r["acked"] == [] and all(e["permanent"] and "bob" in e["error"] for e in r["errors"])
    assert s.unchanged()
    # alice may still change her own answer (Backspace, answer again)
    assert p.fn.pixel_save(_answers(pts[:1], 2), req("alice"))["acked"] == pts[:1]


def test_storage_refuses_a_late_save_over_someone_elses_answer(project):
    """The same rule in storage.save_label, which the oracle and scripts use without the annotator."""
    db = project.db
    qid = storage.lease_next(db, "alice", kind="pixel")["id"]
    _expire(db, qid)
    assert storage.lease_next(db, "bob", kind="pixel")["id"] == qid
    storage.save_label(db, qid, "bob", point_class=13)
    with pytest.raises(storage.LeaseError, match="bob"):
        storage.save_label(db, qid, "alice", point_class=0)
    assert db.execute("SELECT annotator, point_class FROM labels").fetchall() == [("bob", 13)]
    assert db["label_history"].count == 0


# ------------------------------------------------------------------------------------------
# what must keep working
# ------------------------------------------------------------------------------------------

def test_previous_reopen_edit_and_reviewer_reopened_query(project):
    p, db = project, project.db
    t = p.fn.region_next({}, req("alice"))["task"]
    qid = t["qid"]
    assert _save_region(p, "alice", qid, _labels(t, 0))["ok"]
    o = p.fn.region_open({"query_id": qid}, req("alice"))     # Previous
    assert o["ok"] and o["task"]["existing"]
    assert _save_region(p, "alice", qid, _labels(t, 2))["ok"]  # edit, saved again
    lid = db.execute("SELECT id FROM labels WHERE query = ?", [qid]).fetchone()[0]
    assert db["label_history"].count == 1 and storage.get_label(db, lid)["patch"].max() == 2
    # a reviewer rejects it: the query is back in the queue; alice's Previous leases it to her again
    storage.review(db, lid, False, "rev")
    assert storage.get_query(db, qid)["status"] == "pending"
    o = p.fn.region_open({"query_id": qid}, req("alice"))
    assert o["ok"] and storage.holds(db, qid, "alice")
    assert _save_region(p, "alice", qid, _labels(t, 5))["ok"]
    assert storage.get_label(db, lid)["review"] == "pending"
    # rejected again, and this time bob gets it from the queue and answers it
    storage.review(db, lid, False, "rev")
    while True:
        tb = p.fn.region_next({}, req("bob"))["task"]
        if tb["qid"] == qid:
            break
        p.fn.region_skip({"query_id": tb["qid"], "reason": "other"}, req("bob"))
    assert _save_region(p, "bob", qid, _labels(tb, 8))["ok"]
    s = Stored(db, qid)
    assert not p.fn.region_open({"query_id": qid}, req("alice"))["ok"]
    assert not _save_region(p, "alice", qid, _labels(t, 5))["ok"]
    # approving alice's rejected label now would give the query two answers
    with pytest.raises(storage.StoreError, match="bob"):
        storage.review(db, lid, True, "rev")
    assert s.unchanged()


def test_review_is_limited_to_the_open_round(project):
    p, db = project, project.db
    t = p.fn.region_next({}, req("alice"))["task"]
    assert _save_region(p, "alice", t["qid"], _labels(t, 0))["ok"]
    old = db.execute("SELECT id FROM labels").fetchone()[0]
    storage.add_round(db, p.info["run"], 2, budget="2.2%")
    s = Stored(db, t["qid"])
    for approve in (False, True):
        msg = review_label(p.ctx, old, approve, "bob")
        assert "round 1" in msg and "open round" in msg
    assert "integer" in review_label(p.ctx, old + 0.5, False, "bob")
    assert "unknown label" in review_label(p.ctx, 999, False, "bob")
    assert s.unchanged() and storage.get_label(db, old)["review"] == "pending"


def test_a_closed_round_refuses_answers_skips_reviews_and_imports(tmp_path):
    """'Finish round' closes the round in the store: an answer that raced the click is refused in the
    same transaction as its write would be, and so are skips, reviews and tool imports."""
    db = storage.open_store(tmp_path)
    storage.add_images(db, [dict(name="a", domain="target", split="train", path="", height=32, width=32)])
    rid = storage.add_round(db, None, 1, budget="2.2%", strategy="ripu")
    q3 = storage.add_queries(db, rid, "a", "region", [(0, 0, 8, 8, 0.9), (8, 8, 16, 16, 0.5),
                                                         (16, 16, 24, 24, 0.1)])[2]
    patch = np.ones((8, 8), np.uint8)
    lab = storage.submit_label(db, storage.lease_next(db, "ann", round=rid)["id"], "ann", rid, patch=patch)
    held = storage.lease_next(db, "ann", round=rid)["id"]
    storage.set_round_status(db, rid, "closed")
    with pytest.raises(storage.AnswerRefused, match="finished"):
        storage.submit_label(db, held, "ann", rid, patch=patch)
    assert "finished" in storage.answer_refusal(db, held, "ann", rid, held_only=True)
    with pytest.raises(storage.InvalidInput, match="finished"):
        storage.review(db, lab, False, "rev", round_id=rid)
    with pytest.raises(storage.InvalidInput, match="finished"):
        storage.import_labels(db, [{"query_id": q3, "annotator": "tool", "patch": patch}], rid, {1, 255})
    assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 1
    storage.set_round_status(db, rid, "open")     # a stopped run resumed: the round takes answers again
    storage.submit_label(db, held, "ann", rid, patch=patch)
    assert db.execute("SELECT count(*) FROM labels").fetchone()[0] == 2
