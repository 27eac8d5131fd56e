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
    busy: false, clock: __activeClock(), edits: 0, zoom: 8, saved: 0, drawn: 0, prev: [], down: false, last: null, hover: null,
    armAccept: 0, started: false,
    spq: null, mixed: false, pick: 255, outline: [] };   // a superpixel query: its mask, one-class / mixed mode
  let savedTimer = null;
  const notifySaved = () => { clearTimeout(savedTimer); savedTimer = setTimeout(() => trigger('saved'), 300); };
  const attrs = () => {
    const d = root.dataset;
    d.saved = S.saved; d.drawn = S.drawn; d.tool = S.tool; d.cls = S.cls; d.brush = S.brush; d.lvl = S.lvl;
    d.zoom = S.zoom; d.qid = S.task ? S.task.qid : ''; d.inner = S.inner.join(',');
    d.crop = S.task ? S.task.crop.join(',') : ''; d.image = S.task ? S.task.image : '';
    d.mode = !S.spq ? 'square' : (S.mixed ? 'mixed' : 'one'); d.pick = S.spq ? S.pick : '';
  };
  const setState = (s) => { root.dataset.state = s; attrs(); };
  const msg = (text, err) => { const m = $('.ra-msg'); m.textContent = text || ''; m.classList.toggle('err', !!err); };

  // ---------- palette, selects ----------
  const pal = $('.ra-palette');
  const VOID_BG = 'repeating-linear-gradient(45deg,#fff,#fff 3px,#999 3px,#999 6px)';
  // a chip picks the class to paint; on a superpixel in one-class mode it answers with that class
  const chipClick = (id) => { if (S.spq && !S.mixed) answerOne(id); else setCls(id); };
  const addChip = (id, name, color, key) => pal.appendChild(__classChip('ra', id, name, color, key, VOID_BG, chipClick));
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
    const chosen = S.spq && !S.mixed ? S.pick : S.cls;
    pal.querySelectorAll('button').forEach((b) => b.classList.toggle('on', +b.dataset.cls === chosen));
    $('.ra-bsize').textContent = S.brush;
    $('.ra-opacity').value = Math.round(S.opacity * 100);
    $('.ra-borders').checked = S.borders; $('.ra-heat').checked = S.heat; $('.ra-unt').checked = S.unt;
    $('.ra-heat').disabled = !S.heatArr; $('.ra-unt').disabled = !S.untArr;
    if (S.sp.length) lvlSel.value = S.lvl;
    $('.ra-cur').textContent = S.spq && !S.mixed ? 'superpixel · answer: ' + (NAME[S.pick] || S.pick) :
      'tool: ' + S.tool + ' · class: ' + (NAME[S.cls] || S.cls) +
      (S.tool === 'fill' ? ' · superpixels: ' + (CFG.sp_names[S.lvl] || S.lvl) : ' · brush ' + S.brush + ' px');
    syncSp();
    attrs();
  }
  // the superpixel panel: the pre-selected answer, the model's classes inside the shape, Mixed
  function syncSp() {
    const box = $('.ra-sp'); box.hidden = !S.spq; root.classList.toggle('ra-one', !!S.spq && !S.mixed);
    if (!S.spq) return;
    const col = PAL[S.pick];
    $('.ra-sp-chip').style.background = col ? 'rgb(' + col.join(',') + ')' : VOID_BG;
    $('.ra-sp-name').textContent = NAME[S.pick] || String(S.pick);
    $('.ra-sp-note').textContent = S.pick === S.spq.dominant ? '(the model\'s class)' : '(your answer)';
    $('.ra-sp-shares').textContent = 'model inside: ' +
      S.spq.shares.map(([c, p]) => (NAME[c] || c) + ' ' + p + '%').join(' · ') + ' · ' + S.spq.area + ' px';
    $('.ra-sp-title').textContent = S.mixed ? 'Superpixel · mixed: paint inside the yellow outline' :
      'Superpixel · one class for all of it';
    $('.ra-sp-ok').textContent = 'Answer ' + (NAME[S.pick] || S.pick) + ' (Enter)';
    $('.ra-sp-ok').hidden = S.mixed; $('.ra-sp-answer').hidden = S.mixed;
    $('.ra-sp-help').hidden = S.mixed; $('.ra-sp-help-mixed').hidden = !S.mixed;
    $('.ra-sp-mixed').textContent = S.mixed ? 'One class (M)' : 'Mixed (M)';
  }
  function setMixed(on) {
    if (!S.spq || S.busy) return;
    S.mixed = on; S.hover = null;
    if (on && S.pick !== 255 && !S.undo.length) S.cls = S.pick;   // paint the class shown, to begin with
    msg(on ? 'Mixed: label the superpixel with the region tools (only inside the outline), Enter saves.' :
      'One class: press a class key to answer the whole superpixel.');
    syncUi(); render();
  }
  function setCls(id) { S.cls = id; if (S.tool === 'erase') S.tool = 'fill'; syncUi(); }
  function setTool(t) { S.tool = t; syncUi(); render(); }

  // ---------- drawing ----------
  function render() {
    if (!S.task || !S.img) { g.clearRect(0, 0, cv.width, cv.height); return; }
    const W = S.W, H = S.H, z = S.zoom, n = W * H;
    const id = og.createImageData(W, H), d = id.data, a = S.opacity;
    const heat = S.heat ? S.heatArr : null, unt = S.unt ? S.untArr : null;
    const bd = S.borders && (!S.spq || S.mixed) ? S.spb[S.lvl] : null;
    const spm = S.spq ? S.spq.mask : null, one = spm && !S.mixed;
    for (let i = 0; i < n; i++) {
      let r = 0, gg = 0, b = 0, al = 0; const c = one ? S.pick : S.labels[i];
      if (c !== 255 && a > 0) { const col = PAL[c] || [0, 0, 0]; r = col[0]; gg = col[1]; b = col[2]; al = a; }
      if (heat) { const h = heat[i] / 255 * 0.85; if (h > 0) {
        const hr = 255, hg = Math.round(230 * (1 - heat[i] / 255)), hb = 0; const na = h + al * (1 - h);
        r = (hr * h + r * al * (1 - h)) / na; gg = (hg * h + gg * al * (1 - h)) / na; b = (hb * h + b * al * (1 - h)) / na; al = na; } }
      if (unt && unt[i] && ((i % W) + ((i / W) | 0)) % 2 === 0) { r = 255; gg = 0; b = 255; al = 0.85; }
      if (bd && bd[i]) { r = 255; gg = 255; b = 255; al = 0.8; }
      if (spm && !spm[i]) { r = 20; gg = 20; b = 20; al = 0.5; }   // outside the superpixel: dimmed, not labeled
      const k = i * 4; d[k] = r; d[k + 1] = gg; d[k + 2] = b; d[k + 3] = Math.round(al * 255);
    }
    og.putImageData(id, 0, 0);
    g.imageSmoothingEnabled = false;
    g.clearRect(0, 0, cv.width, cv.height);
    g.drawImage(S.img, 0, 0, W * z, H * z);
    g.drawImage(off, 0, 0, W * z, H * z);
    const [by, bx, bh, bw] = S.inner;
    if (S.spq) {   // the superpixel's outline (pixel edges between inside and outside), dark under bright
      [['#000000', 4], ['#ffeb3b', 2]].forEach(([col, lw]) => {
        g.strokeStyle = col; g.lineWidth = lw; g.beginPath();
        for (const [x0, y0, x1, y1] of S.outline) { g.moveTo(x0 * z, y0 * z); g.lineTo(x1 * z, y1 * z); }
        g.stroke();
      });
    } else {
      g.fillStyle = 'rgba(30,30,30,0.55)';
      g.fillRect(0, 0, W * z, by * z); g.fillRect(0, (by + bh) * z, W * z, (H - by - bh) * z);
      g.fillRect(0, by * z, bx * z, bh * z); g.fillRect((bx + bw) * z, by * z, (W - bx - bw) * z, bh * z);
      g.strokeStyle = '#ff2d2d'; g.lineWidth = 2; g.strokeRect(bx * z - 1, by * z - 1, bw * z + 2, bh * z + 2);
    }
    if (S.hover && S.tool !== 'fill' && (!S.spq || S.mixed)) {
      const [hx, hy] = S.hover, lo = Math.floor((S.brush - 1) / 2);
      g.strokeStyle = S.tool === 'erase' ? '#ffffff' : '#ffeb3b'; g.lineWidth = 1;
      g.strokeRect((hx - lo) * z + 0.5, (hy - lo) * z + 0.5, S.brush * z - 1, S.brush * z - 1);
    }
  }
  const inBox = (x, y) => { const [by, bx, bh, bw] = S.inner;
    return x >= bx && x < bx + bw && y >= by && y < by + bh && (!S.spq || S.spq.mask[y * S.W + x] === 1); };
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
      const i = yy * W + xx; if (sp[i] === want && inBox(xx, yy)) S.labels[i] = restore ? S.pred[i] : S.cls;
    }
  }
  function pushUndo() { S.undo.push(S.labels.slice()); if (S.undo.length > 200) S.undo.shift(); S.redo = []; S.armAccept = 0; S.edits++; }
  function undo() { if (!S.undo.length) return; S.redo.push(S.labels); S.labels = S.undo.pop(); S.drawn++; S.edits++; render(); attrs(); }
  function redo() { if (!S.redo.length) return; S.undo.push(S.labels); S.labels = S.redo.pop(); S.drawn++; S.edits++; render(); attrs(); }
  function resetPred() { if (!S.task) return; pushUndo(); S.labels = S.pred.slice(); S.drawn++; render(); attrs(); }
  const pt = (e) => { const r = cv.getBoundingClientRect();
    return [Math.floor((e.clientX - r.left) * S.W / r.width), Math.floor((e.clientY - r.top) * S.H / r.height)]; };
  cv.addEventListener('contextmenu', (e) => e.preventDefault());
  cv.addEventListener('mousedown', (e) => {
    if (!S.task || S.busy || e.button !== 0) return;
    e.preventDefault(); const [x, y] = pt(e);
    if (S.spq && !S.mixed) { msg('Press a class key to answer the whole superpixel, Enter for ' + NAME[S.pick] +
      ', or M to draw a mixed answer.', false); return; }
    if (!inBox(x, y)) { msg(S.spq ? 'Only the superpixel inside the yellow outline is labeled.' :
      'Only the region inside the red box is labeled.', false); return; }
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
    S.spq = null; S.mixed = false; S.outline = [];
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
    if (task.superpixel) {
      const sq = task.superpixel, m = __b64ToBytes(sq.mask);
      S.spq = { mask: m, area: sq.area, dominant: sq.dominant, shares: sq.shares }; S.pick = sq.pick; S.mixed = !!sq.mixed;
      const inside = (x, y) => x >= 0 && y >= 0 && x < cw && y < ch && m[y * cw + x] === 1;
      for (let y = 0; y < ch; y++) for (let x = 0; x < cw; x++) {
        if (!inside(x, y)) continue;
        if (!inside(x - 1, y)) S.outline.push([x, y, x, y + 1]);
        if (!inside(x + 1, y)) S.outline.push([x + 1, y, x + 1, y + 1]);
        if (!inside(x, y - 1)) S.outline.push([x, y, x + 1, y]);
        if (!inside(x, y + 1)) S.outline.push([x, y + 1, x + 1, y + 1]);
      }
    }
    off.getContext('2d');
    $('.ra-info').textContent = task.info + (task.existing ? ' · (your saved answer)' : '');
    $('.ra-ctx').src = task.context;
    msg(note || '');
    const im = new Image();
    im.onload = () => { if (S.task !== task) return; S.img = im; S.clock.reset(); S.edits = 0; render(); syncUi(); setState('ready'); };
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
    if (S.spq) for (let y = 0; y < bh; y++) for (let x = 0; x < bw; x++) {   // outside the superpixel: unlabeled
      if (!S.spq.mask[(by + y) * W + bx + x]) out[y * bw + x] = 255;
    }
    return out;
  }
  // a superpixel answered with one class (a class key, Enter, a palette chip): one edit
  async function answerOne(cls) {
    if (!S.task || S.busy || !S.img || !S.spq) return;
    S.pick = cls; syncUi(); render();
    const qid = S.task.qid;
    const res = await call('region_save', { query_id: qid, point_class: cls, ms: S.clock.ms(), edits: S.edits + 1,
      mode: 'one' }, 'saving…');
    if (res && res.ok) { S.saved++; S.prev.push(qid); }
    after(res, res && res.ok ? 'Saved superpixel #' + qid + ' as ' + (NAME[cls] || cls) : '');
  }
  async function save(accept) {
    if (!S.task || S.busy || !S.img) return;
    if (accept && S.undo.length && performance.now() - S.armAccept > 2000) {
      S.armAccept = performance.now(); msg('You edited this region: press A again to discard the edits and accept the prediction.', true); return;
    }
    const lab = accept ? S.pred : S.labels, qid = S.task.qid, [, , bh, bw] = S.inner;
    const what = S.spq ? 'superpixel' : 'region';
    const res = await call('region_save', { query_id: qid, labels: __bytesToB64(boxLabels(lab)), shape: [bh, bw],
      ms: S.clock.ms(), edits: S.edits, mode: accept ? 'accept' : 'edit' }, 'saving…');
    if (res && res.ok) { S.saved++; S.prev.push(qid); }
    after(res, res && res.ok ? 'Saved ' + what + ' #' + qid + (accept ? ' (prediction accepted)' : '') : '');
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
  on('.ra-sp-ok', () => answerOne(S.pick)); on('.ra-sp-mixed', () => setMixed(!S.mixed));
  $('.ra-opacity').addEventListener('input', (e) => { S.opacity = +e.target.value / 100; if (S.opacity > 0) S.lastOpacity = S.opacity; render(); });
  $('.ra-borders').addEventListener('change', (e) => { S.borders = e.target.checked; render(); });
  $('.ra-heat').addEventListener('change', (e) => { S.heat = e.target.checked && !!S.heatArr; render(); });
  $('.ra-unt').addEventListener('change', (e) => { S.unt = e.target.checked && !!S.untArr; render(); });

  // ---------- keys ----------
  root.addEventListener('pointerdown', () => S.clock.touch(), true);
  root.addEventListener('pointermove', (e) => { if (e.buttons) S.clock.touch(); }, true);
  function onKey(e) {
    S.clock.touch();
    if (e.repeat && !['[', ']'].includes(e.key)) return false;
    const k = (e.key || '').toLowerCase();
    if ((e.ctrlKey || e.metaKey) && k === 'z') { if (e.shiftKey) redo(); else undo(); return true; }
    if ((e.ctrlKey || e.metaKey) && k === 'y') { redo(); return true; }
    if (e.ctrlKey || e.metaKey || e.altKey) return false;
    if (S.spq && k === 'm') { setMixed(!S.mixed); return true; }
    if (S.spq && !S.mixed) {   // one key answers the whole superpixel
      const c1 = __keyClass(e, CFG.classes);
      if (c1 !== null) { if (c1 !== undefined) answerOne(c1); return true; }
      switch (k) {
        case 'enter': case 's': answerOne(S.pick); return true;
        case 'a': answerOne(S.spq.dominant); return true;
        case 'x': answerOne(255); return true;
        case 'f': case 'b': case 'e': case 'g': case 'r': case '[': case ']':
          msg('Press M first: the region tools are for a mixed superpixel.'); return true;
      }
    }
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
  __pollWhenEmpty(root, async () => { const r = await server.region_next({}); return r && r.ok ? r.task : null; },
    (task) => show(task, ''));
})();
