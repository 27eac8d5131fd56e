"""Browser acceptance tests of the annotator: Playwright drives Debian chromium (headless)
against the real Gradio app served from a thread, with a real SQLite store in tmp_path.

Assertions are on what ends up in SQLite and in exported PNGs, not only on the DOM.
Screenshots of both canvases go to ``artifacts/`` (gitignored).
"""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

pytest.importorskip("playwright")
pytest.importorskip("pytest_playwright")
from tests.conftest import CHROMIUM  # noqa: E402

if not Path(CHROMIUM).exists():
    pytest.skip(f"{CHROMIUM} missing (apt-get install -y chromium)", allow_module_level=True)

import storage  # noqa: E402
from core.data.labels import CITYSCAPES19, IGNORE  # noqa: E402
from annotator.app import launch  # noqa: E402
from annotator.synthetic import seed_project  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts"
H, W = 96, 128
REGIONS = [(0, (40, 40, 72, 72), 0.9), (1, (20, 60, 52, 92), 0.8), (0, (8, 8, 40, 40), 0.7),
           (1, (56, 70, 88, 102), 0.6)]
POINTS = {2: [(6 + (k // 8) * 20, 6 + (k % 8) * 16) for k in range(40)]}
USERS = [("annotator1", "pw-one"), ("annotator2", "pw-two")]
# 40 keys: the number row (class positions 1..10 -> trainIds 0..9) and u (unsure -> 255)
KEYS = list("1234567890u") * 4
KEYS = KEYS[:40]
KEY_CLASS = {str(d): d - 1 for d in range(1, 10)} | {"0": 9, "u": IGNORE}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(tmp_path_factory, name: str, auth=None):
    work = tmp_path_factory.mktemp(name)
    provider, info = seed_project(work / "work", n_images=3, h=H, w=W, regions=REGIONS, points=POINTS,
                                  cache_dir=work / "cache")
    port = _free_port()
    demo = launch(work / "work", provider, CITYSCAPES19, auth=auth, port=port, block=False,
                  on_finish=lambda rnd: f"finish called for round {rnd}")
    return demo, {"url": f"http://127.0.0.1:{port}/", "workdir": work / "work", "provider": provider, **info}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    demo, info = _serve(tmp_path_factory, "annot")
    yield info
    demo.close()


@pytest.fixture(scope="module")
def auth_app(tmp_path_factory):
    demo, info = _serve(tmp_path_factory, "annot-auth", auth=USERS)
    yield info
    demo.close()


@pytest.fixture
def db(app):
    d = storage.open_store(app["workdir"], create=False)
    yield d
    d.close()


def _dataset(page, sel: str) -> dict:
    return page.eval_on_selector(sel, "e => Object.assign({}, e.dataset)")


def _wait_attr(page, sel: str, js_cond: str, timeout: float = 20_000):
    page.wait_for_function(f"() => {{ const e = document.querySelector({sel!r}); return !!e && ({js_cond}); }}",
                           timeout=timeout)


def _open(page, url: str):
    page.goto(url)
    _wait_attr(page, "#annot-header", "!e.textContent.includes('Loading')")


def _login(page, url: str, user: str, password: str):
    page.goto(url)
    page.locator("input[type=password]").wait_for(timeout=20_000)
    page.locator("input[data-testid=textbox]").fill(user)
    page.locator("input[type=password]").fill(password)
    page.get_by_role("button", name="Login").click()


def _canvas_point(page, d: dict, y: int, x: int) -> tuple[float, float]:
    """Page coordinates of the centre of crop pixel (y, x) on the region canvas."""
    box = page.locator("#region-canvas canvas.ra-zoom").bounding_box()
    ch, cw = (int(v) for v in d["crop"].split(",")[2:])
    return box["x"] + (x + 0.5) * box["width"] / cw, box["y"] + (y + 0.5) * box["height"] / ch


def _label(db, qid: int, annotator: str) -> dict:
    rows = list(db.query("SELECT id FROM labels WHERE query = ? AND annotator = ?", [qid, annotator]))
    assert rows, f"no label stored for query {qid} by {annotator}"
    return storage.get_label(db, rows[0]["id"])


# --------------------------------------------------------------------------------------------

def test_region_superpixel_fill_and_brush_saved(app, page, db):
    ARTIFACTS.mkdir(exist_ok=True)
    _open(page, app["url"])
    root = "#region-canvas .ra-root"
    _wait_attr(page, root, "e.dataset.state === 'ready'")
    d = _dataset(page, root)
    qid = int(d["qid"])
    q = storage.get_query(db, qid)
    assert q["kind"] == "region" and q["status"] == "leased" and q["lease_owner"] == "local"
    name = storage.get_image(db, q["image"])["name"]
    cy0, cx0, ch, cw = (int(v) for v in d["crop"].split(","))
    by, bx, bh, bw = (int(v) for v in d["inner"].split(","))
    assert (bh, bw) == (q["y1"] - q["y0"], q["x1"] - q["x0"]) and (cy0 + by, cx0 + bx) == (q["y0"], q["x0"])
    lvl = int(d["lvl"])
    sp = app["provider"].superpixels(name, (cy0, cx0, cy0 + ch, cx0 + cw))[lvl]
    pred = app["provider"].prediction(name)[cy0:cy0 + ch, cx0:cx0 + cw]

    # superpixel fill with class position 5 (trainId 4, fence) at the box centre
    fy, fx = by + bh // 2, bx + bw // 2
    page.keyboard.press("5")
    page.mouse.click(*_canvas_point(page, d, fy, fx))
    # one brush stroke, 1 px wide, class position 7 (trainId 6, traffic light), along row by+2
    page.keyboard.press("b")
    page.keyboard.press("7")
    page.keyboard.press("[")
    page.keyboard.press("[")
    _wait_attr(page, root, "e.dataset.brush === '1' && e.dataset.tool === 'brush'")
    ry, rx0, rx1 = by + 2, bx + 2, bx + bw - 3
    page.mouse.move(*_canvas_point(page, d, ry, rx0))
    page.mouse.down()
    page.mouse.move(*_canvas_point(page, d, ry, rx1), steps=6)
    page.mouse.up()
    # a fill in another superpixel, undone with Ctrl+Z (redo + undo again must end in the same state)
    uy, ux = by + bh - 2, bx + 1
    assert sp[uy, ux] != sp[fy, fx]
    drawn = int(_dataset(page, root)["drawn"])
    page.keyboard.press("f")
    page.keyboard.press("9")
    page.mouse.click(*_canvas_point(page, d, uy, ux))
    page.keyboard.press("Control+z")
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+z")
    _wait_attr(page, root, f"+e.dataset.drawn === {drawn + 4}")
    page.locator("#region-canvas").screenshot(path=str(ARTIFACTS / "annotator_region.png"))
    page.keyboard.press("Enter")
    _wait_attr(page, root, "e.dataset.saved === '1' && e.dataset.state !== 'saving'")

    expected = pred.copy()
    inside = np.zeros_like(sp, bool)
    inside[by:by + bh, bx:bx + bw] = True
    expected[(sp == sp[fy, fx]) & inside] = 4
    expected[ry, rx0:rx1 + 1] = 6
    expected = expected[by:by + bh, bx:bx + bw]
    lab = _label(db, qid, "local")
    assert lab["patch"].shape == (bh, bw)
    assert (lab["patch"] == 4).sum() > 0 and (lab["patch"] == 6).sum() == rx1 - rx0 + 1
    np.testing.assert_array_equal(lab["patch"], expected)
    assert storage.get_query(db, qid)["status"] == "done"
    # the canvas moved on to another region, and the header counted the label
    assert _dataset(page, root)["qid"] not in ("", str(qid))
    _wait_attr(page, "#annot-header", "e.textContent.includes('your labels: 1 ')")


def test_pixel_fast_keys_all_stored(app, page, db):
    ARTIFACTS.mkdir(exist_ok=True)
    _open(page, app["url"])
    page.get_by_role("tab", name="Pixels").click()
    root = "#pixel-canvas .pa-root"
    _wait_attr(page, root, "e.dataset.state === 'ready' && e.dataset.npoints === '40'")
    qids = [int(v) for v in _dataset(page, root)["qids"].split(",")]
    assert qids == app["pixel_ids"][2]
    t0 = time.perf_counter()
    for k in KEYS:
        page.keyboard.press(k)
    typed = time.perf_counter() - t0
    # go back one point and change the answer: the later answer must win
    page.keyboard.press("Backspace")
    page.keyboard.press("3")
    _wait_attr(page, root, "e.dataset.pending === '0' && e.dataset.acked === '40'", timeout=30_000)
    page.keyboard.press("Backspace")  # ring the last point for the screenshot
    page.keyboard.press("h")
    page.locator("#pixel-canvas").screenshot(path=str(ARTIFACTS / "annotator_pixel.png"))
    expected = [KEY_CLASS[k] for k in KEYS]
    expected[-1] = 2
    got = [_label(db, qid, "local")["point_class"] for qid in qids]
    assert got == expected, f"typed 40 keys in {typed:.2f}s"
    assert all(storage.get_query(db, q)["status"] == "done" for q in qids)
    page.keyboard.press("n")  # next image: none left in this round
    _wait_attr(page, root, "e.dataset.state === 'empty'")


def test_export_after_labeling(app, page, db):
    _open(page, app["url"])
    root = "#region-canvas .ra-root"
    _wait_attr(page, root, "e.dataset.state === 'ready'")
    qid = int(_dataset(page, root)["qid"])
    q = storage.get_query(db, qid)
    name = storage.get_image(db, q["image"])["name"]
    page.keyboard.press("a")  # accept the prediction as it is
    _wait_attr(page, root, "e.dataset.saved === '1' && e.dataset.state !== 'saving'")
    page.get_by_role("tab", name="Round").click()
    page.locator("#export-btn").click()
    _wait_attr(page, "#round-status", "e.textContent.includes('Exported ')")
    out = app["workdir"] / "export" / f"{name}_gtFine_labelTrainIds.png"
    assert out.is_file()
    from PIL import Image
    got = np.array(Image.open(out))
    expected = storage.label_mask(db, name)
    y0, x0, y1, x1 = q["y0"], q["x0"], q["y1"], q["x1"]
    pred = app["provider"].prediction(name)
    np.testing.assert_array_equal(got[y0:y1, x0:x1], pred[y0:y1, x0:x1])
    np.testing.assert_array_equal(got, expected)
    assert (got != IGNORE).sum() >= (y1 - y0) * (x1 - x0)
    assert (app["workdir"] / "export" / "manifest.json").is_file()


def test_two_sessions_never_get_the_same_query(auth_app, browser):
    ctxs = [browser.new_context(viewport={"width": 1400, "height": 1000}) for _ in USERS]
    try:
        pages = [c.new_page() for c in ctxs]
        root = "#region-canvas .ra-root"
        for pg, (u, pw) in zip(pages, USERS):
            _login(pg, auth_app["url"], u, pw)
        seen = []
        for _ in range(2):  # first tasks, then the tasks after saving
            for pg in pages:
                _wait_attr(pg, root, "e.dataset.state === 'ready'")
            qids = [int(_dataset(pg, root)["qid"]) for pg in pages]
            assert qids[0] != qids[1]
            assert not set(qids) & set(seen)
            seen += qids
            for pg in pages:
                pg.keyboard.press("Enter")
            for pg in pages:
                _wait_attr(pg, root, f"e.dataset.state !== 'saving' && e.dataset.saved === '{len(seen) // 2}'")
        db = storage.open_store(auth_app["workdir"], create=False)
        try:
            owners = {r["query"]: r["annotator"] for r in db.query("SELECT query, annotator FROM labels")}
        finally:
            db.close()
        assert sorted(owners) == sorted(seen)
        assert {owners[q] for q in seen[0::2]} == {"annotator1"} and {owners[q] for q in seen[1::2]} == {"annotator2"}
    finally:
        for c in ctxs:
            c.close()


def test_login_enforced(auth_app, browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        # the server functions are behind the login too
        r = ctx.request.post(auth_app["url"] + "gradio_api/component_server",
                             data={"data": {}, "component_id": 1, "fn_name": "region_next", "session_hash": "x"})
        assert r.status == 401
        page = ctx.new_page()
        _login(page, auth_app["url"], "annotator1", "wrong")
        page.get_by_text("Incorrect Credentials").wait_for(timeout=10_000)
        assert page.locator("#region-canvas").count() == 0
        _login(page, auth_app["url"], "annotator1", USERS[0][1])
        _wait_attr(page, "#annot-header", "!e.textContent.includes('Loading')")
        _wait_attr(page, "#region-canvas .ra-root", "e.dataset.state === 'ready' || e.dataset.state === 'empty'")
        page.get_by_text("signed in as annotator1").wait_for(timeout=10_000)
    finally:
        ctx.close()
