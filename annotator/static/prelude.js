const __b64ToBytes = (s) => { const bin = atob(s); const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i); return out; };
const __bytesToB64 = (u8) => { let s = ''; const CH = 0x8000;
  for (let i = 0; i < u8.length; i += CH) s += String.fromCharCode.apply(null, u8.subarray(i, i + CH));
  return btoa(s); };
const __keyClass = (e, classes) => {
  if (e.ctrlKey || e.metaKey || e.altKey) return null;
  const m = /^(?:Digit|Numpad)(\d)$/.exec(e.code || '');
  if (!m) return null;
  const d = +m[1]; const pos = (d === 0 ? 9 : d - 1) + (e.shiftKey ? 10 : 0);
  return pos < classes.length ? classes[pos].id : undefined;
};
// a class button of a palette/legend: colour chip, key hint, name ("prefix": the canvas's class prefix)
const __classChip = (prefix, id, name, color, key, emptyBackground, onClick) => {
  const b = document.createElement('button'); b.dataset.cls = id; b.title = name;
  b.innerHTML = `<span class="${prefix}-chip"></span><span class="${prefix}-key"></span><span class="${prefix}-name"></span>`;
  b.querySelector(`.${prefix}-chip`).style.background = color ? 'rgb(' + color.join(',') + ')' : emptyBackground;
  b.querySelector(`.${prefix}-key`).textContent = key ? '[' + key + ']' : '';
  b.querySelector(`.${prefix}-name`).textContent = name;
  b.addEventListener('click', () => { onClick(id); b.blur(); });
  return b;
};
// active time on a task: the gaps between the annotator's input events, each counted up to IDLE ms
// (a pause longer than that, or a hidden tab, counts as idle); what labels.ms stores
const __activeClock = () => {
  const IDLE = 20000; let total = 0; let last = performance.now();
  return {
    reset() { total = 0; last = performance.now(); },
    touch() { const now = performance.now(); if (!document.hidden) total += Math.min(now - last, IDLE); last = now; },
    ms() { this.touch(); return Math.round(total); },
  };
};
window.__annotCanvases = window.__annotCanvases || {};
if (!window.__annotKeysInstalled) {
  window.__annotKeysInstalled = true;
  document.addEventListener('keydown', (e) => {
    const t = e.target;
    if (t && t.closest && !t.closest('.annot-canvas')) {
      const tag = (t.tagName || '').toUpperCase();
      if (tag === 'TEXTAREA' || tag === 'SELECT' || t.isContentEditable) return;
      if (tag === 'INPUT' && !['range', 'checkbox', 'radio', 'button'].includes((t.type || '').toLowerCase())) return;
    }
    for (const name of Object.keys(window.__annotCanvases)) {
      const c = window.__annotCanvases[name];
      if (c && c.root && c.root.isConnected && c.root.offsetParent !== null) {
        if (c.onKey(e)) { e.preventDefault(); e.stopPropagation(); }
        return;
      }
    }
  }, true);
}
// an empty queue is asked again every few seconds while the canvas is shown: a running loop opens its
// next round (or a reviewer sends a label back) without a page reload. ask() -> a task or null.
const __pollWhenEmpty = (root, ask, show) => {
  const POLL_MS = 2000; let asking = false;
  setInterval(async () => {
    if (asking || document.hidden || root.dataset.state !== 'empty' || root.offsetParent === null) return;
    asking = true;
    try { const task = await ask(); if (task && root.dataset.state === 'empty') show(task); }
    catch (err) { /* the server is away (e.g. between rounds): ask again at the next tick */ }
    finally { asking = false; }
  }, POLL_MS);
};
