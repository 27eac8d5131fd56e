"""Pieces both canvases share: the class-key layout, the JS prelude, the config placeholder.

Class keys: the number row in keyboard order (1 2 ... 9 0) picks the first ten classes of the
label space; with Shift it picks classes 11-20. Every class is also on the named palette.
"""
from __future__ import annotations

import json
from pathlib import Path

import storage
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


def int_arg(value, what: str) -> int:
    """A JSON integer from the browser (query id, size); ValueError for anything else (3.7, True,
    "3", None), never rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    return value


def set_aside(db, user: str, query_ids: list, kind: str, data: dict, round_id: int | None) -> str | None:
    """Skip (or, with ``data["action"] == "flag"``, flag) queries of the open round ``round_id``
    that ``user`` holds (storage's :func:`~storage.answer_refusal` with ``held_only``), with
    ``data["reason"]``; the error message when one of them is not theirs (nothing is changed then),
    else None. Raises storage.StoreError / ValueError for bad input (the canvases report it)."""
    reason = str(data.get("reason") or "").strip() or "no reason given"
    mark = storage.flag if data.get("action") == "flag" else storage.skip
    ids = [int_arg(q, "query id") for q in query_ids]
    refusals = [r for r in (storage.answer_refusal(db, q, user, round_id, kind, held_only=True) for q in ids) if r]
    if refusals:
        return "not set aside: " + "; ".join(refusals)
    for q in ids:
        mark(db, q, user, reason)
    return None


def with_config(js: str, config: dict) -> str:
    """Insert the JSON config into a canvas script (``__CONFIG__`` placeholder; no templating,
    so braces in the JS need no escaping)."""
    return js.replace("__CONFIG__", json.dumps(config, separators=(",", ":")))


STATIC = Path(__file__).resolve().parent / "static"


def static_text(name: str) -> str:
    """A frontend file of annotator/static/ (HTML, CSS or JS), read once at import."""
    return (STATIC / name).read_text(encoding="utf-8")


# JS shared by both canvases (static/prelude.js, inserted at the top of each js_on_load): helpers
# (base64 <-> bytes, key -> class, focus check) and ONE document keydown listener for the whole page
# (guarded by a window flag, since js_on_load may run again on re-render) that forwards keys to the
# visible canvas's handler registered in window.__annotCanvases.
JS_PRELUDE = static_text("prelude.js")
