"""The annotation queue: target images, rounds, queries and their leases.

A query asks for one label: a ``region`` (box ``y0,x0,y1,x1``, end-exclusive, label pixels) or a
``pixel`` (point ``y,x``) of an image. Its status moves ``pending -> leased -> done``, or to
``skipped`` / ``flagged`` with a reason. Leases expire (``lease_expiry``: Unix epoch seconds); an
expired lease is as good as pending. Image ``height``/``width`` are label pixels (what budgets count).
"""
from __future__ import annotations

import json
import time

import numpy as np
from typing import Any, Iterable, Mapping

from sqlite_utils import Database

from storage.db import InvalidInput, LeaseError, budget_parts, encode_patch, immediate, now_iso

KINDS = ("region", "pixel")
STATUSES = ("pending", "leased", "done", "skipped", "flagged")


# --------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------

_IMAGE_COLS = ("name", "domain", "split", "path", "height", "width")


def add_images(db: Database, rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Insert or update images by ``name`` (keys: name, domain='target', split='train', path,
    height, width). Idempotent. Returns ``{name: id}`` for the given rows."""
    out: dict[str, int] = {}
    with immediate(db) as conn:
        for r in rows:
            if "name" not in r or not isinstance(r["name"], str) or not r["name"]:
                raise InvalidInput(f"image row needs a non-empty 'name': {dict(r)!r}")
            unknown = set(r) - set(_IMAGE_COLS) - {"id"}
            if unknown:
                raise InvalidInput(f"image {r['name']!r}: unknown columns {sorted(unknown)}")
            vals = {"domain": "target", "split": "train", "path": None, "height": None, "width": None}
            vals.update({k: r[k] for k in _IMAGE_COLS if k in r})
            if vals["path"] is not None:
                vals["path"] = str(vals["path"])
            conn.execute(
                "INSERT INTO images (name, domain, split, path, height, width) VALUES "
                "(:name, :domain, :split, :path, :height, :width) ON CONFLICT(name) DO UPDATE SET "
                "domain = excluded.domain, split = excluded.split, "
                "path = coalesce(excluded.path, path), height = coalesce(excluded.height, height), "
                "width = coalesce(excluded.width, width)", vals)
            out[vals["name"]] = conn.execute("SELECT id FROM images WHERE name = ?", (vals["name"],)).fetchone()[0]
    return out


def image_id(db: Database, image: int | str) -> int:
    """Resolve an image name or id to its id; :class:`InvalidInput` when unknown."""
    if isinstance(image, str):
        row = db.execute("SELECT id FROM images WHERE name = ?", (image,)).fetchone()
    else:
        row = db.execute("SELECT id FROM images WHERE id = ?", (int(image),)).fetchone()
    if row is None:
        raise InvalidInput(f"unknown image {image!r}")
    return row[0]


def get_image(db: Database, image: int | str) -> dict:
    """The images row (dict) for a name or id."""
    return db["images"].get(image_id(db, image))


def image_sizes(db: Database, domain: str = "target") -> dict[str, tuple[int, int]]:
    """``{name: (height, width)}`` of the ``domain``'s images, in insertion order (label pixels)."""
    return {r["name"]: (r["height"], r["width"])
            for r in db["images"].rows_where("domain = ?", [domain], select="name, height, width", order_by="id")}


# --------------------------------------------------------------------------------------------
# rounds
# --------------------------------------------------------------------------------------------

def add_round(db: Database, run: int | None, index: int, budget: str | float | None = None,
              strategy: str | None = None) -> int:
    """Create round ``index`` of ``run`` (idempotent: an existing one is returned); returns its id.
    The round number is stored in column ``idx`` (``index`` is an SQL keyword). ``budget``: the run's
    budget spec ("2.2%", "40px", "200clicks", "30min", "20min/round"; see ``db.budget_parts``), stored as
    ``budget_spec`` text with its ``budget_value`` and ``budget_unit`` ('percent' of each image's pixels |
    'pixels' per image | 'clicks' | 'seconds' over the pool, or per round with '/round').
    Raises StoreError for a malformed budget."""
    spec, value, unit = budget_parts(budget)
    with immediate(db) as conn:
        row = conn.execute("SELECT id FROM rounds WHERE run IS ? AND idx = ?", (run, index)).fetchone()
        if row:
            return row[0]
        return conn.execute("INSERT INTO rounds (run, idx, budget_spec, budget_value, budget_unit, strategy, status) "
                            "VALUES (?, ?, ?, ?, ?, ?, 'open')", (run, index, spec, value, unit, strategy)).lastrowid


def current_round(db: Database, run: int | None = None) -> dict | None:
    """The newest round (``rounds`` row as a dict, ``idx`` = its number) of ``run``, or of the newest
    run that has rounds when ``run`` is None; None when there is none. The one definition of "the
    current round" the loop, the ``annotate`` command and the annotator share."""
    if run is None:
        row = db.execute("SELECT max(run) FROM rounds").fetchone()
        run = row[0] if row else None
    rows = list(db["rounds"].rows_where("run IS ?", [run], order_by="idx DESC", limit=1))
    return rows[0] if rows else None


def get_round(db: Database, round_id: int) -> dict | None:
    """The ``rounds`` row (dict) of ``round_id``, or None."""
    rows = list(db["rounds"].rows_where("id = ?", [round_id]))
    return rows[0] if rows else None


def query_kinds(db: Database, round_id: int | None = None) -> dict[str, int]:
    """``{kind: number of queries}`` of a round (every round when None)."""
    f, args = _filters(round_id, None)
    return dict(db.execute(f"SELECT kind, count(*) FROM queries WHERE 1{f} GROUP BY kind", args).fetchall())


# a query's unit from its row (alias q): a region with a stored shape is a superpixel
_UNIT_SQL = "CASE WHEN q.kind = 'pixel' THEN 'pixel' WHEN q.shape IS NOT NULL THEN 'superpixel' ELSE 'square' END"


def query_units(db: Database, round_id: int | None = None) -> dict[str, int]:
    """``{unit: number of queries}`` of a round (every round when None), units 'square' | 'superpixel' |
    'pixel' (a region query with a stored shape is a superpixel)."""
    f, args = _filters(round_id, None)
    return dict(db.execute(f"SELECT {_UNIT_SQL} AS unit, count(*) FROM queries q WHERE 1{f} GROUP BY unit",
                           args).fetchall())


def set_round_status(db: Database, round_id: int, status: str) -> None:
    """Set a round's status: 'open' (answers taken), 'closed' ("Finish round" pressed: answers,
    skips and reviews of its queries are refused, in the same transaction as any write), 'done'
    (retrained and evaluated)."""
    db.execute("UPDATE rounds SET status = ? WHERE id = ?", (status, round_id))


# --------------------------------------------------------------------------------------------
# queries
# --------------------------------------------------------------------------------------------

def _pick_values(kind: str, pick: Any) -> dict:
    if isinstance(pick, Mapping):
        p = dict(pick)
    else:
        p = list(pick)
        names = ("y0", "x0", "y1", "x1", "score") if kind == "region" else ("y", "x", "score")
        if len(p) not in (len(names) - 1, len(names)):
            raise InvalidInput(f"{kind} pick must be {names} (score optional), got {pick!r}")
        p = dict(zip(names, p))
    keys = ("y0", "x0", "y1", "x1") if kind == "region" else ("y", "x")
    try:
        out = {k: int(p[k]) for k in keys}
    except (KeyError, TypeError, ValueError):
        raise InvalidInput(f"{kind} pick needs integer {keys}, got {pick!r}") from None
    if any(v < 0 for v in out.values()):
        raise InvalidInput(f"{kind} pick has negative coordinates: {pick!r}")
    if kind == "region" and not (out["y1"] > out["y0"] and out["x1"] > out["x0"]):
        raise InvalidInput(f"region box must have y1 > y0 and x1 > x0 (end-exclusive), got {pick!r}")
    out["score"] = None if p.get("score") is None else float(p["score"])
    out["area"] = (out["y1"] - out["y0"]) * (out["x1"] - out["x0"]) if kind == "region" else 1
    shape = p.get("shape")
    if shape is not None:
        if kind != "region":
            raise InvalidInput(f"only a region query has a shape (a superpixel), got a {kind} pick")
        shape = np.asarray(shape)
        box = (out["y1"] - out["y0"], out["x1"] - out["x0"])
        if shape.shape != box or not np.isin(shape, (0, 1)).all() or not shape.any():
            raise InvalidInput(f"a superpixel's shape must be a 0/1 array of its box's size {box} with at least "
                               f"one 1, got shape {shape.shape}")
        out["shape"] = encode_patch(shape.astype(np.uint8))
        out["area"] = int(np.count_nonzero(shape))
        # its first pixel in raster order: disjoint superpixels never share it, so two with the same box
        # stay two queries under the geometry's unique index
        sy, sx = np.argwhere(shape)[0]
        out["y"], out["x"] = out["y0"] + int(sy), out["x0"] + int(sx)
    out["cost_s"] = None if p.get("cost_s") is None else float(p["cost_s"])
    feats = p.get("features")
    out["features"] = None if feats is None else json.dumps([round(float(v), 6) for v in feats])
    return out


def add_queries(db: Database, round_id: int | None, image: int | str, kind: str,
                picks: Iterable[Any], truths: list | None = None) -> list[int]:
    """Add pending queries for one image in one transaction; returns their ids.

    ``picks``: for ``region`` tuples ``(y0, x0, y1, x1[, score])`` (end-exclusive box) or dicts
    with those keys; for ``pixel`` tuples ``(y, x[, score])`` or dicts. A dict may also give
    ``shape`` (region only: a superpixel's 0/1 uint8 mask over its box; its ``y, x`` are then set to the
    superpixel's first pixel in raster order), ``cost_s`` (predicted human
    seconds) and ``features`` (the cost model's input, a list of floats). Idempotent: a query with
    the same round, image, kind and geometry is not added twice (its existing id is returned),
    so a resumed scoring step can simply re-add. ``truths`` (one per pick: a uint8 patch of the
    box's shape, or a pixel's class) makes them honeypots with that known answer.
    """
    if kind not in KINDS:
        raise InvalidInput(f"query kind must be one of {KINDS}, got {kind!r}")
    img = image_id(db, image)
    vals = [_pick_values(kind, p) for p in picks]
    if truths is not None:
        if len(truths) != len(vals):
            raise InvalidInput(f"{len(truths)} truths for {len(vals)} honeypot picks")
        for v, t in zip(vals, truths):
            if kind == "region":
                t = np.asarray(t, np.uint8)
                if t.shape != (v["y1"] - v["y0"], v["x1"] - v["x0"]):
                    raise InvalidInput(f"honeypot truth of shape {t.shape} for a box of "
                                       f"{(v['y1'] - v['y0'], v['x1'] - v['x0'])}")
                v["truth"], v["truth_class"] = encode_patch(t), None
            else:
                v["truth"], v["truth_class"] = None, int(t)
    ids = []
    created = now_iso()
    cols = ("y0", "x0", "y1", "x1", "y", "x")
    with immediate(db) as conn:
        if round_id is not None and conn.execute("SELECT 1 FROM rounds WHERE id = ?", (round_id,)).fetchone() is None:
            raise InvalidInput(f"unknown round id {round_id}")
        for v in vals:
            geo = [v.get(c) for c in cols]
            cur = conn.execute(
                "INSERT OR IGNORE INTO queries (image, round, kind, y0, x0, y1, x1, y, x, score, status, created, "
                "honeypot, truth, truth_class, shape, area, cost_s, features) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?)",
                [img, round_id, kind, *geo, v["score"], created, int(truths is not None), v.get("truth"),
                 v.get("truth_class"), v.get("shape"), v["area"], v["cost_s"], v["features"]])
            if cur.rowcount:
                ids.append(cur.lastrowid)
            else:
                row = conn.execute(
                    "SELECT id FROM queries WHERE coalesce(round, -1) = coalesce(?, -1) AND image = ? AND kind = ? "
                    "AND coalesce(y0, -1) = coalesce(?, -1) AND coalesce(x0, -1) = coalesce(?, -1) "
                    "AND coalesce(y1, -1) = coalesce(?, -1) AND coalesce(x1, -1) = coalesce(?, -1) "
                    "AND coalesce(y, -1) = coalesce(?, -1) AND coalesce(x, -1) = coalesce(?, -1)",
                    [round_id, img, kind, *geo]).fetchone()
                ids.append(row[0])
    return ids


def round_queries(db: Database, round_id: int, open_only: bool = False) -> list[dict]:
    """All queries of a round (``open_only``: those still to answer, pending or leased), each row with
    its image ``name``, ordered by image name then id (an oracle answers them image by image)."""
    status = " AND q.status IN ('pending', 'leased')" if open_only else ""
    return list(db.query(
        f"SELECT q.*, i.name FROM queries q JOIN images i ON i.id = q.image WHERE q.round = ?{status} "
        "ORDER BY i.name, q.id", [round_id]))


def labeled_pixels(db: Database, run: int) -> int:
    """Label pixels inside ``run``'s answered queries: a region's area (its box, or a superpixel's
    shape), one per pixel query (honeypots are not part of the budget)."""
    return db.execute(
        "SELECT coalesce(sum(coalesce(area, CASE WHEN kind = 'region' THEN (y1 - y0) * (x1 - x0) ELSE 1 END)), 0) "
        "FROM queries q JOIN rounds r ON r.id = q.round WHERE r.run = ? AND q.status = 'done' AND q.honeypot = 0",
        [run]).fetchone()[0]


def spent_effort(db: Database, run: int) -> dict:
    """What ``run``'s answers cost so far (honeypots excluded; rejected answers included: their time was
    spent): ``{"clicks": the answers' edit operations, at least one per answer (a pixel or a superpixel
    answered with one class is 1; a drawn region its strokes, or the oracle's simulated clicks), "seconds":
    the logged human seconds (labels.ms / 1000; the oracle logs its simulated seconds)}``. What a pooled
    budget has spent."""
    clicks, ms = db.execute(
        "SELECT coalesce(sum(max(1, l.edits)), 0), coalesce(sum(l.ms), 0) FROM labels l JOIN queries q ON q.id = l.query "
        "JOIN rounds r ON r.id = q.round WHERE r.run = ? AND q.honeypot = 0", [run]).fetchone()
    return {"clicks": int(clicks), "seconds": ms / 1000.0}


def answered_costs(db: Database, run: int) -> list[dict]:
    """Every answer (label, rejected ones included) to ``run``'s queries that carry cost-model features:
    ``{"round" (number), "unit" ('square' | 'superpixel' | 'pixel'), "features" (list of floats),
    "cost_s" (the query's predicted seconds), "seconds" (that answer's logged time, labels.ms / 1000)}``,
    in query then label order; what the cost model refits on and is scored against (one answer, one
    sample: a query two annotators answered gives two)."""
    rows = db.query(
        f"SELECT r.idx, {_UNIT_SQL} AS unit, q.features, q.cost_s, l.ms FROM queries q "
        "JOIN rounds r ON r.id = q.round JOIN labels l ON l.query = q.id "
        "WHERE r.run = ? AND q.honeypot = 0 AND q.features IS NOT NULL ORDER BY q.id, l.id", [run])
    return [{"round": r["idx"], "unit": r["unit"], "features": json.loads(r["features"]), "cost_s": r["cost_s"],
             "seconds": r["ms"] / 1000.0} for r in rows]


def target_pixels(db: Database) -> int:
    """Sum of height x width over the target images (label pixels); 0 when there are none."""
    return db.execute("SELECT coalesce(sum(height * width), 0) FROM images WHERE domain = 'target'").fetchone()[0]


def get_query(db: Database, query_id: int) -> dict:
    """The queries row (dict) for an id; :class:`InvalidInput` when unknown."""
    rows = list(db.query("SELECT * FROM queries WHERE id = ?", [query_id]))
    if not rows:
        raise InvalidInput(f"unknown query id {query_id}")
    return rows[0]


def _filters(round_id: int | None, kind: str | None) -> tuple[str, list]:
    sql, args = "", []
    if round_id is not None:
        sql, args = sql + " AND round = ?", args + [round_id]
    if kind is not None:
        if kind not in KINDS:
            raise InvalidInput(f"query kind must be one of {KINDS}, got {kind!r}")
        sql, args = sql + " AND kind = ?", args + [kind]
    return sql, args


_AVAILABLE = "(status = 'pending' OR (status = 'leased' AND lease_expiry < ?))"
# never to someone whose answer to it stands (an overlap query waiting for its next annotator)
_NOT_ANSWERED_BY = " AND id NOT IN (SELECT query FROM labels WHERE annotator = ? AND review != 'rejected')"


def set_answers_needed(db: Database, query_ids: Iterable[int], answers: int) -> None:
    """Ask ``answers`` annotators (1-3) for each query (``--overlap``): such a query stays pending, for
    someone who has not answered it, until it has that many live answers."""
    if not 1 <= int(answers) <= 3:
        raise InvalidInput(f"answers needed must be 1, 2 or 3 (got {answers})")
    with immediate(db) as conn:
        conn.executemany("UPDATE queries SET answers_needed = ? WHERE id = ?", [(int(answers), int(i)) for i in query_ids])


def pending_count(db: Database, round_id: int | None = None, kind: str | None = None) -> int:
    """Queries waiting for an annotator: pending, or leased with an expired lease."""
    f, args = _filters(round_id, kind)
    return db.execute(f"SELECT count(*) FROM queries WHERE {_AVAILABLE}{f}", [time.time(), *args]).fetchone()[0]


def _take(conn, ids: list[int], annotator: str, minutes: float) -> None:
    """Lease ``ids`` to ``annotator`` for ``minutes`` (inside the caller's immediate transaction)."""
    conn.executemany("UPDATE queries SET status = 'leased', lease_owner = ?, lease_expiry = ? WHERE id = ?",
                     [(annotator, time.time() + minutes * 60.0, i) for i in ids])


def lease_next(db: Database, annotator: str, round: int | None = None, kind: str | None = None,
               minutes: float = 10) -> dict | None:
    """Atomically lease the next query to ``annotator`` and return its row (dict), or None when
    nothing is left.

    Highest score first (then lowest id), among pending queries and those whose lease expired.
    If ``annotator`` already holds a live lease matching the filters, that query is returned
    (lease renewed), so a reloaded page gets its work back. Runs under ``BEGIN IMMEDIATE``: two
    annotators never hold the same query.
    """
    if not annotator:
        raise InvalidInput("annotator name must not be empty")
    f, fargs = _filters(round, kind)
    with immediate(db) as conn:
        t = time.time()
        row = conn.execute(
            f"SELECT id FROM queries WHERE status = 'leased' AND lease_owner = ? AND lease_expiry >= ?{f} "
            "ORDER BY id LIMIT 1", [annotator, t, *fargs]).fetchone()
        if row is None:
            row = conn.execute(
                f"SELECT id FROM queries WHERE {_AVAILABLE}{f}{_NOT_ANSWERED_BY} ORDER BY score IS NULL, score DESC, "
                "id LIMIT 1", [t, *fargs, annotator]).fetchone()
        if row is None:
            return None
        _take(conn, [row[0]], annotator, minutes)
        cur = conn.execute("SELECT * FROM queries WHERE id = ?", (row[0],))
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))


def lease_image(db: Database, annotator: str, image: int | str, round: int | None = None, kind: str = "pixel",
                minutes: float = 10) -> int:
    """Lease every available ``kind`` query of one image to ``annotator`` in one transaction (the
    annotator's pixel canvas gives a whole image's points to one person); returns how many. The
    same availability rule as :func:`lease_next` (pending, or an expired lease)."""
    if not annotator:
        raise InvalidInput("annotator name must not be empty")
    f, fargs = _filters(round, kind)
    img = image_id(db, image)
    with immediate(db) as conn:
        ids = [r[0] for r in conn.execute(f"SELECT id FROM queries WHERE {_AVAILABLE}{f} AND image = ?"
                                          f"{_NOT_ANSWERED_BY} ORDER BY id", [time.time(), *fargs, img, annotator])]
        _take(conn, ids, annotator, minutes)
        return len(ids)


def lease_query(db: Database, query_id: int, annotator: str, round: int | None = None, kind: str | None = None,
                minutes: float = 10) -> bool:
    """Lease one given query to ``annotator`` when it is available (the :func:`lease_next` rule:
    pending, or a lease that ran out) or already theirs, and of ``round`` / ``kind`` when given;
    False (nothing changed) otherwise. The annotator uses it to give back a query a reviewer
    rejected to its own annotator when they re-open it."""
    if not annotator:
        raise InvalidInput("annotator name must not be empty")
    f, fargs = _filters(round, kind)
    with immediate(db) as conn:
        row = conn.execute(f"SELECT id FROM queries WHERE id = ? AND ({_AVAILABLE} OR (status = 'leased' "
                           f"AND lease_owner = ?)){f}{_NOT_ANSWERED_BY}",
                           [int(query_id), time.time(), annotator, *fargs, annotator]).fetchone()
        if row is None:
            return False
        _take(conn, [row[0]], annotator, minutes)
        return True


def available_queries(db: Database, round: int | None = None, kind: str | None = None, limit: int = 10) -> list[dict]:
    """The next queries :func:`lease_next` would hand out (highest score first), without leasing
    them, each with its image ``name`` (e.g. to prefetch their crops)."""
    f, fargs = _filters(round, kind)
    f = f.replace(" round", " q.round").replace(" kind", " q.kind")
    avail = _AVAILABLE.replace("status", "q.status").replace("lease_expiry", "q.lease_expiry")
    return list(db.query(f"SELECT q.*, i.name FROM queries q JOIN images i ON i.id = q.image WHERE {avail}{f} "
                         "ORDER BY q.score IS NULL, q.score DESC, q.id LIMIT ?", [time.time(), *fargs, int(limit)]))


def holds(db: Database, query_id: int, annotator: str, kind: str | None = None) -> bool:
    """True when ``annotator`` holds the query's lease (live, or expired but not taken by anyone
    since), optionally of the given ``kind``."""
    row = db.execute("SELECT kind, status, lease_owner FROM queries WHERE id = ?", (int(query_id),)).fetchone()
    return row is not None and row[1] == "leased" and row[2] == annotator and (kind is None or row[0] == kind)


def image_completion(db: Database, round_id: int | None = None, kind: str = "pixel") -> tuple[int, int]:
    """(images with ``kind`` queries, images whose ``kind`` queries are all answered or set aside)."""
    f, args = _filters(round_id, kind)
    rows = db.execute(f"SELECT image, sum(status IN ('done', 'skipped', 'flagged')), count(*) FROM queries "
                      f"WHERE 1{f} GROUP BY image", args).fetchall()
    return len(rows), sum(1 for _, d, n in rows if d == n)


def _holder(conn, query_id: int) -> tuple[str, str | None, float | None]:
    row = conn.execute("SELECT status, lease_owner, lease_expiry FROM queries WHERE id = ?", (query_id,)).fetchone()
    if row is None:
        raise InvalidInput(f"unknown query id {query_id}")
    return row


def _check_not_held_by_other(conn, query_id: int, annotator: str) -> str:
    """Raise LeaseError when another annotator holds a live lease; return the query status."""
    status, owner, expiry = _holder(conn, query_id)
    if status == "leased" and owner != annotator and expiry is not None and expiry >= time.time():
        raise LeaseError(f"query {query_id} is leased by {owner!r} until "
                         f"{time.strftime('%H:%M:%S', time.localtime(expiry))}")
    return status


def renew(db: Database, query_id: int, annotator: str, minutes: float = 10) -> bool:
    """Extend ``annotator``'s lease on a query; False when they do not hold it (anymore)."""
    with immediate(db) as conn:
        cur = conn.execute("UPDATE queries SET lease_expiry = ? WHERE id = ? AND status = 'leased' "
                           "AND lease_owner = ? AND lease_expiry >= ?",
                           (time.time() + minutes * 60.0, query_id, annotator, time.time()))
        return cur.rowcount == 1


def release(db: Database, query_id: int, annotator: str) -> bool:
    """Give a leased query back to the queue; False when ``annotator`` did not hold it."""
    with immediate(db) as conn:
        cur = conn.execute("UPDATE queries SET status = 'pending', lease_owner = NULL, lease_expiry = NULL "
                           "WHERE id = ? AND status = 'leased' AND lease_owner = ?", (query_id, annotator))
        return cur.rowcount == 1


def _set_aside(db: Database, query_id: int, annotator: str, reason: str, status: str) -> None:
    if reason is None or not str(reason).strip():
        raise InvalidInput(f"query {query_id}: a reason is required to mark it {status}")
    with immediate(db) as conn:
        _check_not_held_by_other(conn, query_id, annotator)
        conn.execute("UPDATE queries SET status = ?, reason = ?, status_by = ?, lease_owner = NULL, "
                     "lease_expiry = NULL WHERE id = ?", (status, str(reason), annotator, query_id))


def skip(db: Database, query_id: int, annotator: str, reason: str) -> None:
    """Mark a query skipped by ``annotator`` with a reason (e.g. 'ambiguous'); it leaves the queue.
    :class:`LeaseError` when another annotator holds it."""
    _set_aside(db, query_id, annotator, reason, "skipped")


def flag(db: Database, query_id: int, annotator: str, reason: str) -> None:
    """Flag a query for attention (e.g. 'bad image') with a reason; it leaves the queue until
    :func:`requeue`. :class:`LeaseError` when another annotator holds it."""
    _set_aside(db, query_id, annotator, reason, "flagged")


def requeue(db: Database, query_id: int) -> None:
    """Put a query (skipped, flagged, done, leased) back to pending; its labels are kept."""
    with immediate(db) as conn:
        _holder(conn, query_id)
        conn.execute("UPDATE queries SET status = 'pending', lease_owner = NULL, lease_expiry = NULL "
                     "WHERE id = ?", (query_id,))


def round_progress(db: Database, round_id: int) -> dict:
    """Progress of a round: ``{"total", "done", "pending", "leased", "skipped", "flagged",
    "annotators": {name: labels}, "ms": total time spent}``. Expired leases count as pending."""
    t = time.time()
    out = {s: 0 for s in STATUSES}
    for status, expired, n in db.execute(
            "SELECT status, status = 'leased' AND lease_expiry < ?, count(*) FROM queries WHERE round = ? "
            "GROUP BY 1, 2", (t, round_id)):
        out["pending" if expired else status] += n
    out["total"] = sum(out[s] for s in STATUSES)
    out["annotators"] = {a: n for a, n in db.execute(
        "SELECT l.annotator, count(*) FROM labels l JOIN queries q ON q.id = l.query "
        "WHERE q.round = ? AND l.review != 'rejected' GROUP BY 1 ORDER BY 1", (round_id,))}
    out["ms"] = db.execute("SELECT coalesce(sum(l.ms), 0) FROM labels l JOIN queries q ON q.id = l.query "
                           "WHERE q.round = ?", (round_id,)).fetchone()[0]
    return out
