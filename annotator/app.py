"""The annotator page: layout and wiring around the two canvases.

Tabs: Regions (RA canvas), Pixels (PA canvas), Review (approve / reject back to the queue),
Round (progress, per-annotator counts, finish round -> ``on_finish``, export, metrics plots).
A header shows the round's progress against its budget and the signed-in annotator.

:func:`build_app` returns the ``gr.Blocks``; :func:`launch` serves it, on 127.0.0.1 unless
told otherwise, and refuses any other address without ``auth``.
"""
from __future__ import annotations

import hashlib
import hmac
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable

import cv2
import gradio as gr
import numpy as np
import pandas as pd

import storage
from core.data.labels import CITYSCAPES19, IGNORE, SYNTHIA16, LabelSpace
from annotator.canvas_pixel import pixel_canvas
from annotator.canvas_region import query_shape, region_canvas
from annotator.context import AnnotatorContext, AnnotatorError, username
from annotator.provider import Provider
from annotator.status import RunStatus, progress_markdown

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
AUTH_MESSAGE = "Sign in with your annotator account."
SHELL_CSS = """
#annot-header { padding: 4px 8px; border-radius: 6px; background: #8881; }
#annot-header p { margin: 2px 0; }
"""

# --------------------------------------------------------------------------------------------
# auth
# --------------------------------------------------------------------------------------------

def _pairs_from_lines(lines: Iterable[str], where: str) -> list[tuple[str, str]]:
    out = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if ":" not in line:
            raise AnnotatorError(f"{where} line {n}: expected 'user:password'")
        user, pw = line.split(":", 1)
        out.append((user.strip(), pw))
    return out


def parse_auth(auth: Any = None, users_file: str | os.PathLike | None = None):
    """Normalise an auth spec to what ``gr.Blocks.launch(auth=...)`` takes.

    Accepts: None; a callable ``(user, password) -> bool``; a ``(user, password)`` tuple; a list
    of tuples or ``"user:password"`` strings; a dict ``{user: password}``; a string
    ``"u1:p1,u2:p2"``; or a users file (path, or ``users_file=``) with one ``user:password`` per
    line (``#`` comments). A password written ``sha256:<hex>`` is compared by its SHA-256 hash.
    Returns None, a callable, or a list of ``(user, password)`` pairs.
    """
    pairs: list[tuple[str, str]] = []
    if users_file is not None:
        pairs += _read_users_file(users_file)
    if auth is None:
        pass
    elif callable(auth):
        if pairs:
            raise AnnotatorError("give either an auth callable or users, not both")
        return auth
    elif isinstance(auth, os.PathLike) or (isinstance(auth, str) and os.path.isfile(auth)):
        pairs += _read_users_file(auth)
    elif isinstance(auth, str):
        pairs += _pairs_from_lines(auth.replace(",", "\n").splitlines(), "auth")
    elif isinstance(auth, dict):
        pairs += [(str(u), str(p)) for u, p in auth.items()]
    elif isinstance(auth, tuple) and len(auth) == 2 and all(isinstance(v, str) for v in auth):
        pairs.append((auth[0], auth[1]))
    elif isinstance(auth, (list, tuple)):
        for item in auth:
            if isinstance(item, str):
                pairs += _pairs_from_lines([item], "auth")
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((str(item[0]), str(item[1])))
            else:
                raise AnnotatorError(f"auth entry {item!r}: expected 'user:password' or (user, password)")
    else:
        raise AnnotatorError(f"unsupported auth spec of type {type(auth).__name__}")
    if not pairs:
        return None
    seen = set()
    for u, p in pairs:
        if not u or not p:
            raise AnnotatorError("auth: user names and passwords must not be empty")
        if u in seen:
            raise AnnotatorError(f"auth: user {u!r} given twice")
        seen.add(u)
    if any(p.startswith("sha256:") for _, p in pairs):
        table = dict(pairs)

        def check(user: str, password: str) -> bool:
            want = table.get(user)
            if want is None:
                return False
            if want.startswith("sha256:"):
                got = "sha256:" + hashlib.sha256(password.encode()).hexdigest()
                return hmac.compare_digest(got.lower(), want.lower())
            return hmac.compare_digest(password, want)

        return check
    return pairs


def _read_users_file(path: str | os.PathLike) -> list[tuple[str, str]]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise AnnotatorError(f"cannot read users file {p}: {e.strerror or e}") from None
    pairs = _pairs_from_lines(text.splitlines(), f"users file {p}")
    if not pairs:
        raise AnnotatorError(f"users file {p} has no 'user:password' lines")
    return pairs


def check_binding(host: str, auth) -> None:
    """Refuse to serve beyond this machine without a login."""
    if host not in LOCAL_HOSTS and not auth:
        raise AnnotatorError(
            f"refusing to bind {host!r} without auth: anyone who can reach it could read images and change "
            f"labels. Pass auth (user:password pairs or a users file), or bind 127.0.0.1.")


# --------------------------------------------------------------------------------------------
# page content
# --------------------------------------------------------------------------------------------

def _bar(frac: float, width: int = 20) -> str:
    k = max(0, min(width, int(round(frac * width))))
    return "█" * k + "░" * (width - k)


def _round_row(ctx: AnnotatorContext) -> dict | None:
    rnd = ctx.shown_round_id()
    if rnd is None:
        return None
    return storage.get_round(ctx.db, rnd)


def _budget_text(r) -> str:
    """A round row's budget for people: '2.2% of pixels' (RA), '40 px per image' (PA), '200 clicks'
    or '30 min of annotation' (over the pool and all rounds; '... per round' for a '/round' budget)."""
    unit = r["budget_unit"] or ""
    per = " per round" if unit.endswith("/round") else ""
    unit = unit.removesuffix("/round")
    if unit == "percent":
        return f"{r['budget_value']:g}% of pixels"
    if unit == "pixels":
        return f"{r['budget_value']:g} px per image"
    if unit == "clicks":
        return f"{r['budget_value']:g} clicks{per}"
    if unit == "seconds":
        return f"{r['budget_value'] / 60:g} min of annotation{per}"
    return "—"


def superpixel_count(ctx: AnnotatorContext, round_id: int, total: int) -> int:
    """How many of a round's ``total`` queries are superpixels (``--unit superpixel``: region queries
    with a stored shape)."""
    return storage.query_units(ctx.db, round_id).get("superpixel", 0) if total else 0


def _queries_noun(ctx: AnnotatorContext, round_id: int) -> str:
    """'superpixel queries' for a round of superpixels only, else 'queries'."""
    total = sum(storage.query_kinds(ctx.db, round_id).values())
    n = superpixel_count(ctx, round_id, total) if total else 0
    return "superpixel queries" if n and n == total else "queries"


def header_markdown(ctx: AnnotatorContext, user: str) -> str:
    r = _round_row(ctx)
    who = f"signed in as **{user}**" + (" · [log out](/logout)" if ctx.auth else "")
    if ctx.status is not None and ctx.status.finished:
        return f"**{ctx.status.snapshot()['phase']}** · {who}"
    if ctx.status is not None and ctx.round_id() is None:   # a running loop between rounds
        done = "" if r is None else f" · round {r['idx']}: {storage.round_progress(ctx.db, r['id'])['done']} queries labeled"
        return f"**The run is working: {ctx.status.snapshot()['phase']}**{done} · {who}"
    if r is None:
        return f"No annotation round yet · {who}"
    p = storage.round_progress(ctx.db, r["id"])
    total, done = p["total"], p["done"]
    frac = done / total if total else 0.0
    mine = p["annotators"].get(user, 0)
    return (f"**Round {r['idx']}** ({r['status']}) · budget {_budget_text(r)} · "
            f"**{done}/{total}** {_queries_noun(ctx, r['id'])} labeled `{_bar(frac)}` {frac * 100:.0f}% · "
            f"pending {p['pending']} · "
            f"in progress {p['leased']} · skipped {p['skipped']} · flagged {p['flagged']} · "
            f"your labels: **{mine}** · {who}")


def annotator_counts(ctx: AnnotatorContext) -> pd.DataFrame:
    rows = storage.annotator_stats(ctx.db, ctx.shown_round_id())
    sec = lambda ms: None if ms is None else round(ms / 1000.0, 1)  # noqa: E731
    return pd.DataFrame(
        [(r["annotator"], r["labels"], r["regions"], r["points"], r["approved"], r["rejected"],
          sec(r["ms_per_region"]), sec(r["ms_per_point"]), r["edits"]) for r in rows],
        columns=["annotator", "labels", "regions", "points", "approved", "rejected", "active s / region",
                 "active s / pixel", "edits"])


def round_markdown(ctx: AnnotatorContext) -> str:
    r = _round_row(ctx)
    if r is None:
        return "No annotation round yet."
    p = storage.round_progress(ctx.db, r["id"])
    kinds = storage.query_kinds(ctx.db, r["id"])
    total = sum(kinds.values())
    nsp = superpixel_count(ctx, r["id"], total) if total else 0
    what = (f"{nsp} superpixel queries (one class each, or mixed)" if nsp and nsp == total else
            (f"{nsp} superpixel, " if nsp else "") + f"{kinds.get('region', 0) - nsp} region and "
            f"{kinds.get('pixel', 0)} pixel queries")
    return (f"### Round {r['idx']} — {r['status']}\n"
            f"Strategy {r['strategy'] or '—'} · budget {_budget_text(r)} · {what}\n\n"
            f"Labeled **{p['done']}/{p['total']}** · pending {p['pending']} · in progress {p['leased']} · "
            f"skipped {p['skipped']} · flagged {p['flagged']} · time spent {p['ms'] / 60000:.1f} min")


def metrics_frames(ctx: AnnotatorContext) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(mIoU by round, per-class IoU by round) in long format for ``gr.LinePlot``; values in %."""
    rows = storage.metrics_table(ctx.db)
    names = ctx.space.names
    m, c = [], []
    for row in rows:
        rnd = 0 if row.get("round") is None else int(row["round"])
        for key, val in row.items():
            if key == "round":
                continue
            lk = key.lower()
            if "miou" in lk and isinstance(val, (int, float)) and math.isfinite(val):
                m.append((rnd, float(val), key))
            elif lk in ("iou", "per_class_iou", "class_iou", "iou_per_class") and isinstance(val, (list, dict)):
                items = val.items() if isinstance(val, dict) else zip(names, val)
                for name, v in items:
                    if isinstance(v, (int, float)) and math.isfinite(v):
                        c.append((rnd, float(v), str(name)))
    dm = pd.DataFrame(m, columns=["round", "IoU", "metric"])
    dc = pd.DataFrame(c, columns=["round", "IoU", "class"])
    for d in (dm, dc):  # fractions -> %
        if len(d) and d["IoU"].abs().max() <= 1.0:
            d["IoU"] = d["IoU"] * 100.0
    return dm, dc


def effort_frame(ctx: AnnotatorContext) -> pd.DataFrame:
    """Target-val mIoU (%) after each round against the cumulative human annotation time (active
    minutes) and the labeled pixels (% of target-train pixels) spent by then; the warm-up is the
    point at 0 minutes and 0 %. One row per evaluated round, for the Round tab's effort plots."""
    metrics = {(0 if r.get("round") is None else int(r["round"])): r for r in storage.metrics_table(ctx.db)}
    effort = {e["round"]: e for e in storage.effort_by_round(ctx.db)}
    rows = []
    for rnd in sorted(metrics):
        miou = metrics[rnd].get("miou")
        if not isinstance(miou, (int, float)) or not math.isfinite(miou):
            continue
        minutes = effort.get(rnd, {}).get("annotation_ms", 0) / 60000.0 if rnd else 0.0
        pct = float(metrics[rnd].get("labeled_pct") or 0.0)
        rows.append((rnd, float(miou), round(minutes, 3), pct))
    return pd.DataFrame(rows, columns=["round", "mIoU", "annotation minutes", "labeled pixels (%)"])


def evaluation_frame(ctx: AnnotatorContext) -> pd.DataFrame:
    """The newest evaluation's per-class IoU (%) on target val, one row per class, with mIoU first;
    empty before the first evaluation. For the run view."""
    rows = [r for r in storage.metrics_table(ctx.db) if isinstance(r.get("iou"), list)]
    if not rows:
        return pd.DataFrame(columns=["class", "IoU (%)"])
    last = rows[-1]
    what = "warm-up" if not last.get("round") else f"round {last['round']}"
    out = [(f"mIoU after {what}", round(float(last.get("miou", float("nan"))), 1))]
    out += [(n, None if v is None else round(100 * float(v), 1)) for n, v in zip(ctx.space.names, last["iou"])]
    return pd.DataFrame(out, columns=["class", "IoU (%)"])


def _lowest(iou: dict[int, float], names: dict[int, str]) -> str:
    """'car (12.5)': the class of lowest IoU in a {trainId: IoU %} dict; '' when empty."""
    if not iou:
        return ""
    c, v = min(iou.items(), key=lambda kv: kv[1])
    return f"{names.get(c, c)} ({v:g})"


def honeypot_frame(ctx: AnnotatorContext) -> pd.DataFrame:
    """Per annotator, how right their answers to honeypots (queries with a known answer,
    ``--honeypot-rate``) are, over all rounds: answered honeypots, known pixels, pixel accuracy (%),
    mIoU (%) and their weakest class. Empty without honeypot answers."""
    names = {c.train_id: c.name for c in ctx.space.classes}
    rows = []
    for s in storage.honeypot_scores(ctx.db):
        rows.append((s["annotator"], s["honeypots"], s["pixels"], s["accuracy"], s["miou"], _lowest(s["iou"], names)))
    return pd.DataFrame(rows, columns=["annotator", "honeypots", "known pixels", "pixel accuracy (%)", "mIoU (%)",
                                       "weakest class (IoU %)"])


def agreement_frame(ctx: AnnotatorContext) -> pd.DataFrame:
    """Per pair of annotators, their agreement on the queries both answered (``--overlap``), over all
    rounds: queries, pixels both labeled, pixel agreement (%), mIoU (%) and the class they agree on
    least. Empty without overlap answers."""
    names = {c.train_id: c.name for c in ctx.space.classes}
    rows = []
    for s in storage.agreement(ctx.db):
        rows.append((" & ".join(s["annotators"]), s["queries"], s["pixels"], s["agreement"], s["miou"],
                     _lowest(s["iou"], names)))
    return pd.DataFrame(rows, columns=["annotators", "queries", "pixels both labeled", "agreement (%)", "mIoU (%)",
                                       "least agreed class (IoU %)"])


def review_frame(ctx: AnnotatorContext, status: str) -> pd.DataFrame:
    rows = storage.review_rows(ctx.db, ctx.shown_round_id(), status)
    cols = ["label", "query", "unit", "image", "annotator", "review", "ms", "created"]
    return pd.DataFrame([[r[k] for k in cols] for r in rows], columns=cols)


def review_preview(ctx: AnnotatorContext, label_id: int) -> tuple[np.ndarray | None, str]:
    """An enlarged picture of one label (region: crop with the patch blended in; pixel: the
    neighbourhood with the point marked) and a line of text."""
    lab = storage.get_label(ctx.db, int(label_id))
    q = storage.get_query(ctx.db, lab["query"])
    name = storage.get_image(ctx.db, q["image"])["name"]
    view = ctx.view(name)
    H, W = view.shape
    pal = ctx.space.palette()
    names = {c.train_id: c.name for c in ctx.space.classes}
    if q["kind"] == "region":
        y0, x0, y1, x1 = q["y0"], q["x0"], q["y1"], q["x1"]
        m = 8
        cy0, cx0, cy1, cx1 = max(0, y0 - m), max(0, x0 - m), min(H, y1 + m), min(W, x1 + m)
        img = view.image[cy0:cy1, cx0:cx1].astype(np.float32)
        patch = lab["patch"] if lab["patch"] is not None else np.full((y1 - y0, x1 - x0), lab["point_class"], np.uint8)
        sub = patch[: min(y1, H) - y0, : min(x1, W) - x0]
        region = img[y0 - cy0:y0 - cy0 + sub.shape[0], x0 - cx0:x0 - cx0 + sub.shape[1]]
        keep = sub != IGNORE
        full = query_shape(q)
        shape = None if full is None else full[: sub.shape[0], : sub.shape[1]]
        if shape is not None:   # a superpixel: its answer holds on its own pixels only
            keep &= shape
            region[~shape] *= 0.45
        region[keep] = 0.35 * region[keep] + 0.65 * pal[sub][keep]
        k = max(1, min(8, 400 // max(img.shape[:2])))
        out = np.repeat(np.repeat(img.astype(np.uint8), k, 0), k, 1)
        out = np.ascontiguousarray(out)
        if shape is not None:
            big = np.zeros(out.shape[:2], np.uint8)
            big[(y0 - cy0) * k:(y0 - cy0 + shape.shape[0]) * k, (x0 - cx0) * k:(x0 - cx0 + shape.shape[1]) * k] = \
                np.repeat(np.repeat(shape.astype(np.uint8), k, 0), k, 1)
            contours, _ = cv2.findContours(big, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(out, contours, -1, (255, 235, 59), 1)
        else:
            cv2.rectangle(out, ((x0 - cx0) * k, (y0 - cy0) * k), ((x1 - cx0) * k - 1, (y1 - cy0) * k - 1),
                          (255, 40, 40), 1)
        values, counts = np.unique(patch if full is None else patch[full], return_counts=True)
        present = ", ".join(f"{names.get(int(v), 'void')}: {int(n)}" for v, n in zip(values, counts))
        what = "region" if shape is None else ("superpixel (one class)" if lab["patch"] is None else
                                               "superpixel (mixed)")
        text = (f"Label {label_id} · {what} query {q['id']} on {name} · by {lab['annotator']} · {lab['review']} · "
                f"{present}")
    else:
        y, x, R = q["y"], q["x"], 16
        cy0, cx0, cy1, cx1 = max(0, y - R), max(0, x - R), min(H, y + R + 1), min(W, x + R + 1)
        k = 8
        out = np.ascontiguousarray(np.repeat(np.repeat(view.image[cy0:cy1, cx0:cx1], k, 0), k, 1))
        cv2.rectangle(out, ((x - cx0) * k - 1, (y - cy0) * k - 1), ((x - cx0 + 1) * k, (y - cy0 + 1) * k),
                      (255, 235, 59), 2)
        cls = lab["point_class"]
        text = (f"Label {label_id} · pixel query {q['id']} at (y={y}, x={x}) on {name} · by {lab['annotator']} · "
                f"{lab['review']} · answer: **{names.get(cls, 'unsure' if cls == IGNORE else cls)}**")
    return out, text


def review_label(ctx: AnnotatorContext, label_id: Any, approve: bool, reviewer: str) -> str:
    """Approve or reject one label of the open round (the Review tab's buttons); the message to
    show. Labels of other rounds, unknown ids and refusals (storage.review) give their message and
    change nothing."""
    try:
        lid = int(label_id)
        if lid != label_id:
            raise ValueError(f"label id must be an integer, got {label_id!r}")
        storage.review(ctx.db, lid, approve, reviewer, round_id=ctx.answer_round())
    except (storage.StoreError, ValueError, TypeError) as e:
        return f"**{e}**"
    return f"Label {lid} {'approved' if approve else 'rejected; its query is back in the queue'}."


# --------------------------------------------------------------------------------------------
# the app
# --------------------------------------------------------------------------------------------

def _label_space(space: LabelSpace | str) -> LabelSpace:
    if isinstance(space, LabelSpace):
        return space
    known = {"cityscapes19": CITYSCAPES19, "synthia16": SYNTHIA16}
    if isinstance(space, str) and space in known:
        return known[space]
    raise AnnotatorError(f"label_space must be a LabelSpace or one of {sorted(known)}, got {space!r}")


def build_app(db_path: str | os.PathLike, provider: Provider, label_space: LabelSpace | str,
              round_id: int | None = None, on_finish: Callable[[int | None], Any] | None = None,
              auth: Any = None, export_dir: str | os.PathLike | None = None,
              status: RunStatus | None = None) -> gr.Blocks:
    """The annotator as a ``gr.Blocks``.

    ``db_path``: the project workdir or its ``project.db``. ``provider``: images, predictions,
    heat and trust maps (:mod:`annotator.provider`). ``round_id``: the round to annotate (None:
    the newest round). ``on_finish(round_id)``: called by "Finish round" (the loop retrains; it
    should return quickly, e.g. by signalling another thread; a returned string is shown).
    ``auth``: see :func:`parse_auth`; kept on the Blocks as ``annotator_auth`` for
    :func:`launch`. ``export_dir``: where "Export" writes (default ``<workdir>/export``).
    ``status``: a running loop's :class:`~annotator.status.RunStatus`; the page then serves only the
    round the loop opened and, while none is open, shows the run's progress (step, count, ETA, loss
    curve, latest per-class IoU), switching to the queries by itself once they exist.
    """
    auth_spec = parse_auth(auth)
    ctx = AnnotatorContext(db_path, provider, _label_space(label_space), round_id=round_id, on_finish=on_finish,
                           auth=bool(auth_spec), status=status)
    out_dir = Path(export_dir) if export_dir is not None else ctx.workdir / "export"

    with gr.Blocks(title="Annotator", analytics_enabled=False) as demo:
        header = gr.Markdown("Loading…", elem_id="annot-header")
        if status is not None:     # the run's progress while no round is open
            with gr.Column(visible=status.open_round is None, elem_id="run-progress") as run_box:
                run_md = gr.Markdown(elem_id="run-step")
                with gr.Row():
                    loss_plot = gr.LinePlot(x="iteration", y="loss", color="term", elem_id="plot-loss", height=260,
                                            title="Training loss (smoothed terms) of the current step")
                    eval_table = gr.Dataframe(interactive=False, elem_id="run-iou", wrap=True,
                                              label="Latest evaluation on target val: IoU per class (%)")
            page_seen = gr.State({})
            timer = gr.Timer(1.0)
        with gr.Tabs(elem_id="annot-tabs") as tabs:
            with gr.Tab("Regions", id="regions", elem_id="tab-regions"):
                rcanvas = region_canvas(ctx)
            with gr.Tab("Pixels", id="pixels", elem_id="tab-pixels"):
                pcanvas = pixel_canvas(ctx)
            with gr.Tab("Review", id="review", elem_id="tab-review"):
                with gr.Row():
                    rv_filter = gr.Radio(["pending", "approved", "rejected", "all"], value="pending", label="Show",
                                         elem_id="review-filter")
                    rv_refresh = gr.Button("Refresh", elem_id="review-refresh", scale=0)
                rv_table = gr.Dataframe(interactive=False, elem_id="review-table", wrap=True)
                with gr.Row():
                    rv_label = gr.Number(value=None, label="Label id (click a row)", precision=0,
                                         elem_id="review-label")
                    rv_approve = gr.Button("Approve", variant="primary", elem_id="review-approve")
                    rv_reject = gr.Button("Reject → back to the queue", variant="stop", elem_id="review-reject")
                rv_info = gr.Markdown(elem_id="review-info")
                rv_preview = gr.Image(label="Label", format="png", interactive=False, elem_id="review-preview",
                                      height=320)
                rv_honeypots = gr.Dataframe(interactive=False, elem_id="honeypot-scores", label="Honeypots: answers "
                                            "to queries with a known answer, per annotator (all rounds)")
                rv_agreement = gr.Dataframe(interactive=False, elem_id="agreement", label="Agreement on queries "
                                            "answered by two annotators (--overlap; where they disagree nothing "
                                            "trains until one answer is approved)")
            with gr.Tab("Round", id="round", elem_id="tab-round"):
                round_md = gr.Markdown(elem_id="round-progress")
                counts = gr.Dataframe(interactive=False, label="Per annotator (this round)", elem_id="annotator-counts")
                with gr.Row():
                    finish_btn = gr.Button("Finish round → retrain", variant="primary", elem_id="finish-round")
                    export_btn = gr.Button(f"Export masks to {out_dir}", elem_id="export-btn")
                    refresh_btn = gr.Button("Refresh", elem_id="round-refresh", scale=0)
                status_md = gr.Markdown(elem_id="round-status")
                export_files = gr.File(file_count="multiple", label="Exported files", elem_id="export-files",
                                       interactive=False)
                with gr.Row():
                    miou_plot = gr.LinePlot(x="round", y="IoU", color="metric", title="mIoU by round (%)",
                                            elem_id="plot-miou", height=280)
                    class_plot = gr.LinePlot(x="round", y="IoU", color="class", title="IoU per class by round (%)",
                                             elem_id="plot-classes", height=280)
                with gr.Row():
                    time_plot = gr.LinePlot(x="annotation minutes", y="mIoU", title="mIoU (%) vs human annotation "
                                            "time (active minutes)", elem_id="plot-miou-time", height=260)
                    pixel_plot = gr.LinePlot(x="labeled pixels (%)", y="mIoU", title="mIoU (%) vs labeled pixels",
                                             elem_id="plot-miou-pixels", height=260)

        # ---- handlers ----
        def refresh_header(request: gr.Request):
            return header_markdown(ctx, username(request))

        def on_load(request: gr.Request):
            user = username(request)
            kinds = storage.query_kinds(ctx.db, ctx.shown_round_id())
            # only switch when the round is pixel-only (switching otherwise would race the user's clicks)
            pixel_only = kinds.get("pixel", 0) and not kinds.get("region", 0)
            return header_markdown(ctx, user), (gr.Tabs(selected="pixels") if pixel_only else gr.update())

        def refresh_round():
            dm, dc = metrics_frames(ctx)
            de = effort_frame(ctx)
            return round_markdown(ctx), annotator_counts(ctx), dm, dc, de, de

        def refresh_review(status):
            return review_frame(ctx, status), honeypot_frame(ctx), agreement_frame(ctx)

        def pick_row(evt: gr.SelectData):
            row = evt.row_value
            return int(row[0]) if row else None

        def show_label(label_id):
            if label_id is None or (isinstance(label_id, float) and math.isnan(label_id)):
                return None, ""
            try:
                return review_preview(ctx, int(label_id))
            except (storage.StoreError, ValueError) as e:
                return None, f"**{e}**"

        def do_review(label_id, ok: bool, status, request):
            if label_id is None:
                return "Pick a label first.", review_frame(ctx, status), header_markdown(ctx, username(request))
            msg = review_label(ctx, label_id, ok, username(request))
            return msg, review_frame(ctx, status), header_markdown(ctx, username(request))

        def finish_round(request: gr.Request):
            rnd = ctx.round_id()
            if ctx.on_finish is None:
                return "No training loop is attached to this annotator (on_finish not set)."
            if rnd is None and ctx.status is not None:
                return "No round is open: the run is working (see the progress above)."
            left = storage.pending_count(ctx.db, rnd) if rnd is not None else 0
            try:
                res = ctx.on_finish(rnd)
            except Exception as e:  # noqa: BLE001 - shown to the user, the page must stay up
                return f"**Finishing the round failed:** {e}"
            extra = f" ({left} queries were still open)" if left else ""
            return (res if isinstance(res, str) and res else
                    f"Round finished by {username(request)}{extra}; the model retrains now.")

        def do_export():
            try:
                man = storage.export(ctx.db, out_dir, ctx.space)
            except storage.StoreError as e:
                return f"**Export failed:** {e}", None
            files = [str(out_dir / (stem + storage.exporter.SUFFIXES[0])) for stem in man["images"]]
            files.append(str(out_dir / "manifest.json"))
            n = len(man["images"])
            return (f"Exported {n} image{'s' if n != 1 else ''} to `{out_dir}` "
                    f"(labelTrainIds, labelIds, color PNGs + manifest.json)."), files

        demo.load(on_load, outputs=[header, tabs])
        if status is not None:
            def tick(seen, request: gr.Request):
                """Once a second: while no round is open show the run's progress; when one opens hide it,
                refresh the header and go to the tab that has the round's work (the canvases ask for it)."""
                snap = status.snapshot()
                busy = snap["open_round"] is None
                evals = sum("iou" in r for r in storage.metrics_table(ctx.db)) if busy else seen.get("evals")
                now = {"busy": busy, "v": snap["version"], "lv": snap["loss_version"], "evals": evals,
                       "opened": not busy and seen.get("busy") is True}   # a round opened while the page waited
                if snap["finished"]:   # the run ended: say so once and stop asking (its server goes away)
                    return (now, gr.Column(visible=True), header_markdown(ctx, username(request)),
                            progress_markdown(snap), gr.skip(), gr.skip(), gr.skip(), gr.Timer(active=False))
                if {**now, "opened": seen.get("opened")} == seen:
                    return {**seen, "opened": False}, *([gr.skip()] * 7)
                switched = seen.get("busy") != busy
                tab = gr.skip()
                if switched and not busy and seen.get("busy"):   # a round opened while this page waited (not
                    # the page's first tick: on_load picks the tab then, and a click must not be undone)
                    kinds = storage.query_kinds(ctx.db, snap["open_round"])
                    tab = gr.Tabs(selected="pixels" if kinds.get("pixel") and not kinds.get("region") else "regions")
                return (now, gr.Column(visible=busy) if switched else gr.skip(),
                        header_markdown(ctx, username(request)),
                        progress_markdown(snap) if busy else gr.skip(),
                        status.loss_frame() if busy and now["lv"] != seen.get("lv") else gr.skip(),
                        evaluation_frame(ctx) if busy and evals != seen.get("evals") else gr.skip(), tab, gr.skip())

            tick_out = [page_seen, run_box, header, run_md, loss_plot, eval_table, tabs, timer]
            def refresh_opened(seen, status_filter):
                """When a round opened while this page waited: its Round and Review tabs, read anew."""
                if not seen.get("opened"):
                    return [gr.skip()] * 9
                return (*refresh_round(), *refresh_review(status_filter))

            opened_out = [round_md, counts, miou_plot, class_plot, time_plot, pixel_plot, rv_table, rv_honeypots,
                          rv_agreement]
            demo.load(tick, inputs=page_seen, outputs=tick_out, show_progress="hidden")
            timer.tick(tick, inputs=page_seen, outputs=tick_out, show_progress="hidden").then(
                refresh_opened, inputs=[page_seen, rv_filter], outputs=opened_out, show_progress="hidden")
        demo.load(refresh_round, outputs=[round_md, counts, miou_plot, class_plot, time_plot, pixel_plot])
        demo.load(refresh_review, inputs=rv_filter, outputs=[rv_table, rv_honeypots, rv_agreement])
        rcanvas.saved(refresh_header, outputs=header, trigger_mode="always_last", show_progress="hidden")
        pcanvas.saved(refresh_header, outputs=header, trigger_mode="always_last", show_progress="hidden")
        rv_filter.change(refresh_review, inputs=rv_filter, outputs=[rv_table, rv_honeypots, rv_agreement])
        rv_refresh.click(refresh_review, inputs=rv_filter, outputs=[rv_table, rv_honeypots, rv_agreement])
        rv_table.select(pick_row, outputs=rv_label).then(show_label, inputs=rv_label, outputs=[rv_preview, rv_info])
        def approve(label_id, status, request: gr.Request):
            return do_review(label_id, True, status, request)

        def reject(label_id, status, request: gr.Request):
            return do_review(label_id, False, status, request)

        rv_approve.click(approve, inputs=[rv_label, rv_filter], outputs=[rv_info, rv_table, header])
        rv_reject.click(reject, inputs=[rv_label, rv_filter], outputs=[rv_info, rv_table, header])
        refresh_btn.click(refresh_round, outputs=[round_md, counts, miou_plot, class_plot, time_plot, pixel_plot])
        finish_btn.click(finish_round, outputs=status_md).then(
            refresh_round, outputs=[round_md, counts, miou_plot, class_plot, time_plot, pixel_plot])
        export_btn.click(do_export, outputs=[status_md, export_files])

    demo.annotator_auth = auth_spec
    demo.annotator_context = ctx
    demo.annotator_export_dir = out_dir
    return demo


def launch(db_path: str | os.PathLike, provider: Provider, label_space: LabelSpace | str,
           round_id: int | None = None, on_finish: Callable | None = None, auth: Any = None,
           host: str = "127.0.0.1", port: int | None = 7860, users_file: str | os.PathLike | None = None,
           block: bool = True, export_dir: str | os.PathLike | None = None, status: RunStatus | None = None,
           **launch_kwargs) -> gr.Blocks:
    """Build and serve the annotator. Binds ``host`` (127.0.0.1 by default); any address other
    than 127.0.0.1/localhost/::1 requires ``auth`` or ``users_file`` (:class:`AnnotatorError`
    otherwise). ``block=False`` returns once the server runs (``demo.close()`` stops it)."""
    auth_spec = parse_auth(auth, users_file)
    check_binding(host, auth_spec)
    demo = build_app(db_path, provider, label_space, round_id=round_id, on_finish=on_finish, export_dir=export_dir,
                     status=status)
    ctx = demo.annotator_context
    ctx.auth = bool(auth_spec)
    demo.annotator_auth = auth_spec
    out_dir = demo.annotator_export_dir
    kwargs = dict(server_name=host, server_port=port, auth=auth_spec, auth_message=AUTH_MESSAGE,
                  prevent_thread_lock=not block, ssr_mode=False, quiet=True, show_error=True,
                  allowed_paths=[str(out_dir)], footer_links=[], css=SHELL_CSS)
    kwargs.update(launch_kwargs)
    demo.queue(default_concurrency_limit=4)
    demo.launch(**kwargs)
    return demo
