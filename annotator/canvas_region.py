"""Region labeling (RA) canvas: a ``gr.HTML`` widget with browser-side state and
``server_functions`` (each takes ONE dict argument, as Gradio 6 passes only the first).

Browser side: a context view (whole image, query box in red, labeled regions shaded) beside a
zoomed 2D canvas of the query box plus a tinted margin, pre-filled with the model's
prediction. Tools: superpixel click-fill (main tool, 3 SLIC granularities), square brush with
size keys, eraser back to the prediction, undo/redo, overlay opacity, superpixel borders, the
uncertainty x impurity heat map and CRA untrusted pixels. Only pixels inside the query box are
editable and only they are sent and stored.

Superpixel queries (``--unit superpixel``: a region query with a ``shape``, the superpixel's 0/1 mask
over its box) open in one-class mode: the superpixel outlined, everything outside it dimmed, its
pixels tinted with the pre-selected answer (the model's dominant predicted class inside the shape,
or the annotator's saved class). One key answers the whole superpixel with one class
(``point_class``); "Mixed" (M) switches to the region tools above, painting only inside the shape,
and saves a patch that is 255 outside it.

Server side: ``region_next`` / ``region_save`` / ``region_skip`` / ``region_open``. Every save
carries its query id and goes through storage's ``submit_label``: idempotent per (query,
annotator), and refused (one message, nothing stored) unless the caller may answer that query
now (``storage.answer_refusal``: a query of the open round they hold, or their own answer).
"""
from __future__ import annotations

import threading

import cv2
import gradio as gr
import numpy as np

import storage
from core.acquisition.superpixel import dominant_class
from core.data.folder import resize_label
from core.data.labels import IGNORE
from annotator.canvas_common import JS_PRELUDE, classes_config, int_arg, set_aside, static_text, with_config
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
    shape = query_shape(q)
    existing = storage.answer_of(db, q["id"], user)
    if existing is not None:  # re-opened: start from this annotator's saved answer
        patch = existing["patch"] if existing["patch"] is not None else \
            np.full((y1 - y0, x1 - x0), existing["point_class"], np.uint8)
        inner = init[by0 - cy0:by1 - cy0, bx0 - cx0:bx1 - cx0]
        sub = patch[: by1 - by0, : bx1 - bx0]
        inner[...] = sub if shape is None else np.where(shape[: by1 - by0, : bx1 - bx0], sub, inner)
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
    spq = None
    if shape is not None:
        cmask = np.zeros((cy1 - cy0, cx1 - cx0), np.uint8)
        cmask[by0 - cy0:by1 - cy0, bx0 - cx0:bx1 - cx0] = shape[: by1 - by0, : bx1 - bx0]
        inside = pred[cmask.astype(bool)]
        values, counts = np.unique(inside, return_counts=True)
        order = np.argsort(-counts, kind="stable")
        dominant = dominant_class(inside)
        pick, mixed = dominant, False
        if existing is not None:
            pick = dominant if existing["point_class"] is None else int(existing["point_class"])
            mixed = existing["patch"] is not None
        spq = {"mask": b64(cmask), "area": int(cmask.sum()), "dominant": dominant, "pick": pick, "mixed": mixed,
               "shares": [[int(values[i]), round(100.0 * counts[i] / max(1, inside.size), 1)] for i in order[:3]]}
    if spq is not None:
        what = f"superpixel of {spq['area']} px in a {y1 - y0}×{x1 - x0} box at (y={y0}, x={x0})"
    else:
        what = f"region {y1 - y0}×{x1 - x0} at (y={y0}, x={x0})"
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
        "superpixel": spq,
        "info": (f"{view.name} · {what}"
                 + (f" · score {score:.3g}" if isinstance(score, (int, float)) else "")
                 + (f" · round id {rnd}" if rnd is not None else "")),
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
        rnd = ctx.round_id()
        if rnd is None:
            return
        rows = storage.available_queries(ctx.db, rnd, "region", self.ahead)
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
    rnd = ctx.round_id()
    if rnd is None:   # no round open (yet): nothing to lease
        return None
    q = storage.lease_next(ctx.db, user, round=rnd, kind="region", minutes=LEASE_MINUTES)
    task = None if q is None else build_region_task(ctx, q, user)
    if prefetch is not None and task is not None:
        prefetch.request()
    return task


def query_shape(q: dict) -> np.ndarray | None:
    """A superpixel query's bool mask over its box (``queries.shape``), None for a square region."""
    if q.get("shape") is None:
        return None
    shape = storage.decode_patch(q["shape"]).astype(bool)
    if shape.shape != (q["y1"] - q["y0"], q["x1"] - q["x0"]):
        raise ValueError(f"query {q['id']}: its superpixel shape {shape.shape} does not match its box")
    return shape


def decode_region_labels(ctx: AnnotatorContext, q: dict, data: dict) -> np.ndarray:
    """The (y1-y0, x1-x0) uint8 patch from a save request; raises ValueError when malformed.
    The browser sends the editable (clipped) box; the rest of the box stays 255, and so do the pixels
    of a superpixel's box outside its shape. Which class ids may appear is checked by storage
    (``submit_label(classes=...)``)."""
    if q["kind"] != "region":
        raise ValueError(f"query {q['id']} is a {q['kind']} query, not a region")
    img = storage.get_image(ctx.db, q["image"])
    H, W = ctx.view(img["name"]).shape
    y0, x0, y1, x1 = q["y0"], q["x0"], q["y1"], q["x1"]
    eh, ew = min(y1, H) - min(y0, H), min(x1, W) - min(x0, W)
    shape = data.get("shape")
    if not isinstance(shape, list) or len(shape) != 2:
        raise ValueError(f"labels shape {shape!r} must be [height, width]")
    shape = (int_arg(shape[0], "labels shape"), int_arg(shape[1], "labels shape"))
    if shape != (eh, ew):
        raise ValueError(f"labels shape {shape} does not match query {q['id']}'s box {(eh, ew)}")
    raw = unb64(str(data.get("labels", "")))
    if len(raw) != eh * ew:
        raise ValueError(f"labels hold {len(raw)} values, expected {eh * ew}")
    patch = np.full((y1 - y0, x1 - x0), IGNORE, np.uint8)
    patch[:eh, :ew] = np.frombuffer(raw, np.uint8).reshape(eh, ew)
    shape = query_shape(q)
    if shape is not None:
        patch[~shape] = IGNORE
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
            qid = int_arg(data["query_id"], "query id")
            q = storage.get_query(ctx.db, qid)
            if data.get("point_class") is not None:   # a superpixel answered with one class
                if q["kind"] != "region" or q.get("shape") is None:
                    raise ValueError(f"query {qid} is not a superpixel: send its labels, not one class")
                answer = {"point_class": int_arg(data["point_class"], "class")}
            else:
                answer = {"patch": decode_region_labels(ctx, q, data)}
            storage.submit_label(ctx.db, qid, user, ctx.answer_round(), kind="region", **answer,
                                 ms=int(data.get("ms") or 0), classes=ctx.valid_classes,
                                 edits=int(data.get("edits") or 0), prefill=ctx.prefill_source())
        except storage.LeaseError as e:   # not theirs (anymore): say so and go on with their next task
            return {"ok": False, "error": f"not saved: {e}", "task": next_task(user)}
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": f"not saved: {e}"}
        return {"ok": True, "saved": qid, "task": next_task(user)}

    def region_skip(data: dict, request: gr.Request) -> dict:
        user = username(request)
        try:
            error = set_aside(ctx.db, user, [data["query_id"]], "region", data, ctx.answer_round())
            if error:
                return {"ok": False, "error": error, "task": next_task(user)}
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e)}
        return {"ok": True, "task": next_task(user)}

    def region_open(data: dict, request: gr.Request) -> dict:
        """Re-open a region this annotator labeled (the canvas's Previous), pre-filled with their
        answer, when they may still answer it (``storage.answer_refusal``). One a reviewer rejected
        (back in the queue) is leased to them again if nobody else has taken it meanwhile."""
        user = username(request)
        try:
            qid = int_arg(data["query_id"], "query id")
            rnd = ctx.answer_round()
            refusal = storage.answer_refusal(ctx.db, qid, user, rnd, "region")
            if (refusal is not None and storage.answer_of(ctx.db, qid, user, include_rejected=True) is not None
                    and storage.lease_query(ctx.db, qid, user, rnd, "region", minutes=LEASE_MINUTES)):
                refusal = None
            if refusal is not None:
                return {"ok": False, "error": f"cannot re-open: {refusal}"}
            return {"ok": True, "task": build_region_task(ctx, storage.get_query(ctx.db, qid), user)}
        except (storage.StoreError, ValueError, KeyError, TypeError) as e:
            return {"ok": False, "error": str(e)}

    return [region_next, region_save, region_skip, region_open]


# the frontend: annotator/static/region.html|css|js, after common.css and prelude.js (linted by tests/test_frontend.py)
REGION_HTML = static_text("region.html")
REGION_CSS = static_text("common.css") + static_text("region.css")
REGION_JS = JS_PRELUDE + static_text("region.js")


def region_canvas(ctx: AnnotatorContext, view_px: int = 560) -> gr.HTML:
    """The region labeling widget (a ``gr.HTML`` with server functions)."""
    cfg = {"classes": classes_config(ctx.space), "sp_names": [n for n, _ in LEVELS], "sp_default": DEFAULT_LEVEL,
           "reasons": list(SKIP_REASONS), "view": int(view_px)}
    return gr.HTML(value="", html_template=REGION_HTML, css_template=REGION_CSS,
                   js_on_load=with_config(REGION_JS, cfg), server_functions=make_region_functions(ctx),
                   elem_id="region-canvas", apply_default_css=False, padding=False)
