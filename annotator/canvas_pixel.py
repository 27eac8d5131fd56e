"""Pixel labeling (PA) canvas: a ``gr.HTML`` widget with browser-side state and
``server_functions`` (ONE dict argument each).

All pixel queries of one image are shown at once; the current point is ringed and magnified
in an inset. A class key answers and moves on; ``U``/``Space`` answers "unsure" (stored as
255); ``Backspace`` goes back. The model's guess is hidden unless ``H`` is pressed.

Typing never waits for the server: each answer is queued in the browser keyed by its query
id and sent in batches, one batch in flight at a time, so a later answer to the same point can
never overtake an earlier one; failed sends are retried. Every answer carries its query id and
point index and is stored with storage's idempotent ``save_label``.
"""
from __future__ import annotations

import gradio as gr

import storage
from core.data.labels import IGNORE
from annotator.canvas_common import JS_PRELUDE, classes_config, with_config
from annotator.context import LEASE_MINUTES, AnnotatorContext, photo_url, username

SKIP_REASONS = ("ambiguous", "too dark / blurry", "bad image", "other")
MAX_BATCH = 500


# --------------------------------------------------------------------------------------------
# server side
# --------------------------------------------------------------------------------------------

def build_pixel_task(ctx: AnnotatorContext, image: int, user: str) -> dict | None:
    db = ctx.db
    rnd = ctx.round_id()
    pts = storage.image_points(db, user, image, rnd)
    if not pts:
        return None
    name = storage.get_image(db, image)["name"]
    view = ctx.view(name)
    H, W = view.shape
    total, done = storage.image_completion(db, rnd, "pixel")
    points = []
    for p in pts:
        y, x = int(p["y"]), int(p["x"])
        guess = int(view.prediction[y, x]) if 0 <= y < H and 0 <= x < W else IGNORE
        points.append({"qid": int(p["id"]), "y": y, "x": x, "guess": guess,
                       "answer": None if p["answer"] is None else int(p["answer"])})
    return {"image": name, "image_id": int(image), "size": [H, W], "img": photo_url(view.image), "points": points,
            "images_total": total, "images_done": done}


def _next_image(ctx: AnnotatorContext, user: str) -> dict | None:
    db = ctx.db
    rnd = ctx.round_id()
    for _ in range(3):  # a leased image whose points all vanished (race) -> try the next one
        q = storage.lease_next(db, user, round=rnd, kind="pixel", minutes=LEASE_MINUTES)
        if q is None:
            return None
        storage.lease_image(db, user, q["image"], rnd, "pixel", minutes=LEASE_MINUTES)
        task = build_pixel_task(ctx, q["image"], user)
        if task is not None:
            return task
    return None


def save_answers(ctx: AnnotatorContext, user: str, answers: list) -> dict:
    """Store a batch of point answers; returns ``{"acked": [query ids], "errors": [...]}``.
    Errors are ``permanent`` (bad input, someone else's lease: do not resend) or transient."""
    acked, errors = [], []
    for a in list(answers)[:MAX_BATCH]:
        try:
            qid = int(a["query_id"])
            cls = int(a["cls"])
        except (KeyError, TypeError, ValueError):
            errors.append({"query_id": None, "error": f"malformed answer {a!r}", "permanent": True})
            continue
        try:
            if cls not in ctx.valid_classes:
                raise storage.InvalidInput(f"unknown class id {cls}")
            if storage.get_query(ctx.db, qid)["kind"] != "pixel":   # InvalidInput when unknown
                raise storage.InvalidInput(f"query {qid} is not a pixel query")
            storage.save_label(ctx.db, qid, user, point_class=cls, ms=int(a.get("ms") or 0))
            acked.append(qid)
        except (storage.InvalidInput, storage.LeaseError) as e:
            errors.append({"query_id": qid, "error": str(e), "permanent": True})
        except storage.StoreError as e:
            errors.append({"query_id": qid, "error": str(e), "permanent": False})
    return {"ok": not errors, "acked": acked, "errors": errors}


def make_pixel_functions(ctx: AnnotatorContext) -> list:

    def pixel_next(data: dict, request: gr.Request) -> dict:
        user = username(request)
        try:
            return {"ok": True, "task": _next_image(ctx, user), "user": user}
        except (storage.StoreError, ValueError) as e:
            return {"ok": False, "error": str(e)}

    def pixel_save(data: dict, request: gr.Request) -> dict:
        user = username(request)
        answers = data.get("answers") if isinstance(data, dict) else None
        if not isinstance(answers, list):
            return {"ok": False, "acked": [], "errors": [{"query_id": None, "error": "no answers", "permanent": True}]}
        return save_answers(ctx, user, answers)

    def pixel_skip(data: dict, request: gr.Request) -> dict:
        """Set the image's unanswered points aside (skip, or flag) and lease the next image."""
        user = username(request)
        try:
            reason = str(data.get("reason") or "").strip() or "no reason given"
            fn = storage.flag if data.get("action") == "flag" else storage.skip
            ids = [int(q) for q in data.get("query_ids") or []]
            foreign = [q for q in ids if not storage.holds(ctx.db, q, user, "pixel")]
            if foreign:
                return {"ok": False, "error": f"points {foreign} are not assigned to you (lease lost?)"}
            for qid in ids:
                fn(ctx.db, qid, user, reason)
            return {"ok": True, "task": _next_image(ctx, user)}
        except (storage.StoreError, ValueError, TypeError) as e:
            return {"ok": False, "error": str(e)}

    return [pixel_next, pixel_save, pixel_skip]


# --------------------------------------------------------------------------------------------
# browser side
# --------------------------------------------------------------------------------------------

PIXEL_HTML = """
<div class="annot-canvas pa-root" data-state="idle" data-acked="0" data-pending="0" data-answered="0" tabindex="-1">
  <div class="pa-top"><span class="pa-info">Open this tab to start labeling pixels.</span>
    <span class="pa-msg" role="status"></span></div>
  <div class="pa-main">
    <div class="pa-center"><canvas class="pa-view" width="8" height="8"></canvas></div>
    <div class="pa-right">
      <div class="pa-cap">Zoom around the point</div>
      <canvas class="pa-inset" width="198" height="198"></canvas>
      <div class="pa-point"></div>
      <div class="pa-guess"></div>
      <div class="pa-help">
        <b>1-9 0</b> answer with a class (<b>⇧</b> for 11-20) and go on<br>
        <b>U</b> / <b>Space</b> unsure (stored as 255)<br>
        <b>Backspace</b> back · <b>←</b> <b>→</b> move without answering<br>
        <b>H</b> show/hide the model's guess · <b>N</b> / <b>Enter</b> next image
      </div>
      <label>Reason <select class="pa-reason"></select></label>
      <div class="pa-group"><button class="pa-next">Next image</button><button class="pa-skip">Skip rest</button>
        <button class="pa-flag">Flag image</button><button class="pa-reload">Check for work</button></div>
    </div>
  </div>
  <div class="pa-legend"></div>
</div>
"""

PIXEL_CSS = """
.pa-root { font-size: 13px; outline: none; }
.pa-top { display: flex; gap: 12px; align-items: baseline; margin-bottom: 6px; flex-wrap: wrap; }
.pa-info { font-weight: 600; }
.pa-msg { color: #1a7f37; }
.pa-msg.err { color: #c62828; font-weight: 600; }
.pa-main { display: flex; gap: 12px; align-items: flex-start; flex-wrap: wrap; }
.pa-view { border: 1px solid #8886; display: block; max-width: 100%; cursor: pointer; }
.pa-inset { image-rendering: pixelated; border: 1px solid #8886; display: block; }
.pa-right { flex: 0 1 240px; display: flex; flex-direction: column; gap: 6px; }
.pa-cap { font-weight: 600; }
.pa-help { line-height: 1.6; opacity: 0.85; }
.pa-group { display: flex; gap: 4px; flex-wrap: wrap; }
.pa-root button { padding: 3px 8px; border: 1px solid #8888; border-radius: 4px; background: #8881; cursor: pointer; }
.pa-legend { display: flex; flex-wrap: wrap; gap: 4px; margin-top: 8px; }
.pa-legend button { display: flex; gap: 4px; align-items: center; }
.pa-chip { width: 14px; height: 14px; border: 1px solid #0008; display: inline-block; }
.pa-key { font-family: monospace; opacity: 0.7; }
"""

PIXEL_JS = JS_PRELUDE + r"""
(function () {
  const CFG = __CONFIG__;
  const root = element.querySelector('.pa-root');
  if (!root) return;
  const $ = (s) => root.querySelector(s);
  const cv = $('.pa-view'), g = cv.getContext('2d'), ins = $('.pa-inset'), ig = ins.getContext('2d');
  const PAL = {}; CFG.classes.forEach((c) => { PAL[c.id] = c.color; });
  const NAME = {}; CFG.classes.forEach((c) => { NAME[c.id] = c.name; }); NAME[255] = 'unsure';
  const S = { task: null, pts: [], byQid: new Map(), cur: -1, img: null, scale: 1, guess: false, queue: new Map(),
    inflight: null, loading: false, tp: 0, started: false, retryAt: 0 };
  let savedTimer = null;
  const notifySaved = () => { clearTimeout(savedTimer); savedTimer = setTimeout(() => trigger('saved'), 500); };
  const pending = () => S.queue.size + (S.inflight ? S.inflight.length : 0);
  const answered = () => S.pts.filter((p) => p.ans !== null).length;
  const acked = () => S.pts.filter((p) => p.ans !== null && p.acked === p.ans).length;
  const msg = (text, err) => { const m = $('.pa-msg'); m.textContent = text || ''; m.classList.toggle('err', !!err); };
  function attrs() {
    const d = root.dataset;
    d.acked = acked(); d.pending = pending(); d.answered = answered(); d.cur = S.cur; d.npoints = S.pts.length;
    d.image = S.task ? S.task.image : ''; d.qids = S.pts.map((p) => p.qid).join(',');
    d.guess = S.guess ? '1' : '0';
  }
  const setState = (s) => { root.dataset.state = s; attrs(); };

  // ---------- legend ----------
  const leg = $('.pa-legend');
  const addChip = (id, name, color, key) => {
    const b = document.createElement('button'); b.dataset.cls = id; b.title = name;
    b.innerHTML = '<span class="pa-chip"></span><span class="pa-key"></span><span class="pa-name"></span>';
    b.querySelector('.pa-chip').style.background = color ? 'rgb(' + color.join(',') + ')' : '#bbb';
    b.querySelector('.pa-key').textContent = key ? '[' + key + ']' : '';
    b.querySelector('.pa-name').textContent = name;
    b.addEventListener('click', () => { answer(id); b.blur(); });
    leg.appendChild(b);
  };
  CFG.classes.forEach((c) => addChip(c.id, c.name, c.color, c.key));
  addChip(255, 'unsure', null, 'U');
  const rs = $('.pa-reason');
  CFG.reasons.forEach((r) => { const o = document.createElement('option'); o.value = r; o.textContent = r; rs.appendChild(o); });

  // ---------- drawing ----------
  const col = (c) => (c === 255 || PAL[c] === undefined) ? 'rgb(170,170,170)' : 'rgb(' + PAL[c].join(',') + ')';
  function render() {
    const t = S.task;
    if (!t || !S.img) { g.clearRect(0, 0, cv.width, cv.height); ig.clearRect(0, 0, ins.width, ins.height); attrs(); return; }
    const [H, W] = t.size, s = S.scale;
    g.imageSmoothingEnabled = s < 1; g.clearRect(0, 0, cv.width, cv.height);
    g.drawImage(S.img, 0, 0, W * s, H * s);
    S.pts.forEach((p, i) => {
      if (i === S.cur) return;
      const cx = (p.x + 0.5) * s, cy = (p.y + 0.5) * s;
      g.beginPath(); g.arc(cx, cy, 5, 0, 2 * Math.PI); g.lineWidth = 2; g.strokeStyle = '#000'; g.stroke();
      g.beginPath(); g.arc(cx, cy, 4, 0, 2 * Math.PI);
      if (p.ans !== null) { g.fillStyle = col(p.ans); g.fill(); } else { g.strokeStyle = '#fff'; g.lineWidth = 1.5; g.stroke(); }
    });
    const p = S.cur >= 0 ? S.pts[S.cur] : null;
    if (p) {
      const cx = (p.x + 0.5) * s, cy = (p.y + 0.5) * s;
      g.strokeStyle = '#000'; g.lineWidth = 4; g.beginPath(); g.arc(cx, cy, 13, 0, 2 * Math.PI); g.stroke();
      g.strokeStyle = '#ffeb3b'; g.lineWidth = 2; g.beginPath(); g.arc(cx, cy, 13, 0, 2 * Math.PI); g.stroke();
      g.beginPath(); g.moveTo(cx - 22, cy); g.lineTo(cx - 8, cy); g.moveTo(cx + 8, cy); g.lineTo(cx + 22, cy);
      g.moveTo(cx, cy - 22); g.lineTo(cx, cy - 8); g.moveTo(cx, cy + 8); g.lineTo(cx, cy + 22); g.stroke();
      if (S.guess && p.guess !== 255) { g.fillStyle = col(p.guess); g.fillRect(cx + 15, cy - 15, 10, 10); g.strokeStyle = '#000'; g.lineWidth = 1; g.strokeRect(cx + 15, cy - 15, 10, 10); }
      // inset: 33x33 source pixels x6, centre pixel outlined
      const R = 16, Z = 6;
      ig.imageSmoothingEnabled = false; ig.fillStyle = '#000'; ig.fillRect(0, 0, ins.width, ins.height);
      const sx0 = Math.max(0, p.x - R), sy0 = Math.max(0, p.y - R), sx1 = Math.min(W, p.x + R + 1), sy1 = Math.min(H, p.y + R + 1);
      ig.drawImage(S.img, sx0, sy0, sx1 - sx0, sy1 - sy0, (sx0 - p.x + R) * Z, (sy0 - p.y + R) * Z, (sx1 - sx0) * Z, (sy1 - sy0) * Z);
      ig.strokeStyle = '#000'; ig.lineWidth = 3; ig.strokeRect(R * Z - 1, R * Z - 1, Z + 2, Z + 2);
      ig.strokeStyle = '#ffeb3b'; ig.lineWidth = 1.5; ig.strokeRect(R * Z - 1, R * Z - 1, Z + 2, Z + 2);
      $('.pa-point').textContent = 'point ' + (S.cur + 1) + '/' + S.pts.length + ' at (y=' + p.y + ', x=' + p.x + ')' +
        (p.ans !== null ? ' · answered: ' + (NAME[p.ans] || p.ans) : '');
      $('.pa-guess').textContent = S.guess ? 'model guess: ' + (NAME[p.guess] || 'none') : '';
    } else {
      ig.clearRect(0, 0, ins.width, ins.height);
      $('.pa-point').textContent = S.pts.length ? 'All points answered: N or Enter for the next image, Backspace to go back.' : '';
      $('.pa-guess').textContent = '';
    }
    $('.pa-info').textContent = answered() + '/' + S.pts.length + ' · image ' + (t.images_done + 1) + '/' + t.images_total +
      ' · ' + t.image + (pending() ? ' · saving ' + pending() + '…' : ' · all saved');
    attrs();
  }

  // ---------- saving ----------
  function flush() {
    if (S.inflight || S.queue.size === 0) return;
    if (performance.now() < S.retryAt) { setTimeout(flush, S.retryAt - performance.now() + 5); return; }
    const batch = Array.from(S.queue.values()); S.queue.clear(); S.inflight = batch; attrs();
    let retry = false;
    server.pixel_save({ answers: batch }).then((res) => {
      const ok = new Set((res && res.acked) || []);
      const perm = new Map(); ((res && res.errors) || []).forEach((e) => { if (e.permanent) perm.set(e.query_id, e.error); });
      for (const a of batch) {
        const p = S.byQid.get(a.query_id);
        if (ok.has(a.query_id)) { if (p) p.acked = a.cls; }
        else if (perm.has(a.query_id)) { msg('Point ' + (a.idx + 1) + ' not saved: ' + perm.get(a.query_id), true); }
        else if (!S.queue.has(a.query_id)) { S.queue.set(a.query_id, a); retry = true; }
      }
    }).catch((err) => {
      for (const a of batch) if (!S.queue.has(a.query_id)) S.queue.set(a.query_id, a);
      retry = true; msg('Saving failed (' + err + '); retrying…', true);
    }).finally(() => {
      S.inflight = null; if (retry) S.retryAt = performance.now() + 800;
      render(); notifySaved(); if (S.queue.size) flush();
    });
  }
  const flushed = () => new Promise((resolve) => {
    const tick = () => { if (!pending()) resolve(); else { flush(); setTimeout(tick, 40); } }; tick(); });

  // ---------- answering ----------
  function answer(cls) {
    if (!S.task || S.loading || S.cur < 0) return;
    const p = S.pts[S.cur], now = performance.now();
    p.ans = cls; const ms = Math.round(now - S.tp); S.tp = now;
    S.queue.set(p.qid, { query_id: p.qid, idx: p.idx, cls: cls, ms: ms });
    const n = S.pts.length; let next = -1;
    for (let k = 1; k <= n; k++) { const j = (S.cur + k) % n; if (S.pts[j].ans === null) { next = j; break; } }
    S.cur = next;
    flush(); render();
  }
  function move(d) {
    if (!S.task || !S.pts.length) return;
    if (S.cur < 0) S.cur = d < 0 ? S.pts.length - 1 : 0;
    else S.cur = Math.max(0, Math.min(S.pts.length - 1, S.cur + d));
    S.tp = performance.now(); render();
  }

  // ---------- tasks ----------
  function show(task, note) {
    S.task = task; S.img = null; S.pts = []; S.byQid = new Map(); S.cur = -1; S.loading = false;
    if (!task) { $('.pa-info').textContent = 'No pixel queries waiting in this round.'; cv.width = 8; cv.height = 8;
      msg(note || ''); render(); setState('empty'); return; }
    S.pts = task.points.map((p, i) => ({ qid: p.qid, idx: i, y: p.y, x: p.x, guess: p.guess, ans: p.answer, acked: p.answer }));
    S.pts.forEach((p) => S.byQid.set(p.qid, p));
    S.cur = S.pts.findIndex((p) => p.ans === null);
    const [H, W] = task.size; const fit = Math.min(CFG.view_w / W, CFG.view_h / H);
    S.scale = fit >= 1 ? Math.floor(fit) : fit;
    cv.width = Math.round(W * S.scale); cv.height = Math.round(H * S.scale);
    msg(note || '');
    S.loading = true; setState('loading');
    const im = new Image();
    im.onload = () => { if (S.task !== task) return; S.img = im; S.loading = false; S.tp = performance.now(); render(); setState('ready'); };
    im.src = task.img;
  }
  async function call(fn, arg) {
    try { return await server[fn](arg); } catch (err) { return { ok: false, error: 'server not reachable (' + err + ')' }; }
  }
  async function load(note) {
    if (S.loading && S.started) return;
    S.loading = true; setState('loading'); $('.pa-info').textContent = 'Loading…';
    await flushed();
    const res = await call('pixel_next', {});
    if (res && res.ok) { show(res.task, note || ''); notifySaved(); }
    else { S.loading = false; setState(S.task ? 'ready' : 'empty'); msg((res && res.error) || 'error', true); }
  }
  function nextImage() {
    if (!S.task) { load(); return; }
    if (answered() < S.pts.length) { msg('Answer every point first (or "Skip rest").', true); return; }
    load('Image ' + S.task.image + ' done.');
  }
  async function setAside(action) {
    if (!S.task || S.loading) return;
    const ids = S.pts.filter((p) => p.ans === null).map((p) => p.qid);
    S.loading = true; setState('loading'); await flushed();
    const res = await call('pixel_skip', { query_ids: ids, action: action, reason: rs.value });
    if (res && res.ok) { show(res.task, (action === 'flag' ? 'Flagged ' : 'Skipped ') + ids.length + ' point(s).'); notifySaved(); }
    else { S.loading = false; setState('ready'); msg((res && res.error) || 'error', true); }
  }

  // ---------- input ----------
  cv.addEventListener('mousedown', (e) => {   // click a point to select it
    if (!S.task || !S.pts.length) return;
    const r = cv.getBoundingClientRect(), x = (e.clientX - r.left) * cv.width / r.width, y = (e.clientY - r.top) * cv.height / r.height;
    let best = -1, bd = 400;
    S.pts.forEach((p, i) => { const dx = (p.x + 0.5) * S.scale - x, dy = (p.y + 0.5) * S.scale - y, d = dx * dx + dy * dy; if (d < bd) { bd = d; best = i; } });
    if (best >= 0) { S.cur = best; S.tp = performance.now(); render(); }
  });
  const on = (sel, fn) => root.querySelectorAll(sel).forEach((b) => b.addEventListener('click', () => { fn(); b.blur(); }));
  on('.pa-next', nextImage); on('.pa-skip', () => setAside('skip')); on('.pa-flag', () => setAside('flag'));
  on('.pa-reload', () => load());
  function onKey(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    const c = __keyClass(e, CFG.classes);
    if (c !== null) { if (c !== undefined) answer(c); return true; }
    const k = e.key;
    if (k === 'u' || k === 'U' || k === ' ') { answer(255); return true; }
    if (k === 'Backspace' || k === 'ArrowLeft') { move(-1); return true; }
    if (k === 'ArrowRight') { move(1); return true; }
    if (k === 'h' || k === 'H') { S.guess = !S.guess; render(); return true; }
    if (k === 'n' || k === 'N' || k === 'Enter') { nextImage(); return true; }
    return false;
  }
  window.__annotCanvases.pixel = { root: root, onKey: onKey };
  window.addEventListener('beforeunload', (e) => { if (pending()) { e.preventDefault(); e.returnValue = ''; } });
  const io = new IntersectionObserver((ents) => {
    if (ents.some((x) => x.isIntersecting) && !S.started) { S.started = true; load(); }
  });
  io.observe(root);
})();
"""


def pixel_canvas(ctx: AnnotatorContext, view_w: int = 760, view_h: int = 540) -> gr.HTML:
    cfg = {"classes": classes_config(ctx.space), "reasons": list(SKIP_REASONS), "view_w": int(view_w),
           "view_h": int(view_h)}
    return gr.HTML(value="", html_template=PIXEL_HTML, css_template=PIXEL_CSS,
                   js_on_load=with_config(PIXEL_JS, cfg), server_functions=make_pixel_functions(ctx),
                   elem_id="pixel-canvas", apply_default_css=False, padding=False)
