"""The loop with a human in the browser, on projects that `launch.py` itself made (no --oracle).

Four real runs (tiny sizes), each stopped where the loop waits for people, with the annotator open:

- ``ra``      embedded data, ``--budget 2.2%`` (region queries)
- ``pa``      embedded data, ``--budget 40px`` (pixel queries)
- ``folder``  a GTA5-layout source and a ``folder:`` target with its own ``classes.json`` (5 classes)
- ``round2``  ``--rounds 2``: round 1's queries answered through storage (the model's prediction, as
              "accept as-is" would), "Finish round" pressed in the browser, the loop retrains and
              opens the annotator again for round 2
- ``sp``      embedded data, ``--unit superpixel --budget 2.2%`` (superpixel queries): one answered
              with one class key, one answered "Mixed" with a brush stroke

On each, one query is answered with the keyboard and every tab (Regions, Pixels, Review, Round) is
opened; the test fails on an error toast (even one that has gone again), Gradio's "Error"
placeholder, a header stuck at "Loading…", a canvas error line, a console error, or a traceback in
the run's log. On ``ra``, "Finish round" then lets the loop retrain and end.

Projects are module-scoped and built one after the other (pytest finishes one before it starts the
next), so one run at a time holds the CPU.
"""
import os
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import TimeoutError as PlaywrightTimeout

ROOT = Path(__file__).resolve().parents[1]
SYNTH = ["--synth-size", "64x128", "--synth-counts", "6,3,3", "--crop", "64x128"]
TINY = ["--output-stride", "16", "--iterations", "2", "--round-iterations", "2", "--device", "cpu"]
FOLDER_CLASSES = ["road", "building", "vegetation", "sky", "car"]
TABS = ("Regions", "Pixels", "Review", "Round")
# what each project's header/Round tab must say, and the tab that has its work
EXPECT = {
    "ra": {"round": 1, "budget": "2.2% of pixels", "kind": "region"},
    "pa": {"round": 1, "budget": "40 px per image", "kind": "pixel"},
    "folder": {"round": 1, "budget": "2.2% of pixels", "kind": "region"},
    "round2": {"round": 2, "budget": "2.2% of pixels", "kind": "region"},
}
# records every error toast as it appears (they can vanish before a check would see them)
TOAST_RECORDER = """
if (!window.__errorToasts) {
  window.__errorToasts = [];
  new MutationObserver(() => {
    document.querySelectorAll('.toast-body.error').forEach((t) => {
      if (!t.__seen) { t.__seen = true; window.__errorToasts.push(t.innerText); }
    });
  }).observe(document, {childList: true, subtree: true});
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Project:
    name: str
    workdir: Path
    log: Path
    proc: subprocess.Popen
    url: str = ""

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_annotator(self, rnd: int, timeout: float = 300) -> str:
        want = f"Annotator for round {rnd} is open at"
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            for line in self.text().splitlines():
                if want in line:
                    self.url = line.split(" at ", 1)[1].split()[0]
                    return self.url
            time.sleep(0.3)
        raise AssertionError(f"{self.name}: no '{want}' (exit code {self.proc.poll()}):\n{self.text()[-3000:]}")


def _start(tmp: Path, name: str, args: list[str], cache: Path, override: tuple[str, ...] = ()) -> Project:
    """Start launch.py with ``args`` and TINY (``override``: options after TINY, so they win)."""
    port = _free_port()
    w = tmp / "w"
    env = {**os.environ, "SEGSTUDIO_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "GRADIO_ANALYTICS_ENABLED": "False"}
    log = tmp / "launch.log"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, *TINY, *override, "--workdir", str(w),
                              "--port", str(port)], env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    proj = Project(name, w, log, p)
    proj.url = f"http://127.0.0.1:{port}/"
    return proj


def _answer_from_prediction(workdir: Path, rnd: int, annotator: str = "script") -> int:
    """Answer every open query of round ``rnd`` through the product's storage API with the model's
    cached prediction (what "accept as-is" stores); returns the count."""
    import storage

    db = storage.open_store(workdir, create=False)
    try:
        rows = list(db.query(
            "SELECT q.id, q.kind, q.y0, q.x0, q.y1, q.x1, q.y, q.x, i.name FROM queries q JOIN images i "
            "ON i.id = q.image JOIN rounds r ON r.id = q.round WHERE r.idx = ? AND q.status IN ('pending', 'leased') "
            "ORDER BY q.id", [rnd]))
        for q in rows:
            with np.load(workdir / "cache" / f"round{rnd}" / f"{q['name']}.npz") as z:
                pred = z["pred"]
            if q["kind"] == "region":
                storage.save_label(db, q["id"], annotator, patch=pred[q["y0"]:q["y1"], q["x0"]:q["x1"]], ms=1000)
            else:
                storage.save_label(db, q["id"], annotator, point_class=int(pred[q["y"], q["x"]]), ms=1000)
        return len(rows)
    finally:
        db.close()


def _answer_honeypots(workdir: Path) -> int:
    """Two simulated annotators answer the open honeypots through storage: 'careful' gives the known
    answer, 'sloppy' answers every pixel 'road'. Returns how many each answered."""
    import storage

    db = storage.open_store(workdir, create=False)
    try:
        rows = list(db.query("SELECT id, truth FROM queries WHERE honeypot = 1 AND kind = 'region' "
                             "AND status = 'pending' ORDER BY id"))
        assert len(rows) >= 2, rows
        half = len(rows) // 2
        for k, q in enumerate(rows[: 2 * half]):
            truth = storage.decode_patch(q["truth"])
            if k < half:
                storage.save_label(db, q["id"], "careful", patch=truth, ms=1000)
            else:
                storage.save_label(db, q["id"], "sloppy", patch=np.zeros_like(truth), ms=1000)
        # and both answer one real query that asks two annotators (--overlap): the careful one with the
        # model's prediction, the sloppy one with 'road' everywhere
        q = next(db.query("SELECT q.id, q.y0, q.x0, q.y1, q.x1, i.name FROM queries q JOIN images i ON i.id = q.image "
                          "WHERE q.honeypot = 0 AND q.answers_needed = 2 AND q.status = 'pending' ORDER BY q.id"))
        with np.load(workdir / "cache" / "round1" / f"{q['name']}.npz") as z:
            pred = z["pred"][q["y0"]:q["y1"], q["x0"]:q["x1"]]
        storage.save_label(db, q["id"], "careful", patch=pred, ms=1000)
        storage.save_label(db, q["id"], "sloppy", patch=np.zeros_like(pred), ms=1000)
        assert storage.get_query(db, q["id"])["status"] == "done"
        return half
    finally:
        db.close()


def _press_finish_round(page) -> str:
    """Press "Finish round" on the Round tab; returns the reply shown to the annotator, which must
    arrive before the loop stops the server to retrain (no error toast on the way)."""
    page.evaluate("() => {" + TOAST_RECORDER + "window.__errorToasts.length = 0; }")
    page.get_by_role("tab", name="Round").click()
    page.locator("#finish-round").click()
    try:
        page.wait_for_function("() => (document.querySelector('#round-status')?.innerText || '').includes('retrain')"
                               " || window.__errorToasts.length", timeout=30_000)
    finally:
        toasts = page.evaluate("window.__errorToasts")
    assert not toasts, f"'Finish round' got an error instead of its reply: {toasts}"
    return page.locator("#round-status").inner_text()


def _answer_one_region(browser, url: str) -> None:
    """Accept one region in the browser after looking at it for a moment (so its active time is > 0)."""
    page = browser.new_page()
    try:
        page.goto(url)
        root = _canvas_settled(page, "region")
        page.wait_for_timeout(1500)
        page.keyboard.press("a")
        page.wait_for_function("() => +document.querySelector('#region-canvas .ra-root').dataset.saved >= 1",
                               timeout=30_000)
        assert root.get_attribute("data-saved") != "0"
    finally:
        page.close()


def _finish_round(browser, url: str) -> None:
    page = browser.new_page()
    try:
        page.goto(url)
        _press_finish_round(page)
    finally:
        page.close()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def project(request, tmp_path_factory, cache, browser):
    """A run of launch.py waiting in its annotator (see the module docstring); killed at teardown."""
    name = request.param
    tmp = tmp_path_factory.mktemp(name)
    if name == "ra":
        args = [*SYNTH, "--budget", "2.2%", "--rounds", "1", "--honeypot-rate", "0.9", "--overlap", "1"]
    elif name == "pa":
        args = [*SYNTH, "--budget", "40px", "--rounds", "1", "--region-radius", "2"]
    elif name == "folder":
        from tests.fixtures_datasets import make_folder, make_gta5

        gta = make_gta5(tmp / "gta5", n=4, size=(40, 72))
        folder = make_folder(tmp / "team", n=3, classes=FOLDER_CLASSES, size=(64, 128))
        args = ["--source", f"gta5:{gta}", "--source-size", "40x72", "--target", f"folder:{folder}",
                "--crop", "32x64", "--budget", "2.2%", "--rounds", "1", "--region-radius", "2"]
    elif name == "round2":
        args = [*SYNTH, "--budget", "2.2%", "--rounds", "2", "--region-radius", "2"]
    elif name == "sp":     # superpixels of about 100 px: a few per image, smaller than their boxes
        args = [*SYNTH, "--unit", "superpixel", "--budget", "2.2%", "--superpixel-size", "100", "--rounds", "1"]
    else:
        raise ValueError(name)
    proj = _start(tmp, name, args, cache)
    try:
        proj.wait_for_annotator(1)
        if name == "round2":   # one region answered in the browser (active time, edits, prefill), the rest
            _answer_one_region(browser, proj.url)                       # through storage as that annotator
            con = sqlite3.connect(proj.workdir / "project.db", timeout=5)
            ms, prefill = con.execute("SELECT ms, prefill FROM labels WHERE annotator = 'local'").fetchone()
            con.close()
            assert ms > 1000 and prefill == "warmup", (ms, prefill)    # active time seen, model that pre-filled
            assert _answer_from_prediction(proj.workdir, 1, annotator="local") > 0
            _finish_round(browser, proj.url)
            proj.wait_for_annotator(2)
            con = sqlite3.connect(proj.workdir / "project.db", timeout=5)
            assert con.execute("SELECT count(*) FROM steps WHERE name = 'round1.train'").fetchone()[0] == 1
            con.close()
        yield proj
    finally:
        if proj.proc.poll() is None:
            proj.proc.kill()
            proj.proc.wait()


def _open(page, url):
    """Open the annotator with console errors and error toasts recorded; returns the console list."""
    console_errors = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    page.add_init_script(TOAST_RECORDER)
    page.goto(url)
    return console_errors


def _canvas_settled(page, kind: str, timeout=60_000):
    root = "#region-canvas .ra-root" if kind == "region" else "#pixel-canvas .pa-root"
    page.wait_for_function(f"() => ['ready', 'empty'].includes(document.querySelector('{root}')?.dataset.state)",
                           timeout=timeout)
    return page.locator(root)


def _header(page) -> str:
    try:
        page.wait_for_function("() => { const h = document.querySelector('#annot-header');"
                               " return h && h.innerText.trim() && !h.innerText.includes('Loading'); }", timeout=30_000)
    except PlaywrightTimeout:
        pass
    text = page.locator("#annot-header").inner_text()
    assert text.strip() and "Loading" not in text, \
        f"header stuck at {text!r}; error toasts: {page.evaluate('window.__errorToasts')}"
    return text


def _open_newest_review(page) -> None:
    """On the Review tab: refresh, click the newest label and wait for its preview's text."""
    page.locator("#review-refresh").click()
    cell = page.locator("#review-table [role=gridcell]").first
    cell.wait_for(timeout=30_000)
    cell.click()
    page.wait_for_function("() => (document.querySelector('#review-info')?.innerText || '').includes('Label ')",
                           timeout=30_000)


def assert_no_errors(page, project: Project, console_errors: list[str]) -> None:
    page.wait_for_timeout(500)   # let late responses land
    toasts = page.evaluate("window.__errorToasts || []") + page.locator(".toast-body.error").all_inner_texts()
    assert not toasts, f"{project.name}: error toast(s): {toasts}"
    assert page.get_by_text("Error", exact=True).count() == 0, f"{project.name}: Gradio 'Error' placeholder"
    assert "Loading" not in page.locator("#annot-header").inner_text(), f"{project.name}: header stuck at Loading…"
    canvas_errors = [t for t in page.locator(".ra-msg.err, .pa-msg.err").all_inner_texts() if t.strip()]
    assert not canvas_errors, f"{project.name}: canvas error line(s): {canvas_errors}"
    assert not [e for e in console_errors if "favicon" not in e], f"{project.name}: console errors {console_errors}"
    assert "Traceback" not in project.text(), f"{project.name}: traceback in the run's log:\n{project.text()[-3000:]}"


@pytest.mark.parametrize("project", list(EXPECT), indirect=True)
def test_every_tab_of_a_project_the_loop_made(project, page):
    exp = EXPECT[project.name]
    console_errors = _open(page, project.url)
    header = _header(page)
    assert f"Round {exp['round']}" in header and exp["budget"] in header, header
    # answer one query with the keyboard, in the tab that has this round's work
    page.get_by_role("tab", name="Regions" if exp["kind"] == "region" else "Pixels").click()
    root = _canvas_settled(page, exp["kind"])
    assert root.get_attribute("data-state") == "ready", f"{project.name}: no {exp['kind']} query shown"
    if exp["kind"] == "region":
        page.keyboard.press("a")        # accept the prediction
        page.wait_for_function("() => document.querySelector('#region-canvas .ra-root').dataset.saved === '1'",
                               timeout=30_000)
    else:
        page.keyboard.press("1")        # the first class for the current point
        page.wait_for_function("() => +document.querySelector('#pixel-canvas .pa-root').dataset.acked >= 1",
                               timeout=30_000)
    page.wait_for_function("() => /your labels: 1\\b/.test(document.querySelector('#annot-header').innerText)",
                           timeout=30_000)
    honeypots = _answer_honeypots(project.workdir) if project.name == "ra" else 0
    for tab in TABS:
        page.get_by_role("tab", name=tab).click()
        if tab in ("Regions", "Pixels"):
            _canvas_settled(page, "region" if tab == "Regions" else "pixel")
        elif tab == "Review":      # the label just made, with its preview
            _open_newest_review(page)
            assert page.locator("#review-preview img").count() == 1
            assert f"{exp['kind']} query" in page.locator("#review-info").inner_text()
            if honeypots:    # the honeypot scores: the careful annotator first, at 100 % pixel accuracy
                table = page.locator("#honeypot-scores")
                table.scroll_into_view_if_needed()
                page.wait_for_function("() => /sloppy/.test(document.querySelector('#honeypot-scores')?.innerText "
                                       "|| '')", timeout=30_000)
                rows = [r for r in table.locator("[role=row]").all_inner_texts() if "careful" in r or "sloppy" in r]
                assert len(rows) == 2 and "careful" in rows[0] and "sloppy" in rows[1], rows
                assert "100" in rows[0], rows[0]
                agree = page.locator("#agreement")       # and their agreement on the query both answered
                agree.scroll_into_view_if_needed()
                page.wait_for_function("() => /careful & sloppy/.test(document.querySelector('#agreement')"
                                       "?.innerText || '')", timeout=30_000)
        else:
            page.locator("#round-refresh").click()
            con = sqlite3.connect(project.workdir / "project.db", timeout=5)
            done = con.execute("SELECT count(*) FROM queries q JOIN rounds r ON r.id = q.round WHERE q.status = 'done' "
                               "AND r.idx = ?", [exp["round"]]).fetchone()[0]
            con.close()
            labeled = f"Labeled {done}/"   # the text from page load said "Labeled 0/..."
            try:
                page.wait_for_function(f"() => (document.querySelector('#round-progress')?.innerText || '')"
                                       f".includes('{labeled}')", timeout=30_000)
            finally:
                text = page.locator("#round-progress").inner_text()
            assert f"Round {exp['round']}" in text and exp["budget"] in text and labeled in text, text
            if project.name == "round2":   # round 1 was answered (partly in the browser) and evaluated:
                plot = page.locator("#plot-miou-time")   # mIoU against active annotation minutes
                plot.scroll_into_view_if_needed()
                page.wait_for_function("() => !!document.querySelector('#plot-miou-time svg, #plot-miou-time canvas')",
                                       timeout=30_000)
                svg = plot.locator("svg").first.inner_html()
                assert "annotation minutes" in svg and "mIoU" in svg, svg[:500]
                line = plot.locator("path[aria-roledescription='line mark'], g.mark-line path").first
                assert line.count() == 1 and "L" in (line.get_attribute("d") or ""), svg[:2000]   # >= 2 points
    if project.name == "folder":   # the folder's classes.json is the label space, in the browser too
        names = page.locator("#region-canvas .ra-palette .ra-name").all_inner_texts()
        assert names == [*FOLDER_CLASSES, "void"], names
    assert_no_errors(page, project, console_errors)


@pytest.mark.parametrize("project", ["ra"], indirect=True)
def test_launch_opens_annotator_and_finish_round_retrains(project, page):
    """A region accepted in the browser, "Finish round" lets the loop retrain; the run ends with the
    label in SQLite and in the per-round table."""
    w, p = project.workdir, project.proc
    console_errors = _open(page, project.url)
    root = _canvas_settled(page, "region")
    qid = int(root.get_attribute("data-qid"))
    page.keyboard.press("a")    # accept the model's prediction as the label of this region
    deadline = time.time() + 30
    while time.time() < deadline:
        con = sqlite3.connect(w / "project.db", timeout=5)
        status = con.execute("SELECT status FROM queries WHERE id = ?", [qid]).fetchone()[0]
        con.close()
        if status == "done":
            break
        time.sleep(0.2)
    assert status == "done"
    assert_no_errors(page, project, console_errors)
    assert "retraining" in _press_finish_round(page)
    assert p.wait(timeout=300) == 0, project.text()[-3000:]
    out = project.text()
    assert "| round | labeled pixels (% of target) | mIoU | seconds |" in out
    con = sqlite3.connect(w / "project.db")
    assert con.execute("SELECT annotator FROM labels l JOIN queries q ON q.id = l.query WHERE q.id = ?",
                       [qid]).fetchone()[0] == "local"
    assert con.execute("SELECT count(*) FROM steps WHERE name = 'round1.train'").fetchone()[0] == 1


def test_the_page_shows_the_run_from_its_first_second_and_switches_to_the_queries(tmp_path, cache, page):
    """`launch.py` without --oracle prints the annotator's URL before the data and the warm-up; the
    page shows the step and its iteration, which advances, during the warm-up; once selection is
    done the same page (no reload) shows the first region; after "Finish round" it shows the run's
    progress again, and the run ends."""
    proj = _start(tmp_path, "live", [*SYNTH, "--budget", "2.2%", "--rounds", "1", "--region-radius", "2"], cache,
                  override=("--iterations", "80"))     # a warm-up long enough to watch
    try:
        deadline = time.time() + 120
        while "Annotator open at" not in proj.text() and time.time() < deadline and proj.proc.poll() is None:
            time.sleep(0.2)
        log = proj.text()
        assert "Annotator open at" in log, log[-3000:]
        first = log.index("Annotator open at")
        assert "source-only warm-up" not in log[:first] and "source synthcity" not in log[:first], log[:first]
        console_errors = _open(page, proj.url)
        page.wait_for_function("() => /warm-up/.test(document.querySelector('#run-step')?.innerText || '')",
                               timeout=120_000)
        count = "(document.querySelector('#run-step').innerText.match(/iteration (\\d+)\\/(\\d+)/) || [])"
        first_it = page.evaluate(f"() => +{count}[1]")
        assert 0 <= first_it < 80, page.locator("#run-step").inner_text()
        page.wait_for_function(f"() => +{count}[1] > {first_it}", timeout=60_000)     # the iteration advances
        # the header is filled by the page's load event, which can come after the first ticks ("Loading…")
        page.wait_for_function("() => (document.querySelector('#annot-header')?.innerText || '')"
                               ".startsWith('The run is working')", timeout=30_000)
        # selection done: the same page shows the first region by itself
        root = page.locator("#region-canvas .ra-root")
        page.wait_for_function("() => document.querySelector('#region-canvas .ra-root').dataset.state === 'ready'",
                               timeout=180_000)
        assert root.get_attribute("data-qid")
        # the canvas asks for its query by itself; the progress box goes at the next once-a-second tick
        page.locator("#run-progress").wait_for(state="hidden", timeout=15_000)
        assert "Round 1 (open)" in page.locator("#annot-header").inner_text()
        page.get_by_role("tab", name="Round").click()        # read anew when the round opened (no reload)
        page.wait_for_function("() => /Round 1/.test(document.querySelector('#round-progress')?.innerText || '')",
                               timeout=30_000)
        page.get_by_role("tab", name="Regions").click()
        page.wait_for_timeout(500)
        page.keyboard.press("a")
        page.wait_for_function("() => document.querySelector('#region-canvas .ra-root').dataset.saved === '1'",
                               timeout=30_000)
        assert "retraining" in _press_finish_round(page)
        page.wait_for_function("() => { const b = document.querySelector('#run-progress');"
                               " return b && b.offsetParent !== null; }", timeout=30_000)   # progress again
        assert proj.proc.wait(timeout=300) == 0, proj.text()[-3000:]
        assert "The run has finished" in page.locator("#run-step").inner_text()   # said before the server went
        assert_no_errors(page, proj, console_errors)
    finally:
        if proj.proc.poll() is None:
            proj.proc.kill()
            proj.proc.wait()


def _class_key(position: int) -> str:
    """The key Playwright presses for the class at ``position`` of the palette (1..9, 0, then Shift+1..0)."""
    digit = str((position + 1) % 10) if position < 10 else str((position - 9) % 10)
    return digit if position < 10 else f"Shift+Digit{digit}"


def _shown_superpixel(page, db, workdir: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """The superpixel the canvas shows now: (its queries row, its shape (bool, box size), the model's
    prediction over its box, from the round's cache)."""
    import storage

    root = page.locator("#region-canvas .ra-root")
    q = storage.get_query(db, int(root.get_attribute("data-qid")))
    assert q["shape"] is not None, q
    name = storage.get_image(db, q["image"])["name"]
    assert root.get_attribute("data-image") == name
    with np.load(workdir / "cache" / "round1" / f"{name}.npz") as z:
        pred = z["pred"][q["y0"]:q["y1"], q["x0"]:q["x1"]]
    return q, storage.decode_patch(q["shape"]).astype(bool), pred


@pytest.mark.parametrize("project", ["sp"], indirect=True)
def test_superpixels_answered_with_one_key_and_as_mixed(project, page):
    """A superpixel query opens in one-class mode (outline, outside dimmed, the model's dominant class
    pre-selected); one class key stores that class for the whole superpixel (labels.point_class, one
    edit). The next one, answered "Mixed" (M) with a brush stroke that runs out of the superpixel,
    stores a patch that is 255 outside the shape, and the image's label mask is unchanged there."""
    import storage
    from core.acquisition.superpixel import dominant_class

    console_errors = _open(page, project.url)
    assert "superpixel queries labeled" in _header(page)
    root = _canvas_settled(page, "region")
    assert root.get_attribute("data-state") == "ready" and root.get_attribute("data-mode") == "one"
    assert "superpixel of" in page.locator("#region-canvas .ra-info").inner_text()
    db = storage.open_readonly(project.workdir)
    try:
        q1, shape1, pred1 = _shown_superpixel(page, db, project.workdir)
        dominant = dominant_class(pred1[shape1])
        assert int(root.get_attribute("data-pick")) == dominant         # the model's class, pre-selected
        c1 = next(c for c in range(19) if c != dominant)                # a class key other than the guess
        page.wait_for_timeout(300)
        page.keyboard.press(_class_key(c1))
        page.wait_for_function("() => document.querySelector('#region-canvas .ra-root').dataset.saved === '1'",
                               timeout=30_000)
        _canvas_settled(page, "region")
        lab1 = storage.answer_of(db, q1["id"], "local")
        assert lab1 is not None and lab1["patch"] is None and lab1["point_class"] == c1, lab1
        row1 = storage.get_label(db, lab1["id"])
        assert row1["edits"] == 1 and row1["ms"] > 0 and row1["prefill"] == "warmup", row1

        # the next one: Mixed, brush in a class the model predicts nowhere in the box, one stroke from a
        # pixel of the superpixel to a pixel of its box outside it
        assert root.get_attribute("data-mode") == "one"
        q2, shape2, pred2 = _shown_superpixel(page, db, project.workdir)
        assert q2["id"] != q1["id"] and (~shape2).any()
        page.keyboard.press("m")
        assert root.get_attribute("data-mode") == "mixed"
        c2 = next(c for c in range(19) if c not in set(pred2.ravel().tolist()) | {c1})
        page.keyboard.press("b")
        page.keyboard.press(_class_key(c2))
        assert root.get_attribute("data-tool") == "brush" and int(root.get_attribute("data-cls")) == c2
        inside = np.argwhere(shape2)
        a = inside[len(inside) // 2]
        outside = np.argwhere(~shape2)
        b = outside[np.argmin(np.abs(outside - a).sum(1))]     # the nearest box pixel outside the superpixel
        cy0, cx0, ch, cw = map(int, root.get_attribute("data-crop").split(","))
        box = page.locator("#region-canvas .ra-zoom").bounding_box()

        def at(yx):   # page coordinates of the centre of box pixel (y, x)
            y, x = q2["y0"] + int(yx[0]) - cy0, q2["x0"] + int(yx[1]) - cx0
            return box["x"] + (x + 0.5) * box["width"] / cw, box["y"] + (y + 0.5) * box["height"] / ch

        page.mouse.move(*at(a))
        page.mouse.down()
        page.mouse.move(*at(b), steps=4)
        page.mouse.up()
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelector('#region-canvas .ra-root').dataset.saved === '2'",
                               timeout=30_000)
        lab2 = storage.answer_of(db, q2["id"], "local")
        assert lab2 is not None and lab2["point_class"] is None, lab2
        patch = lab2["patch"]
        assert (patch[~shape2] == 255).all()                          # nothing stored outside the superpixel
        assert patch[tuple(a)] == c2 and (patch[shape2] != 255).all()  # the stroke, the prediction elsewhere
        assert storage.get_label(db, lab2["id"])["edits"] >= 1
        name = storage.get_image(db, q2["image"])["name"]
        mask = storage.label_mask(db, name)[q2["y0"]:q2["y1"], q2["x0"]:q2["x1"]]
        assert (mask[shape2] == patch[shape2]).all()
        before = np.full(shape2.shape, 255, np.uint8)       # outside: only what other answers put there
        if q1["image"] == q2["image"]:
            sub = np.zeros(shape2.shape, bool)
            ys, xs = slice(max(q1["y0"], q2["y0"]), min(q1["y1"], q2["y1"])), \
                slice(max(q1["x0"], q2["x0"]), min(q1["x1"], q2["x1"]))
            if ys.start < ys.stop and xs.start < xs.stop:
                sub[ys.start - q2["y0"]:ys.stop - q2["y0"], xs.start - q2["x0"]:xs.stop - q2["x0"]] = \
                    shape1[ys.start - q1["y0"]:ys.stop - q1["y0"], xs.start - q1["x0"]:xs.stop - q1["x0"]]
            before[sub] = c1
        assert (mask[~shape2] == before[~shape2]).all()
    finally:
        db.close()
    page.get_by_role("tab", name="Review").click()     # the newest label, enlarged, says what it answered
    _open_newest_review(page)
    assert f"superpixel (mixed) query {q2['id']}" in page.locator("#review-info").inner_text()
    page.get_by_role("tab", name="Round").click()
    page.locator("#round-refresh").click()
    page.wait_for_function("() => /Labeled 2\\//.test(document.querySelector('#round-progress')?.innerText || '')",
                           timeout=30_000)
    assert "superpixel queries" in page.locator("#round-progress").inner_text()
    assert_no_errors(page, project, console_errors)
