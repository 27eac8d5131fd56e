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
  const addChip = (id, name, color, key) => leg.appendChild(__classChip('pa', id, name, color, key, '#bbb', answer));
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
    p.ans = cls; const ms = document.hidden ? 0 : Math.round(Math.min(now - S.tp, 20000)); S.tp = now;   // idle over 20 s excluded
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
  __pollWhenEmpty(root, async () => { const r = await server.pixel_next({}); return r && r.ok ? r.task : null; },
    (task) => show(task, ''));
})();
