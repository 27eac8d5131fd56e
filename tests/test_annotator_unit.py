"""Annotator without a browser: provider, superpixels, auth/binding rules, and the canvases'
server functions called directly against a real SQLite store in tmp_path."""
from __future__ import annotations

import hashlib
import os
from types import SimpleNamespace

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import storage  # noqa: E402
from core.data.labels import CITYSCAPES19, IGNORE  # noqa: E402
from annotator import superpixels as SP  # noqa: E402
from annotator.app import (  # noqa: E402
    build_app, check_binding, header_markdown, launch, metrics_frames, parse_auth, review_preview,
)
from annotator.canvas_pixel import make_pixel_functions  # noqa: E402
from annotator.canvas_region import make_region_functions  # noqa: E402
from annotator.context import AnnotatorContext, AnnotatorError, b64, username  # noqa: E402
from annotator.provider import ArrayProvider, Provider, ProviderError, load_view  # noqa: E402
from annotator.synthetic import make_scene, seed_project  # noqa: E402

REGIONS = [(0, (40, 40, 72, 72), 0.9), (1, (20, 60, 52, 92), 0.8), (0, (8, 8, 40, 40), 0.7)]
POINTS = {2: [(5, 5), (10, 20), (50, 60), (90, 120)]}


def req(user):
    return SimpleNamespace(username=user)


@pytest.fixture
def project(tmp_path):
    provider, info = seed_project(tmp_path / "work", regions=REGIONS, points=POINTS, cache_dir=tmp_path / "cache")
    ctx = AnnotatorContext(tmp_path / "work", provider, CITYSCAPES19)
    rn, rs, rk, ro = make_region_functions(ctx)
    pn, ps, pk = make_pixel_functions(ctx)
    fns = SimpleNamespace(region_next=rn, region_save=rs, region_skip=rk, region_open=ro,
                          pixel_next=pn, pixel_save=ps, pixel_skip=pk)
    return SimpleNamespace(ctx=ctx, provider=provider, info=info, fn=fns, db=ctx.db, tmp=tmp_path)


def _box_labels(task, fill=None):
    by, bx, bh, bw = task["inner"]
    init = np.frombuffer(__import__("base64").b64decode(task["init"]), np.uint8).reshape(task["crop"][2:])
    patch = init[by:by + bh, bx:bx + bw].copy()
    if fill is not None:
        patch[:] = fill
    return patch


# ------------------------------------------------------------------------------------------
# superpixels and provider
# ------------------------------------------------------------------------------------------

def test_slic_levels_and_disk_cache(tmp_path):
    img = make_scene(3)[0][:60, :70]
    sp = SP.slic_levels(img)
    assert sp.shape == (len(SP.LEVELS), 60, 70) and sp.dtype == np.uint16
    counts = [int(s.max()) + 1 for s in sp]
    assert counts[0] > counts[1] > counts[2] >= 2  # fine -> coarse
    a = SP.cached_slic_levels(img, tmp_path)
    files = list((tmp_path / "superpixels").glob("*.npz"))
    assert len(files) == 1
    np.testing.assert_array_equal(a, sp)
    files[0].write_bytes(b"garbage")  # a damaged cache entry is recomputed
    np.testing.assert_array_equal(SP.cached_slic_levels(img, tmp_path), sp)
    assert SP.boundaries(sp[1]).any()


def test_array_provider_memory_and_npz(tmp_path):
    img, gt, pred, heat, unt = make_scene(1)
    ArrayProvider.write_npz(tmp_path / "cache", "a/b name", img, pred, heat, unt)
    p = ArrayProvider(folder=tmp_path / "cache")
    assert isinstance(p, Provider)
    v = load_view(p, "a/b name")
    assert v.image.shape == (96, 128, 3) and v.prediction.dtype == np.uint8 and v.untrusted.dtype == bool
    np.testing.assert_array_equal(v.prediction, pred)
    sp = p.superpixels("a/b name", (10, 10, 50, 60))
    assert sp.shape == (3, 40, 50)
    assert list((tmp_path / "cache" / "superpixels").glob("*.npz"))
    with pytest.raises(ProviderError, match="no image"):
        p.image("missing")
    bad = ArrayProvider(images={"x": img}, predictions={"x": pred[:10]})
    with pytest.raises(ProviderError, match="prediction"):
        load_view(bad, "x")
    assert load_view(ArrayProvider(images={"x": img}, predictions={"x": pred}), "x").heatmap is None


# ------------------------------------------------------------------------------------------
# auth and binding
# ------------------------------------------------------------------------------------------

def test_parse_auth_forms(tmp_path):
    assert parse_auth(None) is None
    assert parse_auth(("u", "p")) == [("u", "p")]
    assert parse_auth("a:1,b:2") == [("a", "1"), ("b", "2")]
    assert parse_auth(["a:1", ("b", "2")]) == [("a", "1"), ("b", "2")]
    assert parse_auth({"a": "1"}) == [("a", "1")]
    f = tmp_path / "users.txt"
    f.write_text("# annotators\nann1:secret:with:colons\n\nann2:" + "sha256:" +
                 hashlib.sha256(b"pw2").hexdigest() + "\n")
    check = parse_auth(str(f))
    assert callable(check)
    assert check("ann1", "secret:with:colons") and check("ann2", "pw2")
    assert not check("ann2", "nope") and not check("ghost", "pw2")
    assert parse_auth(None, users_file=f) is not None
    with pytest.raises(AnnotatorError, match="twice"):
        parse_auth("a:1,a:2")
    with pytest.raises(AnnotatorError, match="user:password"):
        parse_auth("nocolon")
    with pytest.raises(AnnotatorError, match="cannot read"):
        parse_auth(None, users_file=tmp_path / "nope.txt")


def test_binding_beyond_localhost_needs_auth(tmp_path):
    check_binding("127.0.0.1", None)
    check_binding("localhost", None)
    check_binding("0.0.0.0", [("u", "p")])
    with pytest.raises(AnnotatorError, match="refusing to bind '0.0.0.0' without auth"):
        check_binding("0.0.0.0", None)
    provider, _ = seed_project(tmp_path / "w", n_images=1)
    with pytest.raises(AnnotatorError, match="without auth"):
        launch(tmp_path / "w", provider, CITYSCAPES19, host="0.0.0.0", port=1, block=False)


def test_username_resolution():
    assert username(None) == "local"
    assert username(req(None)) == "local"
    assert username(req("ann")) == "ann"
    app = SimpleNamespace(tokens={"tok": "ann2"}, cookie_id="cid")
    raw = SimpleNamespace(scope={"app": app}, cookies={"access-token-cid": "tok"})
    assert username(raw) == "ann2"
    assert username(SimpleNamespace(scope={"app": app}, cookies={})) == "local"


def test_build_app_and_db_path_forms(tmp_path):
    provider, _ = seed_project(tmp_path / "w", n_images=1)
    demo = build_app(tmp_path / "w" / "project.db", provider, "cityscapes19")
    assert demo.annotator_context.workdir == tmp_path / "w"
    with pytest.raises(AnnotatorError, match="project.db"):
        build_app(tmp_path / "w" / "other.db", provider, CITYSCAPES19)
    with pytest.raises(storage.StoreError):
        AnnotatorContext(tmp_path / "w" / "project.db" / "x", provider, CITYSCAPES19)


# ------------------------------------------------------------------------------------------
# region server functions
# ------------------------------------------------------------------------------------------

def test_region_tasks_are_leased_per_annotator(project):
    a = project.fn.region_next({}, req("a"))
    b = project.fn.region_next({}, req("b"))
    assert a["ok"] and b["ok"] and a["task"]["qid"] != b["task"]["qid"]
    # a reload gives the same annotator their task back
    assert project.fn.region_next({}, req("a"))["task"]["qid"] == a["task"]["qid"]
    t = a["task"]
    assert t["inner"][2:] == [32, 32] and len(t["sp"]) == 3 and t["heat"] and t["untrusted"]
    assert t["context"].startswith("data:image/jpeg;base64,") and t["img"].startswith("data:image/png;base64,")


def test_region_save_validates_and_is_idempotent(project):
    t = project.fn.region_next({}, req("a"))["task"]
    qid = t["qid"]
    good = _box_labels(t)
    good[:4, :] = 6
    r = project.fn.region_save({"query_id": qid, "labels": b64(good[:, :-1]), "shape": [32, 31]}, req("a"))
    assert not r["ok"] and "shape" in r["error"]
    bad = good.copy()
    bad[0, 0] = 77
    r = project.fn.region_save({"query_id": qid, "labels": b64(bad), "shape": [32, 32]}, req("a"))
    assert not r["ok"] and "unknown class" in r["error"]
    assert project.db["labels"].count == 0
    # someone else cannot answer a query leased to "a"
    r = project.fn.region_save({"query_id": qid, "labels": b64(good), "shape": [32, 32]}, req("b"))
    assert not r["ok"] and "leased" in r["error"]
    r = project.fn.region_save({"query_id": qid, "labels": b64(good), "shape": [32, 32], "ms": 1234}, req("a"))
    assert r["ok"] and r["saved"] == qid and r["task"]["qid"] != qid
    lab = storage.get_label(project.db, project.db.execute("SELECT id FROM labels").fetchone()[0])
    np.testing.assert_array_equal(lab["patch"], good)
    assert lab["ms"] == 1234 and lab["annotator"] == "a"
    # the same answer again (double Enter, retry) changes nothing; an edit keeps history
    project.fn.region_save({"query_id": qid, "labels": b64(good), "shape": [32, 32]}, req("a"))
    assert project.db["labels"].count == 1 and project.db["label_history"].count == 0
    # Previous re-opens it pre-filled with the saved answer
    o = project.fn.region_open({"query_id": qid}, req("a"))
    assert o["ok"] and o["task"]["existing"]
    np.testing.assert_array_equal(_box_labels(o["task"]), good)
    assert not project.fn.region_open({"query_id": qid}, req("b"))["ok"]


def test_region_skip_and_flag_need_no_lease_of_others(project):
    t = project.fn.region_next({}, req("a"))["task"]
    r = project.fn.region_skip({"query_id": t["qid"], "action": "skip", "reason": "ambiguous"}, req("a"))
    assert r["ok"]
    q = storage.get_query(project.db, t["qid"])
    assert q["status"] == "skipped" and q["reason"] == "ambiguous"
    t2 = r["task"]
    r = project.fn.region_skip({"query_id": t2["qid"], "action": "flag", "reason": "bad query box"}, req("a"))
    assert storage.get_query(project.db, t2["qid"])["status"] == "flagged"


# ------------------------------------------------------------------------------------------
# pixel server functions
# ------------------------------------------------------------------------------------------

def test_pixel_image_goes_to_one_annotator(project):
    a = project.fn.pixel_next({}, req("a"))
    assert a["ok"] and len(a["task"]["points"]) == 4
    assert [p["qid"] for p in a["task"]["points"]] == project.info["pixel_ids"][2]
    assert all(p["answer"] is None for p in a["task"]["points"])
    assert project.fn.pixel_next({}, req("b"))["task"] is None  # the only pixel image is taken
    owners = {r[0] for r in project.db.execute("SELECT lease_owner FROM queries WHERE kind = 'pixel'")}
    assert owners == {"a"}


def test_pixel_answers_batches_and_edits(project):
    pts = project.fn.pixel_next({}, req("a"))["task"]["points"]
    q = [p["qid"] for p in pts]
    batch = [{"query_id": q[0], "idx": 0, "cls": 0}, {"query_id": q[1], "idx": 1, "cls": IGNORE},
             {"query_id": q[2], "idx": 2, "cls": 13}, {"query_id": q[3], "idx": 3, "cls": 99},
             {"query_id": project.info["region_ids"][0], "idx": 9, "cls": 1}, {"bogus": 1}]
    r = project.fn.pixel_save({"answers": batch}, req("a"))
    assert r["acked"] == q[:3]
    assert len(r["errors"]) == 3 and all(e["permanent"] for e in r["errors"])
    # a resend (retry after a timeout) and then an edit
    project.fn.pixel_save({"answers": batch[:3]}, req("a"))
    project.fn.pixel_save({"answers": [{"query_id": q[2], "idx": 2, "cls": 11}]}, req("a"))
    got = {r[0]: r[1] for r in project.db.execute("SELECT query, point_class FROM labels")}
    assert got == {q[0]: 0, q[1]: IGNORE, q[2]: 11}
    assert project.db["labels"].count == 3
    # reload: answered points come back answered
    again = project.fn.pixel_next({}, req("a"))["task"]
    assert [p["answer"] for p in again["points"]] == [0, IGNORE, 11, None]
    r = project.fn.pixel_skip({"query_ids": [q[3]], "reason": "too dark / blurry"}, req("a"))
    assert r["ok"] and r["task"] is None
    assert storage.get_query(project.db, q[3])["status"] == "skipped"


# ------------------------------------------------------------------------------------------
# page content
# ------------------------------------------------------------------------------------------

def test_header_review_preview_and_metrics(project):
    t = project.fn.region_next({}, req("a"))["task"]
    project.fn.region_save({"query_id": t["qid"], "labels": b64(_box_labels(t)), "shape": [32, 32]}, req("a"))
    md = header_markdown(project.ctx, "a")
    assert "1/7" in md and "your labels: **1**" in md
    lid = project.db.execute("SELECT id FROM labels").fetchone()[0]
    img, text = review_preview(project.ctx, lid)
    assert img.ndim == 3 and img.dtype == np.uint8 and "region query" in text
    storage.add_metric(project.db, project.info["run"], None, "miou", 0.31)
    storage.add_metric(project.db, project.info["run"], 1, "miou", 0.42)
    storage.add_metric(project.db, project.info["run"], 1, "iou", [0.5] * 19)
    dm, dc = metrics_frames(project.ctx)
    assert list(dm["round"]) == [0, 1] and dm["IoU"].round(1).tolist() == [31.0, 42.0]
    assert len(dc) == 19 and set(dc["class"]) == set(CITYSCAPES19.names) and dc["IoU"].max() == 50.0


def test_superpixels_of_upcoming_regions_are_prefetched(project):
    t = project.fn.region_next({}, req("a"))["task"]
    assert project.ctx.prefetcher.wait_idle(30)
    cached = list((project.tmp / "cache" / "superpixels").glob("*.npz"))
    assert len(cached) >= 3  # the task's own crop + the other pending regions
    before = {p.name for p in cached}
    t2 = project.fn.region_save({"query_id": t["qid"], "labels": b64(_box_labels(t)), "shape": [32, 32]}, req("a"))
    assert t2["ok"] and t2["task"]
    assert {p.name for p in (project.tmp / "cache" / "superpixels").glob("*.npz")} >= before


def test_only_the_lease_holder_can_skip(project):
    a = project.fn.region_next({}, req("a"))["task"]
    r = project.fn.region_skip({"query_id": a["qid"], "reason": "ambiguous"}, req("b"))
    assert not r["ok"] and "not assigned to you" in r["error"]
    pending = project.info["region_ids"][-1]  # never leased
    assert not project.fn.region_skip({"query_id": pending, "reason": "x"}, req("a"))["ok"]
    assert storage.get_query(project.db, a["qid"])["status"] == "leased"
    pts = project.fn.pixel_next({}, req("a"))["task"]["points"]
    r = project.fn.pixel_skip({"query_ids": [pts[0]["qid"]], "reason": "x"}, req("b"))
    assert not r["ok"] and storage.get_query(project.db, pts[0]["qid"])["status"] == "leased"
