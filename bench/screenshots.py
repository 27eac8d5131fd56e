"""Re-make the README's annotator screenshots from a real `launch.py` run (no --oracle).

    python bench/screenshots.py [--out docs] [--iterations 200] [--cache-dir DIR] [-- EXTRA LAUNCH ARGS]

1. ``launch.py --budget 2.2% --rounds 1`` on the embedded data (256x512, a small image count, a short
   warm-up); when the annotator for round 1 is open, Chromium (Playwright, Debian's
   /usr/bin/chromium, headless) shows the first region pre-filled with the model's prediction and
   the region canvas is saved as ``OUT/annotator_region.png``.
2. ``launch.py --budget 40px --rounds 1 --init <1's warmup.pt>`` (no second training); two thirds of
   the first image's points are answered with the keyboard from the target's ground truth, and the
   pixel canvas is saved as ``OUT/annotator_pixel.png``.
3. ``launch.py --budget 2.2% --unit superpixel --rounds 1 --init <1's warmup.pt>``: the first superpixel
   query as the page opens (outlined, the model's dominant class pre-selected) is saved as
   ``OUT/annotator_superpixel.png``.

All runs live in a temporary folder and are stopped afterwards (about 4.5 min on the shared 2-core
CPU with the defaults, a minute more for the third). Extra arguments after ``--`` go to every run, e.g.
``-- --init runs/full/checkpoints/warmup.pt`` to show a fully trained model's predictions.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 1000}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Run:
    """``launch.py`` in the background, its output in ``workdir/../<name>.log``."""

    def __init__(self, tmp: Path, name: str, args: list[str], cache_dir: str | None):
        self.workdir = tmp / name
        self.log = tmp / f"{name}.log"
        self.port = _free_port()
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, str(ROOT / "launch.py"), *args, "--workdir", str(self.workdir),
               "--port", str(self.port)]
        if cache_dir:
            cmd += ["--cache-dir", cache_dir]
        print("$", " ".join(cmd), flush=True)
        with open(self.log, "w") as f:
            self.proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)

    def wait_for_annotator(self, timeout: float) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline and self.proc.poll() is None:
            for line in self.log.read_text(errors="replace").splitlines():
                if "Annotator for round 1 is open at" in line:
                    return line.split(" at ", 1)[1].split()[0]
            time.sleep(0.5)
        self.stop()
        sys.exit(f"launch.py did not open the annotator (exit code {self.proc.poll()}); its log:\n"
                 + self.log.read_text(errors="replace")[-3000:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _save(locator, path: Path) -> None:
    from PIL import Image

    raw = path.with_suffix(".raw.png")
    locator.screenshot(path=str(raw))
    Image.open(raw).convert("RGB").save(path, optimize=True)   # exact colours (a palette blurs the class chips)
    raw.unlink()
    print(f"wrote {path} ({path.stat().st_size // 1024} KB)", flush=True)


def _key_for(position: int) -> str:
    """Playwright key for the class at ``position`` in the label space (annotator.canvas_common.key_label)."""
    if position < 10:
        return f"Digit{(position + 1) % 10}"
    return f"Shift+Digit{(position - 9) % 10}"


def region_shot(page, url: str, out: Path) -> None:
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#region-canvas .ra-root')?.dataset.state === 'ready'",
                           timeout=120_000)
    page.keyboard.press("Digit1")       # pick road, the class a first fill would most likely use
    page.wait_for_timeout(300)
    _save(page.locator("#region-canvas"), out / "annotator_region.png")


def pixel_shot(page, url: str, workdir: Path, cache_dir: str | None, out: Path) -> None:
    import storage
    from app.session import reopen

    page.goto(url)
    root = "#pixel-canvas .pa-root"
    page.wait_for_function(f"() => document.querySelector('{root}')?.dataset.state === 'ready'", timeout=120_000)
    qids = [int(q) for q in page.locator(root).get_attribute("data-qids").split(",")]
    # answers from the target's ground truth, as a careful annotator would give them
    session = reopen(str(workdir), cache_dir)
    positions = {c.train_id: i for i, c in enumerate(session.val.label_space.classes)}
    db = storage.open_store(workdir, create=False)
    name = storage.get_image(db, storage.get_query(db, qids[0])["image"])["name"]
    gt = session.target[session.target.names.index(name)]["label"]
    for qid in qids[: len(qids) * 2 // 3]:
        q = storage.get_query(db, qid)
        cls = int(gt[q["y"], q["x"]])
        page.keyboard.press(_key_for(positions[cls]) if cls in positions else "u")
    n = len(qids) * 2 // 3
    page.wait_for_function(f"() => +document.querySelector('{root}').dataset.acked >= {n}", timeout=60_000)
    page.wait_for_timeout(300)
    _save(page.locator("#pixel-canvas"), out / "annotator_pixel.png")


def superpixel_shot(page, url: str, out: Path) -> None:
    page.goto(url)
    page.wait_for_function("() => { const r = document.querySelector('#region-canvas .ra-root'); "
                           "return r?.dataset.state === 'ready' && r.dataset.mode === 'one'; }", timeout=120_000)
    page.wait_for_timeout(300)
    _save(page.locator("#region-canvas"), out / "annotator_superpixel.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs"), help="folder for the three PNGs (default: docs/)")
    p.add_argument("--iterations", type=int, default=200, help="warm-up iterations of the run (default: 200)")
    p.add_argument("--synth-counts", default="100,6,4", help="embedded data SOURCE,TRAIN,VAL (default: 100,6,4)")
    p.add_argument("--cache-dir", default=None, help="launch.py --cache-dir (default: its own)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds to wait for each annotator")
    p.add_argument("extra", nargs="*", help="after --: more launch.py options for every run")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = ["--synth-counts", a.synth_counts, "--rounds", "1", "--device", "cpu", *a.extra]

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="segstudio-shots-") as tmp, sync_playwright() as pw:
        tmp = Path(tmp)
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport=VIEWPORT)
        ra = Run(tmp, "ra", [*common, "--budget", "2.2%", "--iterations", str(a.iterations)], a.cache_dir)
        try:
            region_shot(page, ra.wait_for_annotator(a.timeout), out)
        finally:
            ra.stop()
        init = [] if "--init" in a.extra else ["--init", str(ra.workdir / "checkpoints" / "warmup.pt")]
        pa = Run(tmp, "pa", [*common, "--budget", "40px", *init], a.cache_dir)
        try:
            pixel_shot(page, pa.wait_for_annotator(a.timeout), pa.workdir, a.cache_dir, out)
        finally:
            pa.stop()
        sp = Run(tmp, "sp", [*common, "--budget", "2.2%", "--unit", "superpixel", *init], a.cache_dir)
        try:
            superpixel_shot(page, sp.wait_for_annotator(a.timeout), out)
        finally:
            sp.stop()
        browser.close()


if __name__ == "__main__":
    main()
