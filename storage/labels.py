"""Labels: idempotent writes (one transaction with the query's status), edit history, review,
and the one function that composes an image's label mask from stored labels.

A label answers one query. For a ``region`` query it is a class patch covering the box: uint8
trainIds, shape ``(y1-y0, x1-x0)``, 255 = left unlabeled, stored as PNG bytes (or a single
``point_class`` filling the whole box). For a ``pixel`` query it is ``point_class``.
"""
from __future__ import annotations

import time
from typing import Any, Collection

import numpy as np
from sqlite_utils import Database

from core.data.labels import IGNORE
from storage.db import InvalidInput, LeaseError, StoreError, decode_patch, encode_patch, immediate, now_iso  # noqa: F401
from storage.queue import _AVAILABLE, _UNIT_SQL, _check_not_held_by_other, image_id


class AnswerRefused(LeaseError):
    """The caller may not answer (or set aside) this query now: it is not theirs, or not of the
    open round (see :func:`answer_refusal`). The message says why and is meant for the annotator."""


def _check_class(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= 255:
        raise InvalidInput(f"{what} must be an integer trainId 0..255, got {value!r}")
    return int(value)


def _prepare(q: tuple, patch: np.ndarray | None, point_class: int | None) -> tuple[bytes | None, int | None]:
    qid, kind, y0, x0, y1, x1 = q
    if kind == "pixel":
        if patch is not None:
            raise InvalidInput(f"query {qid} is a pixel query: give point_class, not a patch")
        return None, _check_class(point_class, f"query {qid}: the class")
    if (patch is None) == (point_class is None):
        raise InvalidInput(f"query {qid}: give exactly one of patch or point_class")
    if point_class is not None:  # a region answered with a single class
        return None, _check_class(point_class, f"query {qid}: point_class")
    patch = np.asarray(patch)
    shape = (y1 - y0, x1 - x0)
    if patch.ndim != 2 or patch.shape != shape:
        raise InvalidInput(f"query {qid}: patch shape {patch.shape} does not match its box {shape} (h, w)")
    if patch.dtype != np.uint8:
        if not np.issubdtype(patch.dtype, np.integer) or patch.min() < 0 or patch.max() > 255:
            raise InvalidInput(f"query {qid}: patch must hold uint8 trainIds (255 = unlabeled)")
        patch = patch.astype(np.uint8)
    return encode_patch(patch), None


_LABEL_COLS = "id, query, annotator, patch, point_class, ms, created, review, reviewer, reviewed, edits, prefill"


def _query_row(conn, query_id: int) -> tuple:
    q = conn.execute("SELECT id, kind, y0, x0, y1, x1 FROM queries WHERE id = ?", (query_id,)).fetchone()
    if q is None:
        raise InvalidInput(f"unknown query id {query_id}")
    return q


def _check_classes(qid: int, blob_patch: np.ndarray | None, cls: int | None, classes: Collection[int]) -> None:
    """InvalidInput when an answer holds a class id outside ``classes``."""
    if cls is not None and cls not in classes:
        raise InvalidInput(f"query {qid}: unknown class id {cls} (not in the label space)")
    if blob_patch is not None:
        bad = sorted(set(np.unique(blob_patch).tolist()) - set(classes))
        if bad:
            raise InvalidInput(f"query {qid}: unknown class ids {bad} (not in the label space)")


def _write(conn, query_id: int, annotator: str, blob: bytes | None, cls: int | None, ms: int, edits: int = 0,
           prefill: str | None = None) -> int:
    """Upsert ``annotator``'s label (history kept) and mark the query done; inside the caller's
    immediate transaction. A changed answer adds its ``ms`` (active milliseconds) and ``edits`` to the
    label's totals; a re-sent identical answer changes nothing. Returns the label id."""
    t = now_iso()
    old = conn.execute(f"SELECT {_LABEL_COLS} FROM labels WHERE query = ? AND annotator = ?",
                       (query_id, annotator)).fetchone()
    if old is None:
        label_id = conn.execute(
            "INSERT INTO labels (query, annotator, patch, point_class, ms, created, review, edits, prefill) "
            "VALUES (?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
            (query_id, annotator, blob, cls, ms, t, edits, prefill)).lastrowid
    else:
        label_id = old[0]
        same = old[3] == blob and old[4] == cls and old[7] != "rejected"
        if not same:
            conn.execute(
                "INSERT INTO label_history (label, query, annotator, patch, point_class, ms, created, "
                "review, reviewer, reviewed, edits, prefill, replaced) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (*old, t))
            conn.execute(
                "UPDATE labels SET patch = ?, point_class = ?, ms = ?, created = ?, review = 'pending', "
                "reviewer = NULL, reviewed = NULL, edits = ?, prefill = coalesce(?, prefill) WHERE id = ?",
                (blob, cls, (old[5] or 0) + ms, t, (old[10] or 0) + edits, prefill, label_id))
    _settle(conn, query_id, annotator)
    return label_id


def _live_answers(conn, query_id: int) -> tuple[int, int]:
    """(live = not rejected answers of the query, answers it needs)."""
    live = conn.execute("SELECT count(*) FROM labels WHERE query = ? AND review != 'rejected'", (query_id,)).fetchone()[0]
    needed = conn.execute("SELECT answers_needed FROM queries WHERE id = ?", (query_id,)).fetchone()[0]
    return live, needed


def _settle(conn, query_id: int, by: str, reason: str | None = None) -> None:
    """The query's status from its live answers: 'done' once it has the answers it needs, else
    'pending' (lease cleared: the next annotator who has not answered it may take it)."""
    live, needed = _live_answers(conn, query_id)
    conn.execute("UPDATE queries SET status = ?, status_by = ?, reason = ?, lease_owner = NULL, lease_expiry = NULL "
                 "WHERE id = ?", ("done" if live >= needed else "pending", by, reason, query_id))


def _answered_by_other(conn, query_id: int, annotator: str) -> str | None:
    """Who else answered the query (it has all the answers it needs and none is ``annotator``'s), or None."""
    status, by = conn.execute("SELECT status, status_by FROM queries WHERE id = ?", (query_id,)).fetchone()
    if status != "done" or by is None or by == annotator or _mine(conn, query_id, annotator):
        return None
    return by


def _mine(conn, query_id: int, annotator: str) -> bool:
    return conn.execute("SELECT 1 FROM labels WHERE query = ? AND annotator = ? AND review != 'rejected'",
                        (query_id, annotator)).fetchone() is not None


def save_label(db: Database, query_id: int, annotator: str, patch: np.ndarray | None = None,
               point_class: int | None = None, ms: int = 0, edits: int = 0, prefill: str | None = None) -> int:
    """Store ``annotator``'s answer to a query and mark the query done, in ONE transaction;
    returns the label id. For trusted writers (the oracle, scripts); the annotator's canvases
    go through :func:`submit_label`, which also requires the caller to hold the query.

    Idempotent: the same query + annotator always maps to one label row. Re-sending the same
    answer changes nothing; a different answer (an edit) replaces the row, resets its review to
    pending, and keeps the old version in ``label_history``. Raises :class:`LeaseError` when
    another annotator holds a live lease on the query, and :class:`AnswerRefused` (a LeaseError)
    when another annotator already answered it: a late answer never replaces someone else's
    (it is refused and nothing is stored), so a query has at most one live answer.
    """
    if not annotator:
        raise InvalidInput("annotator name must not be empty")
    blob, cls = _prepare(_query_row(db.conn, query_id), patch, point_class)
    ms = max(0, int(ms or 0))
    with immediate(db) as conn:
        _check_not_held_by_other(conn, query_id, annotator)
        other = _answered_by_other(conn, query_id, annotator)
        if other is not None:
            raise AnswerRefused(f"query {query_id} was already answered by {other!r}; "
                                f"a late answer does not replace it")
        return _write(conn, query_id, annotator, blob, cls, ms, _count(edits, "edits"), prefill)


def import_labels(db: Database, rows: list[dict], round_id: int, classes: Collection[int]) -> dict:
    """Store answers read from another labeling tool (``storage.interchange``), ALL OR NOTHING: rows
    ``{"query_id", "annotator", "patch" | "point_class"[, "prefill"]}`` for queries of round ``round_id``. Each row
    passes the browser's checks: the query is of that round, the answer's shape fits its box, every
    class id is in ``classes`` (trainIds + 255); a query someone is labeling now (a live lease of
    another annotator) refuses the whole import. A query already answered by another annotator keeps
    that answer (``kept``); the same answer imported again changes nothing (``unchanged``; one a
    reviewer rejected stays rejected), so an import can be repeated. A closed round refuses. Returns {"stored", "unchanged", "kept"}; InvalidInput (nothing stored)
    for a row that fails a check, AnswerRefused/LeaseError likewise."""
    prepared = []
    for r in rows:
        qid = int(r["query_id"])
        q = _query_row(db.conn, qid)
        blob, cls = _prepare(q, r.get("patch"), r.get("point_class"))
        _check_classes(qid, None if r.get("patch") is None else np.asarray(r["patch"]), cls, classes)
        prepared.append((qid, str(r["annotator"]), blob, cls, r.get("prefill")))
    counts = {"stored": 0, "unchanged": 0, "kept": 0}
    with immediate(db) as conn:
        for qid, who, blob, cls, prefill in prepared:
            rnd, rstatus = conn.execute("SELECT q.round, r.status FROM queries q LEFT JOIN rounds r ON r.id = q.round "
                                        "WHERE q.id = ?", (qid,)).fetchone()
            if rnd != round_id:
                raise InvalidInput(f"query {qid} is not a query of the round being imported")
            if rstatus == "closed":
                raise InvalidInput("the round was finished ('Finish round'): it takes no more answers")
            _check_not_held_by_other(conn, qid, who)
            if _answered_by_other(conn, qid, who) is not None:
                counts["kept"] += 1
                continue
            old = conn.execute("SELECT patch, point_class, review FROM labels WHERE query = ? AND annotator = ?",
                               (qid, who)).fetchone()
            if old is not None and old[0] == blob and old[1] == cls:   # (a rejected one stays rejected)
                counts["unchanged"] += 1
                continue
            _write(conn, qid, who, blob, cls, 0, prefill=prefill)
            counts["stored"] += 1
    return counts


def approved_answers(db: Database, before_round: int) -> list[dict]:
    """Answers a reviewer approved in rounds before ``before_round`` (a ``rounds.id``; same run), of
    real queries: {"name", "kind", "y0", "x0", "y1", "x1", "y", "x", "patch" (array or None),
    "point_class"}; the known answers of honeypots on a target without ground truth."""
    rows = list(db.query(
        "SELECT i.name, q.kind, q.y0, q.x0, q.y1, q.x1, q.y, q.x, l.patch, l.point_class FROM labels l "
        "JOIN queries q ON q.id = l.query JOIN images i ON i.id = q.image JOIN rounds r ON r.id = q.round "
        "WHERE l.review = 'approved' AND q.honeypot = 0 AND r.run IS (SELECT run FROM rounds WHERE id = ?) "
        "AND r.idx < (SELECT idx FROM rounds WHERE id = ?) ORDER BY l.id", [before_round, before_round]))
    for r in rows:
        r["patch"] = decode_patch(r["patch"]) if r["patch"] is not None else None
    return rows


def _class_iou(a: np.ndarray, b: np.ndarray) -> tuple[dict[int, float], float | None]:
    """Per-class IoU (%) of two equally long trainId arrays over the classes either holds (255 is no
    class), and their mean (None without classes); one decimal."""
    iou = {int(c): round(100.0 * np.sum((a == c) & (b == c)) / np.sum((a == c) | (b == c)), 1)
           for c in sorted((set(a.tolist()) | set(b.tolist())) - {IGNORE})}
    return iou, (round(float(np.mean(list(iou.values()))), 1) if iou else None)


def agreement(db: Database, round_id: int | None = None) -> list[dict]:
    """How much annotators agree on the queries both answered (overlap, ``--overlap``), over all rounds
    or one: per pair {"annotators" [a, b], "queries", "pixels" (labeled by both), "agreement" (% of
    those pixels with the same class), "miou" (%), "iou" {trainId: %}} (IoU of one annotator's pixels
    of a class against the other's), most queries first."""
    w, args = ("", []) if round_id is None else (" AND q.round = ?", [round_id])
    rows = list(db.query(
        "SELECT l.query, l.annotator, q.kind, q.y0, q.x0, q.y1, q.x1, l.patch, l.point_class FROM labels l "
        "JOIN queries q ON q.id = l.query WHERE l.review != 'rejected' AND q.honeypot = 0 AND l.query IN "
        f"(SELECT query FROM labels WHERE review != 'rejected' GROUP BY query HAVING count(*) > 1){w} "
        "ORDER BY l.query, l.annotator", args))
    groups: dict[int, list[dict]] = {}
    for r in rows:
        r["patch"] = decode_patch(r["patch"]) if r["patch"] is not None else None
        groups.setdefault(r["query"], []).append(r)
    pairs: dict[tuple[str, str], dict] = {}
    for group in groups.values():
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                a, b = _answer_array(group[i]).ravel(), _answer_array(group[j]).ravel()
                keep = (a != IGNORE) & (b != IGNORE)
                s = pairs.setdefault((group[i]["annotator"], group[j]["annotator"]),
                                     {"queries": 0, "a": [], "b": []})
                s["queries"] += 1
                s["a"].append(a[keep])
                s["b"].append(b[keep])
    out = []
    for (x, y), s in pairs.items():
        a, b = np.concatenate(s["a"]), np.concatenate(s["b"])
        iou, miou = _class_iou(a, b)
        out.append({"annotators": [x, y], "queries": s["queries"], "pixels": int(a.size),
                    "agreement": round(100.0 * float(np.mean(a == b)), 1) if a.size else None,
                    "miou": miou, "iou": iou})
    return sorted(out, key=lambda s: (-s["queries"], s["annotators"]))


def honeypot_scores(db: Database, round_id: int | None = None) -> list[dict]:
    """How right each annotator is on honeypots (queries with a known answer), over all rounds or
    one: per annotator {"annotator", "honeypots" (answered), "pixels" (known pixels they answered),
    "accuracy" (% of those pixels answered with the known class; 'void'/'unsure' counts as wrong),
    "miou" (% over the classes in the truth or the answers), "iou" {trainId: %}}, best accuracy
    first. Rejected answers are left out."""
    w, args = ("", []) if round_id is None else (" AND q.round = ?", [round_id])
    per: dict[str, dict] = {}
    for who, kind, truth, truth_class, patch, cls in db.execute(
            "SELECT l.annotator, q.kind, q.truth, q.truth_class, l.patch, l.point_class FROM labels l "
            f"JOIN queries q ON q.id = l.query WHERE q.honeypot = 1 AND l.review != 'rejected'{w} ORDER BY l.id",
            args).fetchall():
        if kind == "region":
            t = decode_patch(truth).ravel()
            a = (decode_patch(patch) if patch is not None else np.full(t.size, cls, np.uint8)).ravel()
        else:
            t, a = np.array([truth_class]), np.array([cls])
        keep = t != IGNORE
        s = per.setdefault(who, {"annotator": who, "honeypots": 0, "truth": [], "answer": []})
        s["honeypots"] += 1
        s["truth"].append(t[keep].astype(np.int64))
        s["answer"].append(a[keep].astype(np.int64))
    out = []
    for s in per.values():
        t, a = np.concatenate(s.pop("truth")), np.concatenate(s.pop("answer"))
        iou, miou = _class_iou(t, a)
        s.update(pixels=int(t.size), accuracy=round(100.0 * float(np.mean(t == a)), 1) if t.size else None,
                 miou=miou, iou=iou)
        out.append(s)
    return sorted(out, key=lambda s: (-(s["accuracy"] or 0), s["annotator"]))


def _count(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidInput(f"{what} must be a non-negative integer, got {value!r}")
    return int(value)


def _refusal(conn, query_id: int, annotator: str, round_id: int | None, kind: str | None,
             held_only: bool) -> str | None:
    row = conn.execute(
        "SELECT q.kind, q.round, q.status, q.lease_owner, q.lease_expiry, q.status_by, q.reason, r.idx, r.status "
        "FROM queries q LEFT JOIN rounds r ON r.id = q.round WHERE q.id = ?", (query_id,)).fetchone()
    if row is None:
        raise InvalidInput(f"unknown query id {query_id}")
    qkind, qround, status, owner, expiry, by, reason, ridx, rstatus = row
    if rstatus == "closed":
        return f"round {ridx} was finished ('Finish round'): its queries take no more answers; nothing was stored"
    if kind is not None and qkind != kind:
        return f"query {query_id} is a {qkind} query, not a {kind} query"
    if round_id is not None and qround != round_id:
        open_idx = conn.execute("SELECT idx FROM rounds WHERE id = ?", (round_id,)).fetchone()
        return (f"query {query_id} belongs to round {ridx if ridx is not None else '(none)'}, not to the open "
                f"round {open_idx[0] if open_idx else round_id}: only the open round's queries can be answered")
    if status == "leased" and owner == annotator:
        return None  # theirs (a lease that ran out still is, until someone else leases the query)
    if status in ("pending", "leased", "done") and not held_only and _mine(conn, query_id, annotator):
        return None  # their own answer stands: they may edit it (also while an overlap query waits for more)
    if status == "leased" and expiry is not None and expiry >= time.time():
        return (f"query {query_id} is not assigned to you: it is leased to {owner!r} until "
                f"{time.strftime('%H:%M:%S', time.localtime(expiry))}")
    if status == "done":
        if held_only and _mine(conn, query_id, annotator):
            return f"query {query_id} is already answered"
        return f"query {query_id} was already answered by {by!r}" if by is not None else \
            f"query {query_id} was already answered"
    if status in ("skipped", "flagged"):
        return f"query {query_id} was {status} by {by!r} ({reason})"
    return (f"query {query_id} is not assigned to you (it was never leased to you, or your lease ran out "
            f"and was given up)")


def answer_refusal(db: Database, query_id: int, annotator: str, round_id: int | None = None,
                   kind: str | None = None, held_only: bool = False) -> str | None:
    """THE rule for what an annotator may answer now: None when ``annotator`` may answer query
    ``query_id``, else a one-line message for them saying why not.

    They may when the query is of ``kind`` (when given), belongs to round ``round_id`` (the open
    round the annotator serves, when given), and either they hold its lease (live, or run out but
    not leased by anyone since) or they answered it themselves and their answer stands (not
    rejected): editing one's own answer (the region canvas's Previous, a pixel answered again).
    Everything else is refused: a query of another round, one never leased to them (pending), one
    leased to or answered by someone else (including a late save after their lease ran out and
    the query moved on), one skipped or flagged. A query a reviewer rejected goes back to the
    queue (pending) and is answerable by whoever leases it next. ``held_only``: only a held
    lease counts (for skip/flag: an answered query cannot be set aside).
    :class:`InvalidInput` for an unknown query id."""
    return _refusal(db.conn, int(query_id), annotator, round_id, kind, held_only)


def submit_label(db: Database, query_id: int, annotator: str, round_id: int | None, *, kind: str | None = None,
                 patch: np.ndarray | None = None, point_class: int | None = None, ms: int = 0,
                 classes: Collection[int] | None = None, edits: int = 0, prefill: str | None = None) -> int:
    """An annotator's save: :func:`save_label` (idempotent, history kept) for a query that
    :func:`answer_refusal` allows, checked and written in ONE transaction; returns the label id.

    ``round_id``: the open round (queries of other rounds are refused). ``kind``: 'region' or
    'pixel' (the canvas's). ``classes``: the class ids an answer may hold (the label space's
    trainIds, plus 255 where "void"/"unsure" is allowed); a patch must be uint8-compatible
    integers, a point class an integer (3.7, True, "3" are refused, never rounded).
    Raises :class:`AnswerRefused` (the caller may not answer this query now) or
    :class:`InvalidInput` (a malformed answer); nothing is stored then."""
    if not annotator:
        raise InvalidInput("annotator name must not be empty")
    q = _query_row(db.conn, query_id)
    if kind is not None and q[1] != kind:
        raise InvalidInput(f"query {query_id} is a {q[1]} query, not a {kind} query")
    blob, cls = _prepare(q, patch, point_class)
    if classes is not None:
        _check_classes(query_id, None if patch is None else np.asarray(patch), cls, classes)
    ms = max(0, int(ms or 0))
    with immediate(db) as conn:
        refusal = _refusal(conn, query_id, annotator, round_id, kind, held_only=False)
        if refusal is not None:
            raise AnswerRefused(refusal)
        return _write(conn, query_id, annotator, blob, cls, ms, _count(edits, "edits"), prefill)


def review(db: Database, label_id: int, approve: bool, reviewer: str, round_id: int | None = None) -> None:
    """Approve or reject a label. Rejecting drops it from masks and exports and puts its query
    back to pending (unless another non-rejected label answers that query), where whoever leases
    it next may answer it. Approving a label that was rejected takes it back only while its query
    is still waiting (pending, or a lease that ran out) and marks the query done by that label's
    annotator again; once someone else answered or holds the query it is refused, so a query never
    has two live answers. ``round_id``: refuse labels of other rounds (the annotator reviews its
    open round only). :class:`InvalidInput` for a refusal or an unknown label."""
    with immediate(db) as conn:
        row = conn.execute("SELECT l.query, l.annotator, l.review, q.round, r.idx FROM labels l "
                           "JOIN queries q ON q.id = l.query LEFT JOIN rounds r ON r.id = q.round WHERE l.id = ?",
                           (label_id,)).fetchone()
        if row is None:
            raise InvalidInput(f"unknown label id {label_id}")
        qid, annotator, state, qround, ridx = row
        if conn.execute("SELECT status FROM rounds WHERE id = ?", (qround,)).fetchone() == ("closed",):
            raise InvalidInput(f"round {ridx} was finished ('Finish round'): its labels can no longer be reviewed")
        if round_id is not None and qround != round_id:
            raise InvalidInput(f"label {label_id} belongs to round {ridx}, not to the open round: "
                               f"only the open round's labels can be reviewed here")
        if approve and state == "rejected":
            live, needed = _live_answers(conn, qid)
            other = conn.execute("SELECT annotator FROM labels WHERE query = ? AND id != ? AND review != 'rejected'",
                                 (qid, label_id)).fetchone()
            if live >= needed:
                raise InvalidInput(f"label {label_id} cannot be approved: query {qid} was answered again by "
                                   f"{other[0]!r} after it was rejected; review that label instead")
            taken = conn.execute(f"SELECT status, lease_owner FROM queries WHERE id = ? AND NOT {_AVAILABLE} "
                                 "AND lease_owner IS NOT ?", (qid, time.time(), annotator)).fetchone()
            if taken is not None:
                raise InvalidInput(f"label {label_id} cannot be approved: query {qid} is {taken[0]}"
                                   + (f" by {taken[1]!r}" if taken[1] else "") + " since it was rejected")
        conn.execute("UPDATE labels SET review = ?, reviewer = ?, reviewed = ? WHERE id = ?",
                     ("approved" if approve else "rejected", reviewer, now_iso(), label_id))
        if approve and state == "rejected":
            _settle(conn, qid, annotator)
        elif not approve and state != "rejected":
            live, needed = _live_answers(conn, qid)
            if live < needed:   # back in the queue for one more answer
                _settle(conn, qid, reviewer, "rejected in review")


def get_label(db: Database, label_id: int, decode: bool = True) -> dict:
    """A labels row as a dict; ``patch`` decoded to an array when ``decode``."""
    rows = list(db.query(f"SELECT {_LABEL_COLS} FROM labels WHERE id = ?", [label_id]))
    if not rows:
        raise InvalidInput(f"unknown label id {label_id}")
    row = rows[0]
    if decode and row["patch"] is not None:
        row["patch"] = decode_patch(row["patch"])
    return row


def label_versions(db: Database, label_id: int, decode: bool = True) -> list[dict]:
    """Earlier versions of a label from ``label_history``, oldest first (the current one is
    :func:`get_label`)."""
    rows = list(db.query("SELECT * FROM label_history WHERE label = ? ORDER BY id", [label_id]))
    for r in rows:
        if decode and r["patch"] is not None:
            r["patch"] = decode_patch(r["patch"])
    return rows


def image_labels(db: Database, image: int | str, include_rejected: bool = False) -> list[dict]:
    """Labels of one image joined with their query geometry, in composition order (oldest
    first); answers to honeypots are left out (they train nothing and are not exported). Each dict: label id, query, annotator, kind, y0,x0,y1,x1, y,x, patch (array or None),
    point_class, ms (active milliseconds), edits, prefill, created, review, round (round number or None)."""
    img = image_id(db, image)
    where = ("" if include_rejected else " AND l.review != 'rejected'") + " AND q.honeypot = 0"
    rows = list(db.query(
        "SELECT l.id, l.query, l.annotator, q.kind, q.y0, q.x0, q.y1, q.x1, q.y, q.x, q.shape, l.patch, l.point_class, "
        "l.ms, l.edits, l.prefill, l.created, l.review, r.idx AS round FROM labels l JOIN queries q ON q.id = l.query "
        f"LEFT JOIN rounds r ON r.id = q.round WHERE q.image = ?{where} ORDER BY l.created, l.id", [img]))
    for r in rows:
        if r["patch"] is not None:
            r["patch"] = decode_patch(r["patch"])
        if r["shape"] is not None:
            r["shape"] = decode_patch(r["shape"]).astype(bool)
    return rows


def _answer_array(r: dict) -> np.ndarray:
    """A label's answer as an array: the patch, or its class (pixel query: shape (1, 1))."""
    if r["kind"] == "pixel":
        return np.full((1, 1), r["point_class"], np.uint8)
    if r["patch"] is not None:
        return r["patch"]
    return np.full((r["y1"] - r["y0"], r["x1"] - r["x0"]), r["point_class"], np.uint8)


def _consensus(rows: list[dict]) -> list[dict]:
    """One answer per query (overlap): the one a reviewer approved when exactly one is approved, else
    per pixel the value more than half of the answers give (255 where there is no majority: two
    answers that disagree train nothing there until a reviewer decides). Kept at the place of the
    query's newest answer in the composition order."""
    groups: dict[int, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["query"], []).append(r)
    out = []
    for r in rows:
        group = groups[r["query"]]
        if r is not group[-1]:
            continue
        approved = [g for g in group if g["review"] == "approved"]
        if len(group) == 1 or len(approved) == 1:
            out.append(approved[0] if approved else r)
            continue
        stack = np.stack([_answer_array(g) for g in group])
        vote = np.full(stack.shape[1:], IGNORE, np.uint8)
        for v in stack:
            win = (stack == v).sum(0) * 2 > len(group)
            vote[win] = v[win]
        out.append({**r, "patch": None if r["kind"] == "pixel" else vote, "point_class": int(vote[0, 0])})
    return out


def _compose(rows: list[dict], height: int, width: int) -> np.ndarray:
    mask = np.full((height, width), IGNORE, np.uint8)
    for r in _consensus(rows):
        if r["kind"] == "pixel":
            if 0 <= r["y"] < height and 0 <= r["x"] < width:
                mask[r["y"], r["x"]] = r["point_class"]
            continue
        y0, x0 = r["y0"], r["x0"]
        y1, x1 = min(r["y1"], height), min(r["x1"], width)
        if y0 >= y1 or x0 >= x1:
            continue
        dst = mask[y0:y1, x0:x1]
        src = np.full((y1 - y0, x1 - x0), r["point_class"], np.uint8) if r["patch"] is None \
            else r["patch"][: y1 - y0, : x1 - x0]
        keep = src != IGNORE if r["patch"] is not None else np.ones(src.shape, bool)
        if r.get("shape") is not None:   # a superpixel: its answer holds for its own pixels only
            keep &= r["shape"][: y1 - y0, : x1 - x0]
        dst[keep] = src[keep]
    return mask


def _extent(rows: list[dict]) -> tuple[int, int]:
    h = w = 0
    for r in rows:
        if r["kind"] == "pixel":
            h, w = max(h, r["y"] + 1), max(w, r["x"] + 1)
        else:
            h, w = max(h, r["y1"]), max(w, r["x1"])
    return h, w


def _size(db: Database, img: int, height: int | None, width: int | None) -> tuple[int, int]:
    if height is None or width is None:
        h, w = db.execute("SELECT height, width FROM images WHERE id = ?", (img,)).fetchone()
        height = h if height is None else height
        width = w if width is None else width
    if height is None or width is None:
        raise InvalidInput(f"image id {img}: height/width unknown; pass them or store them with add_images")
    return int(height), int(width)


def label_mask(db: Database, image: int | str, height: int | None = None, width: int | None = None) -> np.ndarray:
    """The image's (H,W) uint8 trainId mask composed from its stored, non-rejected labels;
    255 = unlabeled. Later labels overwrite earlier ones where they overlap; a patch's 255
    pixels leave what is below. ``height``/``width`` default to the stored image size;
    geometry outside them is clipped. This is the mask the trainer uses."""
    img = image_id(db, image)
    h, w = _size(db, img, height, width)
    return _compose(image_labels(db, img), h, w)


def labeled_pixel_count(db: Database) -> dict[str, int]:
    """``{image name: labeled pixels}`` for every image with non-rejected labels (overlaps
    counted once; images with no stored size are measured by their labels' extent)."""
    out: dict[str, int] = {}
    for img, name, h, w in db.execute(
            "SELECT DISTINCT i.id, i.name, i.height, i.width FROM images i JOIN queries q ON q.image = i.id "
            "JOIN labels l ON l.query = q.id WHERE l.review != 'rejected' AND q.honeypot = 0 ORDER BY i.id").fetchall():
        rows = image_labels(db, img)
        if h is None or w is None:
            h, w = _extent(rows)
        out[name] = int(np.count_nonzero(_compose(rows, h, w) != IGNORE))
    return out


def answered_mask(db: Database, image: int | str, height: int, width: int) -> np.ndarray:
    """bool (height, width): pixels inside the image's answered ('done') queries, whatever the answer
    (a region answered as void is still spent: selection never picks inside it again)."""
    m = np.zeros((height, width), bool)
    for q in db.query("SELECT kind, y0, x0, y1, x1, y, x, shape FROM queries WHERE image = ? AND status = 'done' "
                      "AND honeypot = 0", [image_id(db, image)]):   # honeypots do not spend the budget
        if q["kind"] == "region" and q["shape"] is not None:   # a superpixel: its own pixels
            dst = m[q["y0"]:q["y1"], q["x0"]:q["x1"]]
            dst |= decode_patch(q["shape"]).astype(bool)[:dst.shape[0], :dst.shape[1]]
        elif q["kind"] == "region":
            m[q["y0"]:q["y1"], q["x0"]:q["x1"]] = True
        else:
            m[q["y"], q["x"]] = True
    return m


def answer_of(db: Database, query_id: int, annotator: str, include_rejected: bool = False) -> dict | None:
    """``annotator``'s label of a query as ``{"id", "patch" (decoded or None), "point_class", "review"}``,
    or None; rejected labels only with ``include_rejected``."""
    rows = list(db.query("SELECT id, patch, point_class, review FROM labels WHERE query = ? AND annotator = ?"
                         + ("" if include_rejected else " AND review != 'rejected'"), [query_id, annotator]))
    if not rows:
        return None
    row = rows[0]
    row["patch"] = decode_patch(row["patch"]) if row["patch"] is not None else None
    return row


def image_points(db: Database, annotator: str, image: int | str, round_id: int | None = None) -> list[dict]:
    """The pixel queries of ``image`` (in ``round_id``) that ``annotator`` works on: leased to them or
    answered by them, ordered by id (the point index), each ``{"id", "y", "x", "status", "answer"}``
    (``answer``: their class, None while unanswered)."""
    rsql, args = (" AND q.round = ?", [round_id]) if round_id is not None else ("", [])
    return list(db.query(
        "SELECT q.id, q.y, q.x, q.status, l.point_class AS answer FROM queries q "
        "LEFT JOIN labels l ON l.query = q.id AND l.annotator = ? AND l.review != 'rejected' "
        "WHERE q.kind = 'pixel' AND (q.lease_owner = ? AND q.status = 'leased' OR l.id IS NOT NULL) "
        "AND q.image = ?" + rsql + " ORDER BY q.id", [annotator, annotator, image_id(db, image), *args]))


def review_rows(db: Database, round_id: int | None = None, status: str = "pending", limit: int = 200) -> list[dict]:
    """Labels to review, newest first: ``{"label", "query", "kind", "unit" ('square' | 'superpixel' |
    'pixel'), "image", "annotator", "review", "ms" (milliseconds spent), "created" (ISO time)}``; ``status``
    'pending' | 'approved' | 'rejected' | 'all'."""
    where, args = [], []
    if round_id is not None:
        where.append("q.round = ?")
        args.append(round_id)
    if status and status != "all":
        where.append("l.review = ?")
        args.append(status)
    w = (" WHERE " + " AND ".join(where)) if where else ""
    return list(db.query(
        f"SELECT l.id AS label, l.query, q.kind, {_UNIT_SQL} AS unit, i.name AS image, l.annotator, l.review, l.ms, "
        "l.created "
        "FROM labels l JOIN queries q ON q.id = l.query JOIN images i ON i.id = q.image" + w +
        " ORDER BY l.created DESC, l.id DESC LIMIT ?", [*args, int(limit)]))


def annotator_stats(db: Database, round_id: int | None = None) -> list[dict]:
    """Per annotator (by name): ``{"annotator", "labels", "regions", "points", "approved", "rejected",
    "avg_ms", "ms_per_region", "ms_per_point", "edits"}`` over the labels of ``round_id`` (every round
    when None); times are active milliseconds (None when the annotator has no label of that kind)."""
    rsql, args = ("WHERE q.round = ?", [round_id]) if round_id is not None else ("", [])
    return [dict(annotator=a, labels=n, regions=r or 0, points=px or 0, approved=ap or 0, rejected=rj or 0,
                 avg_ms=ms or 0, ms_per_region=msr, ms_per_point=msp, edits=ed or 0)
            for a, n, r, px, ap, rj, ms, msr, msp, ed in db.execute(
        "SELECT l.annotator, count(*), sum(q.kind = 'region'), sum(q.kind = 'pixel'), sum(l.review = 'approved'), "
        "sum(l.review = 'rejected'), avg(l.ms), avg(CASE WHEN q.kind = 'region' THEN l.ms END), "
        f"avg(CASE WHEN q.kind = 'pixel' THEN l.ms END), sum(l.edits) FROM labels l JOIN queries q ON q.id = l.query "
        f"{rsql} GROUP BY l.annotator ORDER BY l.annotator", args).fetchall()]


def effort_by_round(db: Database, run: int | None = None) -> list[dict]:
    """Per round of ``run`` (the newest run with rounds when None), cumulative over rounds 1..r:
    ``{"round", "annotation_ms" (active milliseconds of every human label, the oracle's excluded),
    "labels"}``; what the Round tab plots mIoU against."""
    if run is None:
        row = db.execute("SELECT max(run) FROM rounds").fetchone()
        run = row[0] if row else None
    out, total_ms, total_n = [], 0, 0
    for idx, ms, n in db.execute(
            "SELECT r.idx, coalesce(sum(l.ms), 0), count(l.id) FROM rounds r LEFT JOIN queries q ON q.round = r.id "
            "LEFT JOIN labels l ON l.query = q.id AND l.review != 'rejected' AND l.annotator != 'oracle' "
            "WHERE r.run IS ? GROUP BY r.idx ORDER BY r.idx", [run]).fetchall():
        total_ms, total_n = total_ms + ms, total_n + n
        out.append({"round": idx, "annotation_ms": total_ms, "labels": total_n})
    return out
