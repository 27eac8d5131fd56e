"""Pixel labeling (PA) canvas: a ``gr.HTML`` widget with browser-side state and
``server_functions`` (ONE dict argument each).

All pixel queries of one image are shown at once; the current point is ringed and magnified
in an inset. A class key answers and moves on; ``U``/``Space`` answers "unsure" (stored as
255); ``Backspace`` goes back. The model's guess is hidden unless ``H`` is pressed.

Typing never waits for the server: each answer is queued in the browser keyed by its query
id and sent in batches, one batch in flight at a time, so a later answer to the same point can
never overtake an earlier one; failed sends are retried. Every answer carries its query id and
point index and is stored with storage's idempotent ``submit_label``, which refuses (nothing
stored) a point the caller may not answer now (``storage.answer_refusal``) and a class id that is
not an integer of the label space (or 255, "unsure").
"""
from __future__ import annotations

import gradio as gr

import storage
from core.data.labels import IGNORE
from annotator.canvas_common import JS_PRELUDE, classes_config, int_arg, set_aside, static_text, with_config
from annotator.context import LEASE_MINUTES, AnnotatorContext, RoundClosed, photo_url, username

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
    if rnd is None:   # no round open (yet): nothing to lease
        return None
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
    Errors are ``permanent`` (bad input, a point that is not the caller's: do not resend) or
    transient (the store was busy: resend)."""
    acked, errors = [], []
    try:
        rnd = ctx.answer_round()
    except RoundClosed as e:   # one permanent error per answer: the page must not send them again
        return {"ok": False, "acked": [], "errors": [
            {"query_id": a.get("query_id") if isinstance(a, dict) else None, "error": str(e), "permanent": True}
            for a in list(answers)[:MAX_BATCH]]}
    prefill = ctx.prefill_source()
    for a in list(answers)[:MAX_BATCH]:
        try:
            qid = int_arg(a["query_id"], "query id")
            cls = a["cls"]
            ms = int(a.get("ms") or 0)
            edits = int(a.get("edits") or 1)
        except (KeyError, TypeError, ValueError, AttributeError):
            errors.append({"query_id": None, "error": f"malformed answer {a!r}", "permanent": True})
            continue
        try:
            storage.submit_label(ctx.db, qid, user, rnd, kind="pixel", point_class=cls, ms=ms,
                                 classes=ctx.valid_classes, edits=edits, prefill=prefill)
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
            error = set_aside(ctx.db, user, list(data.get("query_ids") or []), "pixel", data, ctx.answer_round())
            if error:
                return {"ok": False, "error": error}
            return {"ok": True, "task": _next_image(ctx, user)}
        except (storage.StoreError, ValueError, TypeError, AttributeError) as e:
            return {"ok": False, "error": str(e)}

    return [pixel_next, pixel_save, pixel_skip]


# the frontend: annotator/static/pixel.html|css|js, after common.css and prelude.js (linted by tests/test_frontend.py)
PIXEL_HTML = static_text("pixel.html")
PIXEL_CSS = static_text("common.css") + static_text("pixel.css")
PIXEL_JS = JS_PRELUDE + static_text("pixel.js")


def pixel_canvas(ctx: AnnotatorContext, view_w: int = 760, view_h: int = 540) -> gr.HTML:
    cfg = {"classes": classes_config(ctx.space), "reasons": list(SKIP_REASONS), "view_w": int(view_w),
           "view_h": int(view_h)}
    return gr.HTML(value="", html_template=PIXEL_HTML, css_template=PIXEL_CSS,
                   js_on_load=with_config(PIXEL_JS, cfg), server_functions=make_pixel_functions(ctx),
                   elem_id="pixel-canvas", apply_default_css=False, padding=False)
