"""Pieces both canvases share: the class-key layout, the JS prelude, the config placeholder.

Class keys: the number row in keyboard order (1 2 ... 9 0) picks the first ten classes of the
label space; with Shift it picks classes 11-20. Every class is also on the named palette.
"""
from __future__ import annotations

import json

from core.data.labels import LabelSpace


def key_label(position: int) -> str:
    """The key for the class at ``position`` (0-based) in the label space, '' when none."""
    if position < 10:
        return str((position + 1) % 10)
    if position < 20:
        return "⇧" + str((position - 9) % 10)
    return ""


def classes_config(space: LabelSpace) -> list[dict]:
    return [{"id": int(c.train_id), "name": c.name, "color": [int(v) for v in c.color], "key": key_label(i)}
            for i, c in enumerate(space.classes)]


def with_config(js: str, config: dict) -> str:
    """Insert the JSON config into a canvas script (``__CONFIG__`` placeholder; no templating,
    so braces in the JS need no escaping)."""
    return js.replace("__CONFIG__", json.dumps(config, separators=(",", ":")))


# JS shared by both canvases (inserted at the top of each js_on_load):
# - helpers: base64 <-> bytes, key -> class, focus check;
# - ONE document keydown listener for the whole page (guarded by a window flag, since
#   js_on_load may run again on re-render) that forwards keys to the visible canvas's handler
#   registered in window.__annotCanvases.
JS_PRELUDE = r"""
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
"""
