"""Region labeling (RA) canvas: a ``gr.HTML`` widget with browser-side state and
``server_functions`` (each takes ONE dict argument, as Gradio 6 passes only the first).

Browser side: a context view (whole image, query box in red, labeled regions shaded) beside a
zoomed 2D canvas of the query box plus a tinted margin, pre-filled with the model's
prediction. Tools: superpixel click-fill (main tool, 3 SLIC granularities), square brush with
size keys, eraser back to the prediction, undo/redo, overlay opacity, superpixel borders, the
uncertainty x impurity heat map and CRA untrusted pixels. Only pixels inside the query box are
editable and only they are sent and stored.

Server side: ``region_next`` / ``region_save`` / ``region_skip`` / ``region_open``. Every save
carries its query id; storage's ``save_label`` is idempotent per (query, annotator).
"""
from __future__ import annotations

import threading
import time

import cv2
import gradio as gr
import numpy as np

import storage
from core.data.folder import resize_label
from core.data.labels import IGNORE
from annotator.canvas_common import JS_PRELUDE, classes_config, with_config
from annotator.context import LEASE_MINUTES, AnnotatorContext, b64, data_url, unb64, username
from annotator.provider import superpixels_for
from annotator.superpixels import DEFAULT_LEVEL, LEVELS

SKIP_REASONS = ("ambiguous", "too dark / blurry", "class not in list", "bad query box", "other")
CONTEXT_MAX = (360, 480)  # (h, w) of the context view


# --------------------------------------------------------------------------------------------
# server side
# --------------------------------------------------------------------------------------------

def _margin(bh: int, bw: int) -> int:
    return max(8, int(round(0.25 * max(bh, bw))))


def crop_box(box: tuple[int, int, int, int], H: int, W: int) -> tuple[int, int, int, int]:
    """The crop the canvas shows for a query box: the box (clipped to the image) plus a margin."""
    y0, x0, y1, x1 = box
    by0, bx0, by1, bx1 = min(y0, H), min(x0, W), min(y1, H), min(x1, W)
    m = _margin(y1 - y0, x1 - x0)
    return max(0, by0 - m), max(0, bx0 - m), min(H, by1 + m), min(W, bx1 + m)


def _context_base(view) -> tuple[np.ndarray, float]:
    """The whole image scaled to fit the context view (square pixels when enlarged)."""
    H, W = view.shape
    s = min(CONTEXT_MAX[0] / H, CONTEXT_MAX[1] / W, 1.0)
    if s < 1.0:
        small = cv2.resize(view.image, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA)
        return small, s
    k = max(1, int(min(CONTEXT_MAX[0] / H, CONTEXT_MAX[1] / W)))
    return np.repeat(np.repeat(view.image, k, 0), k, 1), float(k)


def _context_image(ctx: AnnotatorContext, view, box: tuple[int, int, int, int]) -> np.ndarray:
    """Whole image, labeled pixels shaded in their class colour, the query box in red."""
    H, W = view.shape
    small, s = ctx.memo(view.name, "context", lambda: _context_base(view))
    img = small.copy()
    try:
        mask = storage.label_mask(ctx.db, view.name, H, W)
    except storage.StoreError:
        mask = None
    if mask is not None and (mask != IGNORE).any():
        mask = resize_label(mask, small.shape[:2])
        lab = mask != IGNORE
        col = ctx.space.palette()[mask[lab]].astype(np.uint16)
        img[lab] = ((img[lab].astype(np.uint16) * 9 + col * 11) // 20).astype(np.uint8)
    y0, x0, y1, x1 = box
    p0 = (int(x0 * s), int(y0 * s))
    cv2.rectangle(img, p0, (max(p0[0], int(x1 * s) - 1), max(p0[1], int(y1 * s) - 1)), (255, 40, 40), 2)
    return img


def _heat_top(view) -> float:
    hm = view.heatmap
    finite = hm[np.isfinite(hm)]
    return float(finite.max()) if finite.size else 0.0


def build_region_task(ctx: AnnotatorContext, q: dict, user: str) -> dict:
    """The JSON task the browser renders for a region query ``q`` (a queries row)."""
    db = ctx.db
    img_row = storage.get_image(db, q["image"])
    view = ctx.view(img_row["name"])
    H, W = view.shape
    y0, x0, y1, x1 = int(q["y0"]), int(q["x0"]), int(q["y1"]), int(q["x1"])
    # the editable part of the box (a box reaching past the image is clipped; the rest stays 255)
    by0, bx0, by1, bx1 = min(y0, H), min(x0, W), min(y1, H), min(x1, W)
    cy0, cx0, cy1, cx1 = crop_box((y0, x0, y1, x1), H, W)
    crop = view.image[cy0:cy1, cx0:cx1]
    pred = np.ascontiguousarray(view.prediction[cy0:cy1, cx0:cx1])
    init = pred.copy()
    existing = storage.answer_of(db, q["id"], user)
    if existing is not None:  # re-opened: start from this annotator's saved answer
        patch = existing["patch"] if existing["patch"] is not None else \
            np.full((y1 - y0, x1 - x0), existing["point_class"], np.uint8)
        init[by0 - cy0:by1 - cy0, bx0 - cx0:bx1 - cx0] = patch[: by1 - by0, : bx1 - bx0]
    sp = superpixels_for(ctx.provider, view.name, (cy0, cx0, cy1, cx1))
    heat = None
    if view.heatmap is not None:
        top = ctx.memo(view.name, "heat_top", lambda: _heat_top(view))
        hm = np.nan_to_num(view.heatmap[cy0:cy1, cx0:cx1], nan=0.0, posinf=top, neginf=0.0)
        hc = hm / top if top > 0 else np.zeros((cy1 - cy0, cx1 - cx0), np.float32)
        heat = b64(np.clip(hc * 255.0 + 0.5, 0, 255).astype(np.uint8))
    unt = None if view.untrusted is None else b64(view.untrusted[cy0:cy1, cx0:cx1].astype(np.uint8))
    score = q.get("score")
    rnd = q.get("round")
    return {
        "qid": int(q["id"]),
        "image": view.name,
        "box": [y0, x0, y1, x1],
        "crop": [cy0, cx0, cy1 - cy0, cx1 - cx0],
        "inner": [by0 - cy0, bx0 - cx0, by1 - by0, bx1 - bx0],
        "img": data_url(crop, "png"),
        "pred": b64(pred),
        "init": b64(init),
        "sp": [b64(s.astype("<u2")) for s in sp],
        "sp_names": [n for n, _ in LEVELS][: len(sp)],
        "heat": heat,
        "untrusted": unt,
        "context": data_url(_context_image(ctx, view, (y0, x0, y1, x1)), "jpg", 88),
        "existing": existing is not None,
        "info": (f"{view.name} · region {y1 - y0}×{x1 - x0} at (y={y0}, x={x0})"
                 + (f" · score {score:.3g}" if isinstance(score, (int, float)) else "")
                 + (f" · round id {rnd}" if rnd is not None else "") + f" · query #{q['id']}"),
    }


class SuperpixelPrefetcher:
    """Computes the superpixels of the next few available region queries in a background
    thread, so building the next task after a save finds them in the provider's disk cache.
    Only used with providers that cache (``cache_dir`` set); a failure only costs the cache."""

    def __init__(self, ctx: AnnotatorContext, ahead: int = 3):
        self.ctx, self.ahead = ctx, ahead
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._done: set[tuple] = set()
        self._lock = threading.Lock()

    def request(self) -> None:
        if getattr(self.ctx.provider, "cache_dir", None) is None:
            return
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="superpixel-prefetch", daemon=True)
                self._thread.start()
        self._idle.clear()
        self._wake.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self._prefetch()
            except Exception:  # noqa: BLE001 - prefetching is best effort
                pass
            if not self._wake.is_set():
                self._idle.set()

    def _prefetch(self) -> None:
        ctx = self.ctx
        rows = storage.available_queries(ctx.db, ctx.round_id(), "region", self.ahead)
        for y0, x0, y1, x1, name in ((r["y0"], r["x0"], r["y1"], r["x1"], r["name"]) for r in rows):
            if self._wake.is_set():
                return  # newer request: start over from the new top of the queue
            H, W = ctx.view(name).shape
            key = (name, crop_box((y0, x0, y1, x1), H, W))
            if key in self._done:
                continue
            superpixels_for(ctx.provider, name, key[1])
            self._done.add(key)
            if len(self._done) > 4096:
                self._done.clear()


def _next_region(ctx: AnnotatorContext, user: str, prefetch: SuperpixelPrefetcher | None = None) -> dict | None:
    q = storage.lease_next(ctx.db, user, round=ctx.round_id(), kind="region", minutes=LEASE_MINUTES)
    task = None if q is None else build_region_task(ctx, q, user)
    if prefetch is not None and task is not None:
        prefetch.request()
    return task


def decode_region_labels(ctx: AnnotatorContext, q: dict, data: dict) -> np.ndarray:
    """The (y1-y0, x1-x0) uint8 patch from a save request; raises ValueError when malformed.
    The browser sends the editable (clipped) box; the rest of the box stays 255."""
    if q["kind"] != "region":
        raise ValueError(f"query {q['id']} is a {q['kind']} query, not a region")
    img = storage.get_image(ctx.db, q["image"])
    H, W = ctx.view(img["name"]).shape
    y0, x0, y1, x1 = q["y0"], q["x0"], q["y1"], q["x1"]
    eh, ew = min(y1, H) - min(y0, H), min(x1, W) - min(x0, W)
    shape = tuple(int(v) for v in data.get("shape", ()))
    if shape != (eh, ew):
        raise ValueError(f"labels shape {shape} does not match query {q['id']}'s box {(eh, ew)}")
    raw = unb64(str(data.get("labels", "")))
    if len(raw) != eh * ew:
        raise ValueError(f"labels hold {len(raw)} values, expected {eh * ew}")
    arr = np.frombuffer(raw, np.uint8).reshape(eh, ew)
    bad = set(np.unique(arr).tolist()) - ctx.valid_classes
    if bad:
        raise ValueError(f"labels contain unknown class ids {sorted(bad)}")
    patch = np.full((y1 - y0, x1 - x0), IGNORE, np.uint8)
    patch[:eh, :ew] = arr
    return patch


def make_region_functions(ctx: AnnotatorContext, prefetch: bool = True) -> list:
    """The server functions of the region canvas (closures over ``ctx``). ``prefetch``: compute
    the superpixels of upcoming regions in a background thread."""
    pf = SuperpixelPrefetcher(ctx) if prefetch else None
    ctx.prefetcher = pf

    def next_task(user: str) -> dict | None:
        return _next_region(ctx, user, pf)

    def region_next(data: dict, request: gr.Request) -> dict:
        user = username(request)
        try:
            return {"ok": True, "task": next_task(user), "user": user}
        except (storage.StoreError, ValueError) as e:
            return {"ok": False, "error": str(e)}

    def region_save(data: dict, request: gr.Request) -> dict:
        user = username(request)
        try:
            qid = int(data["query_id"])
            q = storage.get_query(ctx.db, qid)
            patch = decode_region_labels(ctx, q, data)
            storage.save_label(ctx.db, qid, user, patch=patch, ms=int(data.get("ms") or 0))
        except storage.LeaseError as e:
            return {"ok": False, "error": f"{e}; it was handed to someone else", "task": next_task(user)}
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": f"not saved: {e}"}
        return {"ok": True, "saved": qid, "task": next_task(user)}

    def region_skip(data: dict, request: gr.Request) -> dict:
        user = username(request)
        try:
            qid = int(data["query_id"])
            reason = str(data.get("reason") or "").strip() or "no reason given"
            if not storage.holds(ctx.db, qid, user, "region"):
                return {"ok": False, "error": f"region #{qid} is not assigned to you (lease lost?)",
                        "task": next_task(user)}
            if data.get("action") == "flag":
                storage.flag(ctx.db, qid, user, reason)
            else:
                storage.skip(ctx.db, qid, user, reason)
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "task": next_task(user)}

    def region_open(data: dict, request: gr.Request) -> dict:
        """Re-open a region this annotator labeled (the canvas's Previous)."""
        user = username(request)
        try:
            qid = int(data["query_id"])
            q = storage.get_query(ctx.db, qid)
            mine = storage.answer_of(ctx.db, qid, user, include_rejected=True)
            held = q["status"] == "leased" and q["lease_owner"] == user and (q["lease_expiry"] or 0) >= time.time()
            if q["kind"] != "region" or not (mine or held):
                return {"ok": False, "error": f"query {qid} is not one of your regions"}
            return {"ok": True, "task": build_region_task(ctx, q, user)}
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e)}

    return [region_next, region_save, region_skip, region_open]


# --------------------------------------------------------------------------------------------
# browser side
# --------------------------------------------------------------------------------------------

REGION_HTML = """
<div class="annot-canvas ra-root" data-state="idle" data-saved="0" data-drawn="0" tabindex="-1">
  <div class="ra-top"><span class="ra-info">Open this tab to start labeling regions.</span>
    <span class="ra-msg" role="status"></span></div>
  <div class="ra-main">
    <div class="ra-left">
      <div class="ra-cap">Context</div>
      <img class="ra-ctx" alt="whole image with the query box" />
      <div class="ra-help">
        <b>F</b> superpixel fill · <b>G</b>/<b>⇧G</b> coarser/finer · <b>V</b> borders<br>
        <b>B</b> brush · <b>[</b> <b>]</b> size · <b>E</b> eraser (back to prediction) · <b>R</b> reset<br>
        <b>1-9 0</b> class (<b>⇧</b> for 11-20) · <b>X</b> void · <b>O</b> opacity · <b>U</b> heat · <b>C</b> untrusted<br>
        <b>Ctrl+Z</b> undo · <b>Ctrl+⇧Z</b> redo · <b>Enter</b> save &amp; next · <b>A</b> accept prediction<br>
        <b>K</b> skip · <b>P</b> previous · Shift+click in fill mode restores a superpixel
      </div>
    </div>
    <div class="ra-center"><canvas class="ra-zoom" width="8" height="8"></canvas></div>
    <div class="ra-right">
      <div class="ra-group">
        <button class="ra-tool" data-tool="fill" title="F">Fill</button>
        <button class="ra-tool" data-tool="brush" title="B">Brush</button>
        <button class="ra-tool" data-tool="erase" title="E">Eraser</button>
      </div>
      <label>Superpixels <select class="ra-level"></select></label>
      <label>Brush <span class="ra-bsize">3</span> px</label>
      <label>Opacity <input class="ra-opacity" type="range" min="0" max="100" value="50"></label>
      <label><input class="ra-borders" type="checkbox"> borders (V)</label>
      <label><input class="ra-heat" type="checkbox"> heat map (U)</label>
      <label><input class="ra-unt" type="checkbox"> untrusted (C)</label>
      <div class="ra-group">
        <button class="ra-undo" title="Ctrl+Z">Undo</button><button class="ra-redo" title="Ctrl+Shift+Z">Redo</button>
        <button class="ra-reset" title="R">Reset</button>
      </div>
      <div class="ra-group">
        <button class="ra-save ra-primary" title="Enter">Save &amp; next</button>
        <button class="ra-accept" title="A">Accept as-is</button>
        <button class="ra-prev" title="P">Previous</button>
      </div>
      <label>Reason <select class="ra-reason"></select></label>
      <div class="ra-group">
        <button class="ra-skip" title="K">Skip</button><button class="ra-flag">Flag</button>
        <button class="ra-reload">Check for work</button>
      </div>
      <div class="ra-cur"></div>
    </div>
  </div>
  <div class="ra-palette"></div>
</div>
"""

REGION_CSS = """
.ra-root { font-size: 13px; outline: none; }
.ra-top { display: flex; gap: 12px; align-items: baseline; margin-bottom: 6px; flex-wrap: wrap; }
.ra-info { font-weight: 600; }
.ra-msg { color: #1a7f37; }
.ra-msg.err { color: #c62828; font-weight: 600; }
.ra-main { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.ra-left { flex: 0 1 300px; min-width: 200px; }
.ra-ctx { width: 100%; image-rendering: pixelated; border: 1px solid #8884; }
.ra-cap { font-weight: 600; margin-bottom: 2px; }
.ra-help { margin-top: 8px; line-height: 1.6; opacity: 0.85; }
.ra-center { flex: 0 0 auto; }
.ra-zoom { image-rendering: pixelated; cursor: crosshair; border: 1px solid #8886; display: block; max-width: 100%; }
.ra-right { flex: 0 1 220px; display: flex; flex-direction: column; gap: 6px; }
.ra-group { display: flex; gap: 4px; flex-wrap: wrap; }
.ra-root button { padding: 3px 8px; border: 1px solid #8888; border-radius: 4px; background: #8881; cursor: pointer; }
.ra-root button.on { background: #2563eb; color: white; }
.ra-root button.ra-primary { background: #16a34a; color: white; }
.ra-palette { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 8px; }
.ra-palette button { display: flex; gap: 4px; align-items: center; }
.ra-palette button.on { outline: 3px solid #2563eb; background: #2563eb22; color: inherit; }
.ra-chip { width: 14px; height: 14px; border: 1px solid #0008; display: inline-block; }
.ra-key { font-family: monospace; opacity: 0.7; }
"""

REGION_JS = JS_PRELUDE + r"""
(function () {
  const CFG = __CONFIG__;
  const root = element.querySelector('.ra-root');
  if (!root) return;
  const $ = (s) => root.querySelector(s);
  const cv = $('.ra-zoom'), g = cv.getContext('2d');
  const off = document.createElement('canvas'), og = off.getContext('2d');
  const PAL = {}; CFG.classes.forEach((c) => { PAL[c.id] = c.color; });
  const NAME = {}; CFG.classes.forEach((c) => { NAME[c.id] = c.name; }); NAME[255] = 'void';
  const S = { task: null, W: 0, H: 0, inner: [0, 0, 0, 0], img: null, labels: null, pred: null, sp: [], spb: [],
    heatArr: null, untArr: null, lvl: CFG.sp_default, tool: 'fill', cls: CFG.classes[0].id, brush: 3,
    opacity: 0.5, lastOpacity: 0.5, heat: false, unt: false, borders: false, undo: [], redo: [],
    busy: false, t0: 0, zoom: 8, saved: 0, drawn: 0, prev: [], down: false, last: null, hover: null,
    armAccept: 0, started: false };
  let savedTimer = null;
  const notifySaved = () => { clearTimeout(savedTimer); savedTimer = setTimeout(() => trigger('saved'), 300); };
  const attrs = () => {
    const d = root.dataset;
    d.saved = S.saved; d.drawn = S.drawn; d.tool = S.tool; d.cls = S.cls; d.brush = S.brush; d.lvl = S.lvl;
    d.zoom = S.zoom; d.qid = S.task ? S.task.qid : ''; d.inner = S.inner.join(',');
    d.crop = S.task ? S.task.crop.join(',') : ''; d.image = S.task ? S.task.image : '';
  };
  const setState = (s) => { root.dataset.state = s; attrs(); };
  const msg = (text, err) => { const m = $('.ra-msg'); m.textContent = text || ''; m.classList.toggle('err', !!err); };

  // ---------- palette, selects ----------
  const pal = $('.ra-palette');
  const addChip = (id, name, color, key) => {
    const b = document.createElement('button'); b.dataset.cls = id; b.title = name;
    b.innerHTML = '<span class="ra-chip"></span><span class="ra-key"></span><span class="ra-name"></span>';
    b.querySelector('.ra-chip').style.background = color ? 'rgb(' + color.join(',') + ')' : 'repeating-linear-gradient(45deg,#fff,#fff 3px,#999 3px,#999 6px)';
    b.querySelector('.ra-key').textContent = key ? '[' + key + ']' : '';
    b.querySelector('.ra-name').textContent = name;
    b.addEventListener('click', () => { setCls(id); b.blur(); });
    pal.appendChild(b);
  };
  CFG.classes.forEach((c) => addChip(c.id, c.name, c.color, c.key));
  addChip(255, 'void', null, 'X');
  const lvlSel = $('.ra-level');
  CFG.sp_names.forEach((n, i) => { const o = document.createElement('option'); o.value = i; o.textContent = n; lvlSel.appendChild(o); });
  lvlSel.value = S.lvl;
  lvlSel.addEventListener('change', () => { S.lvl = +lvlSel.value; syncUi(); render(); });
  const rs = $('.ra-reason');
  CFG.reasons.forEach((r) => { const o = document.createElement('option'); o.value = r; o.textContent = r; rs.appendChild(o); });

  function syncUi() {
    root.querySelectorAll('.ra-tool').forEach((b) => b.classList.toggle('on', b.dataset.tool === S.tool));
    pal.querySelectorAll('button').forEach((b) => b.classList.toggle('on', +b.dataset.cls === S.cls));
    $('.ra-bsize').textContent = S.brush;
    $('.ra-opacity').value = Math.round(S.opacity * 100);
    $('.ra-borders').checked = S.borders; $('.ra-heat').checked = S.heat; $('.ra-unt').checked = S.unt;
    $('.ra-heat').disabled = !S.heatArr; $('.ra-unt').disabled = !S.untArr;
    if (S.sp.length) lvlSel.value = S.lvl;
    $('.ra-cur').textContent = 'tool: ' + S.tool + ' · class: ' + (NAME[S.cls] || S.cls) +
      (S.tool === 'fill' ? ' · superpixels: ' + (CFG.sp_names[S.lvl] || S.lvl) : ' · brush ' + S.brush + ' px');
    attrs();
  }
  function setCls(id) { S.cls = id; if (S.tool === 'erase') S.tool = 'fill'; syncUi(); }
  function setTool(t) { S.tool = t; syncUi(); render(); }

  // ---------- drawing ----------
  function render() {
    if (!S.task || !S.img) { g.clearRect(0, 0, cv.width, cv.height); return; }
    const W = S.W, H = S.H, z = S.zoom, n = W * H;
    const id = og.createImageData(W, H), d = id.data, a = S.opacity;
    const heat = S.heat ? S.heatArr : null, unt = S.unt ? S.untArr : null;
    const bd = S.borders ? S.spb[S.lvl] : null;
    for (let i = 0; i < n; i++) {
      let r = 0, gg = 0, b = 0, al = 0; const c = S.labels[i];
      if (c !== 255 && a > 0) { const col = PAL[c] || [0, 0, 0]; r = col[0]; gg = col[1]; b = col[2]; al = a; }
      if (heat) { const h = heat[i] / 255 * 0.85; if (h > 0) {
        const hr = 255, hg = Math.round(230 * (1 - heat[i] / 255)), hb = 0; const na = h + al * (1 - h);
        r = (hr * h + r * al * (1 - h)) / na; gg = (hg * h + gg * al * (1 - h)) / na; b = (hb * h + b * al * (1 - h)) / na; al = na; } }
      if (unt && unt[i] && ((i % W) + ((i / W) | 0)) % 2 === 0) { r = 255; gg = 0; b = 255; al = 0.85; }
      if (bd && bd[i]) { r = 255; gg = 255; b = 255; al = 0.8; }
      const k = i * 4; d[k] = r; d[k + 1] = gg; d[k + 2] = b; d[k + 3] = Math.round(al * 255);
    }
    og.putImageData(id, 0, 0);
    g.imageSmoothingEnabled = false;
    g.clearRect(0, 0, cv.width, cv.height);
    g.drawImage(S.img, 0, 0, W * z, H * z);
    g.drawImage(off, 0, 0, W * z, H * z);
    const [by, bx, bh, bw] = S.inner;
    g.fillStyle = 'rgba(30,30,30,0.55)';
    g.fillRect(0, 0, W * z, by * z); g.fillRect(0, (by + bh) * z, W * z, (H - by - bh) * z);
    g.fillRect(0, by * z, bx * z, bh * z); g.fillRect((bx + bw) * z, by * z, (W - bx - bw) * z, bh * z);
    g.strokeStyle = '#ff2d2d'; g.lineWidth = 2; g.strokeRect(bx * z - 1, by * z - 1, bw * z + 2, bh * z + 2);
    if (S.hover && S.tool !== 'fill') {
      const [hx, hy] = S.hover, lo = Math.floor((S.brush - 1) / 2);
      g.strokeStyle = S.tool === 'erase' ? '#ffffff' : '#ffeb3b'; g.lineWidth = 1;
      g.strokeRect((hx - lo) * z + 0.5, (hy - lo) * z + 0.5, S.brush * z - 1, S.brush * z - 1);
    }
  }
  const inBox = (x, y) => { const [by, bx, bh, bw] = S.inner; return x >= bx && x < bx + bw && y >= by && y < by + bh; };
  function paintAt(px, py) {
    const lo = Math.floor((S.brush - 1) / 2), W = S.W;
    for (let y = py - lo; y < py - lo + S.brush; y++) for (let x = px - lo; x < px - lo + S.brush; x++) {
      if (!inBox(x, y)) continue; const i = y * W + x;
      S.labels[i] = S.tool === 'erase' ? S.pred[i] : S.cls;
    }
  }
  function strokeTo(x, y) {
    const [lx, ly] = S.last || [x, y]; const steps = Math.max(Math.abs(x - lx), Math.abs(y - ly), 1);
    for (let t = 0; t <= steps; t++) paintAt(Math.round(lx + (x - lx) * t / steps), Math.round(ly + (y - ly) * t / steps));
    S.last = [x, y];
  }
  function fillAt(x, y, restore) {
    const sp = S.sp[S.lvl]; if (!sp) return; const W = S.W, want = sp[y * W + x];
    const [by, bx, bh, bw] = S.inner;
    for (let yy = by; yy < by + bh; yy++) for (let xx = bx; xx < bx + bw; xx++) {
      const i = yy * W + xx; if (sp[i] === want) S.labels[i] = restore ? S.pred[i] : S.cls;
    }
  }
  function pushUndo() { S.undo.push(S.labels.slice()); if (S.undo.length > 200) S.undo.shift(); S.redo = []; S.armAccept = 0; }
  function undo() { if (!S.undo.length) return; S.redo.push(S.labels); S.labels = S.undo.pop(); S.drawn++; render(); attrs(); }
  function redo() { if (!S.redo.length) return; S.undo.push(S.labels); S.labels = S.redo.pop(); S.drawn++; render(); attrs(); }
  function resetPred() { if (!S.task) return; pushUndo(); S.labels = S.pred.slice(); S.drawn++; render(); attrs(); }
  const pt = (e) => { const r = cv.getBoundingClientRect();
    return [Math.floor((e.clientX - r.left) * S.W / r.width), Math.floor((e.clientY - r.top) * S.H / r.height)]; };
  cv.addEventListener('contextmenu', (e) => e.preventDefault());
  cv.addEventListener('mousedown', (e) => {
    if (!S.task || S.busy || e.button !== 0) return;
    e.preventDefault(); const [x, y] = pt(e);
    if (!inBox(x, y)) { msg('Only the region inside the red box is labeled.', false); return; }
    pushUndo();
    if (S.tool === 'fill') fillAt(x, y, e.shiftKey);
    else { S.down = true; S.last = null; strokeTo(x, y); }
    S.drawn++; render(); attrs();
  });
  cv.addEventListener('mousemove', (e) => {
    if (!S.task) return; const [x, y] = pt(e); S.hover = [x, y];
    if (S.down) { strokeTo(x, y); S.drawn++; attrs(); }
    render();
  });
  cv.addEventListener('mouseleave', () => { S.hover = null; render(); });
  window.addEventListener('mouseup', () => { S.down = false; S.last = null; });

  // ---------- tasks ----------
  function show(task, note) {
    S.task = task; S.busy = false; S.undo = []; S.redo = []; S.armAccept = 0; S.img = null;
    if (!task) {
      S.inner = [0, 0, 0, 0]; $('.ra-info').textContent = 'No region queries waiting in this round.';
      $('.ra-ctx').removeAttribute('src'); cv.width = 8; cv.height = 8; render(); msg(note || '');
      setState('empty'); return;
    }
    const [cy, cx, ch, cw] = task.crop; S.W = cw; S.H = ch; S.inner = task.inner.slice();
    S.pred = __b64ToBytes(task.pred); S.labels = __b64ToBytes(task.init);
    S.sp = task.sp.map((s) => { const b = __b64ToBytes(s); return new Uint16Array(b.buffer, b.byteOffset, b.length / 2); });
    S.spb = S.sp.map((sp) => { const bd = new Uint8Array(cw * ch);
      for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) { const i = y * cw + x;
        if ((x + 1 < cw && sp[i] !== sp[i + 1]) || (y + 1 < ch && sp[i] !== sp[i + cw])) bd[i] = 1; }
      return bd; });
    if (S.lvl >= S.sp.length) S.lvl = S.sp.length - 1;
    S.heatArr = task.heat ? __b64ToBytes(task.heat) : null; S.untArr = task.untrusted ? __b64ToBytes(task.untrusted) : null;
    if (!S.heatArr) S.heat = false; if (!S.untArr) S.unt = false;
    S.zoom = Math.max(2, Math.min(16, Math.floor(Math.min(CFG.view / cw, CFG.view / ch))));
    cv.width = cw * S.zoom; cv.height = ch * S.zoom; off.width = cw; off.height = ch;
    off.getContext('2d');
    $('.ra-info').textContent = task.info + (task.existing ? ' · (your saved answer)' : '');
    $('.ra-ctx').src = task.context;
    msg(note || '');
    const im = new Image();
    im.onload = () => { if (S.task !== task) return; S.img = im; S.t0 = performance.now(); render(); syncUi(); setState('ready'); };
    im.src = task.img;
    setState('loading');
  }
  async function call(fn, arg, busyNote) {
    S.busy = true; setState('saving'); if (busyNote) msg(busyNote);
    try { return await server[fn](arg); }
    catch (err) { return { ok: false, error: 'server not reachable (' + err + '); try again', keep: true }; }
  }
  function after(res, okNote) {
    if (res && res.ok) { show(res.task, okNote); notifySaved(); return; }
    const err = (res && res.error) || 'unknown error';
    if (res && res.task !== undefined) { show(res.task, err); msg(err, true); return; }
    S.busy = false; setState(S.task ? 'ready' : 'empty'); msg(err, true);
  }
  async function load() {
    if (S.busy) return; setState('loading'); S.busy = true; $('.ra-info').textContent = 'Loading…';
    const res = await call('region_next', {});
    after(res, '');
  }
  function boxLabels(lab) {
    const [by, bx, bh, bw] = S.inner, W = S.W, out = new Uint8Array(bh * bw);
    for (let y = 0; y < bh; y++) out.set(lab.subarray((by + y) * W + bx, (by + y) * W + bx + bw), y * bw);
    return out;
  }
  async function save(accept) {
    if (!S.task || S.busy || !S.img) return;
    if (accept && S.undo.length && performance.now() - S.armAccept > 2000) {
      S.armAccept = performance.now(); msg('You edited this region: press A again to discard the edits and accept the prediction.', true); return;
    }
    const lab = accept ? S.pred : S.labels, qid = S.task.qid, [, , bh, bw] = S.inner;
    const res = await call('region_save', { query_id: qid, labels: __bytesToB64(boxLabels(lab)), shape: [bh, bw],
      ms: Math.round(performance.now() - S.t0), mode: accept ? 'accept' : 'edit' }, 'saving…');
    if (res && res.ok) { S.saved++; S.prev.push(qid); }
    after(res, res && res.ok ? 'Saved region #' + qid + (accept ? ' (prediction accepted)' : '') : '');
  }
  async function setAside(action) {
    if (!S.task || S.busy) return; const qid = S.task.qid;
    const res = await call('region_skip', { query_id: qid, action: action, reason: rs.value });
    after(res, (action === 'flag' ? 'Flagged' : 'Skipped') + ' region #' + qid + ' (' + rs.value + ')');
  }
  async function previous() {
    if (S.busy || !S.prev.length) { if (!S.prev.length) msg('Nothing saved yet in this session.'); return; }
    const qid = S.prev.pop(); const res = await call('region_open', { query_id: qid });
    after(res, 'Re-opened region #' + qid + ': edit and save again');
  }

  // ---------- buttons ----------
  const on = (sel, fn) => root.querySelectorAll(sel).forEach((b) => b.addEventListener('click', (e) => { fn(e); b.blur && b.blur(); }));
  on('.ra-tool', (e) => setTool(e.currentTarget.dataset.tool));
  on('.ra-undo', undo); on('.ra-redo', redo); on('.ra-reset', resetPred);
  on('.ra-save', () => save(false)); on('.ra-accept', () => save(true)); on('.ra-prev', previous);
  on('.ra-skip', () => setAside('skip')); on('.ra-flag', () => setAside('flag')); on('.ra-reload', load);
  $('.ra-opacity').addEventListener('input', (e) => { S.opacity = +e.target.value / 100; if (S.opacity > 0) S.lastOpacity = S.opacity; render(); });
  $('.ra-borders').addEventListener('change', (e) => { S.borders = e.target.checked; render(); });
  $('.ra-heat').addEventListener('change', (e) => { S.heat = e.target.checked && !!S.heatArr; render(); });
  $('.ra-unt').addEventListener('change', (e) => { S.unt = e.target.checked && !!S.untArr; render(); });

  // ---------- keys ----------
  function onKey(e) {
    if (e.repeat && !['[', ']'].includes(e.key)) return false;
    const k = (e.key || '').toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === 'z') { if (e.shiftKey) redo(); else undo(); return true; }
    if ((e.ctrlKey || e.metaKey) && k === 'y') { redo(); return true; }
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    const c = __keyClass(e, CFG.classes);
    if (c !== null) { if (c !== undefined) setCls(c); return true; }
    switch (k) {
      case 'enter': case 's': save(false); return true;
      case 'a': save(true); return true;
      case 'f': setTool('fill'); return true;
      case 'b': setTool('brush'); return true;
      case 'e': setTool('erase'); return true;
      case 'x': setCls(255); return true;
      case 'g': if (S.sp.length) { S.lvl = e.shiftKey ? Math.max(0, S.lvl - 1) : Math.min(S.sp.length - 1, S.lvl + 1); syncUi(); render(); } return true;
      case 'v': S.borders = !S.borders; syncUi(); render(); return true;
      case '[': S.brush = Math.max(1, S.brush - 1); syncUi(); render(); return true;
      case ']': S.brush = Math.min(32, S.brush + 1); syncUi(); render(); return true;
      case 'o': if (S.opacity > 0) { S.lastOpacity = S.opacity; S.opacity = 0; } else S.opacity = S.lastOpacity || 0.5; syncUi(); render(); return true;
      case 'u': if (S.heatArr) { S.heat = !S.heat; syncUi(); render(); } else msg('No heat map for this image.'); return true;
      case 'c': if (S.untArr) { S.unt = !S.unt; syncUi(); render(); } else msg('No CRA trust map for this image.'); return true;
      case 'r': resetPred(); return true;
      case 'k': setAside('skip'); return true;
      case 'p': previous(); return true;
    }
    return false;
  }
  window.__annotCanvases.region = { root: root, onKey: onKey };

  syncUi();
  // lease work only once the tab is actually shown
  const io = new IntersectionObserver((ents) => {
    if (ents.some((x) => x.isIntersecting) && !S.started) { S.started = true; load(); }
  });
  io.observe(root);
})();
"""


def region_canvas(ctx: AnnotatorContext, view_px: int = 560) -> gr.HTML:
    """The region labeling widget (a ``gr.HTML`` with server functions)."""
    cfg = {"classes": classes_config(ctx.space), "sp_names": [n for n, _ in LEVELS], "sp_default": DEFAULT_LEVEL,
           "reasons": list(SKIP_REASONS), "view": int(view_px)}
    return gr.HTML(value="", html_template=REGION_HTML, css_template=REGION_CSS,
                   js_on_load=with_config(REGION_JS, cfg), server_functions=make_region_functions(ctx),
                   elem_id="region-canvas", apply_default_css=False, padding=False)
