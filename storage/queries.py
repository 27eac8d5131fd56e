"""Images, runs, resume steps, rounds, queries and leases.

A query asks for one label: a ``region`` (box ``y0,x0,y1,x1``, end-exclusive) or a ``pixel``
(point ``y,x``) of an image. Its status moves ``pending -> leased -> done``, or to ``skipped`` /
``flagged`` with a reason. Leases expire; an expired lease is as good as pending.
"""
from __future__ import annotations

import json
import time
from typing import Any, Iterable, Mapping

from sqlite_utils import Database

from storage.db import InvalidInput, LeaseError, budget_parts, immediate, now_iso

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
# runs, steps, checkpoints, rounds
# --------------------------------------------------------------------------------------------

def start_run(db: Database, config: Mapping[str, Any] | None = None) -> int:
    """Record a new run (status 'running') with its config as JSON; returns the run id."""
    cur = db.execute("INSERT INTO runs (started, config, status) VALUES (?, ?, 'running')",
                     (now_iso(), json.dumps(dict(config or {}), sort_keys=True, default=str)))
    return cur.lastrowid


def set_run_config(db: Database, run: int, config: Mapping[str, Any]) -> None:
    """Replace a run's stored config (JSON), e.g. when ``--resume --rounds N`` extends it."""
    db["runs"].update(run, {"config": json.dumps(dict(config), sort_keys=True, default=str)})


def set_run_status(db: Database, run: int, status: str) -> None:
    """Set a run's status (e.g. 'running', 'done', 'failed', 'interrupted')."""
    db.execute("UPDATE runs SET status = ? WHERE id = ?", (status, run))


def last_run(db: Database) -> dict | None:
    """The most recent run as a dict (``config`` parsed), or None."""
    rows = list(db.query("SELECT * FROM runs ORDER BY id DESC LIMIT 1"))
    if not rows:
        return None
    row = rows[0]
    row["config"] = json.loads(row["config"])
    return row


def mark_step(db: Database, run: int, name: str, status: str = "done") -> None:
    """Record that step ``name`` of ``run`` (e.g. 'data', 'warmup', 'round1.train') finished."""
    db.execute("INSERT INTO steps (run, name, status, finished) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(run, name) DO UPDATE SET status = excluded.status, finished = excluded.finished",
               (run, name, status, now_iso()))


def step_done(db: Database, run: int, name: str) -> bool:
    """True when step ``name`` of ``run`` was marked done (resume skips it)."""
    row = db.execute("SELECT status FROM steps WHERE run = ? AND name = ?", (run, name)).fetchone()
    return row is not None and row[0] == "done"


def add_checkpoint(db: Database, run: int, step: str, path: str) -> int:
    """Record a checkpoint file written for ``step`` of ``run``; returns its row id."""
    return db.execute("INSERT INTO checkpoints (run, step, path, created) VALUES (?, ?, ?, ?)",
                      (run, step, str(path), now_iso())).lastrowid


def latest_checkpoint(db: Database, run: int, step: str | None = None) -> dict | None:
    """The newest checkpoint row of ``run`` (optionally of one ``step``), or None."""
    sql, args = "SELECT * FROM checkpoints WHERE run = ?", [run]
    if step is not None:
        sql, args = sql + " AND step = ?", args + [step]
    rows = list(db.query(sql + " ORDER BY id DESC LIMIT 1", args))
    return rows[0] if rows else None


def add_round(db: Database, run: int | None, index: int, budget: str | float | None = None,
              strategy: str | None = None) -> int:
    """Create round ``index`` of ``run`` (idempotent: an existing one is returned); returns its id.
    The round number is stored in column ``idx`` (``index`` is an SQL keyword). ``budget``: the run's
    budget spec ("2.2%", "40px"; see ``db.budget_parts``), stored as ``budget_spec`` text with its
    ``budget_value`` and ``budget_unit`` ('percent' of each image's pixels | 'pixels' per image).
    Raises StoreError for a malformed budget."""
    spec, value, unit = budget_parts(budget)
    with immediate(db) as conn:
        row = conn.execute("SELECT id FROM rounds WHERE run IS ? AND idx = ?", (run, index)).fetchone()
        if row:
            return row[0]
        return conn.execute("INSERT INTO rounds (run, idx, budget_spec, budget_value, budget_unit, strategy, status) "
                            "VALUES (?, ?, ?, ?, ?, ?, 'open')", (run, index, spec, value, unit, strategy)).lastrowid


def set_round_status(db: Database, round_id: int, status: str) -> None:
    """Set a round's status (e.g. 'open', 'annotating', 'done')."""
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
    return out


def add_queries(db: Database, round_id: int | None, image: int | str, kind: str,
                picks: Iterable[Any]) -> list[int]:
    """Add pending queries for one image in one transaction; returns their ids.

    ``picks``: for ``region`` tuples ``(y0, x0, y1, x1[, score])`` (end-exclusive box) or dicts
    with those keys; for ``pixel`` tuples ``(y, x[, score])`` or dicts. Idempotent: a query with
    the same round, image, kind and geometry is not added twice (its existing id is returned),
    so a resumed scoring step can simply re-add.
    """
    if kind not in KINDS:
        raise InvalidInput(f"query kind must be one of {KINDS}, got {kind!r}")
    img = image_id(db, image)
    vals = [_pick_values(kind, p) for p in picks]
    ids = []
    created = now_iso()
    cols = ("y0", "x0", "y1", "x1", "y", "x")
    with immediate(db) as conn:
        if round_id is not None and conn.execute("SELECT 1 FROM rounds WHERE id = ?", (round_id,)).fetchone() is None:
            raise InvalidInput(f"unknown round id {round_id}")
        for v in vals:
            geo = [v.get(c) for c in cols]
            cur = conn.execute(
                "INSERT OR IGNORE INTO queries (image, round, kind, y0, x0, y1, x1, y, x, score, status, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                [img, round_id, kind, *geo, v["score"], created])
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


def pending_count(db: Database, round_id: int | None = None, kind: str | None = None) -> int:
    """Queries waiting for an annotator: pending, or leased with an expired lease."""
    f, args = _filters(round_id, kind)
    return db.execute(f"SELECT count(*) FROM queries WHERE {_AVAILABLE}{f}", [time.time(), *args]).fetchone()[0]


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
        expiry = t + minutes * 60.0
        row = conn.execute(
            f"SELECT id FROM queries WHERE status = 'leased' AND lease_owner = ? AND lease_expiry >= ?{f} "
            "ORDER BY id LIMIT 1", [annotator, t, *fargs]).fetchone()
        if row is None:
            row = conn.execute(
                f"SELECT id FROM queries WHERE {_AVAILABLE}{f} ORDER BY score IS NULL, score DESC, id LIMIT 1",
                [t, *fargs]).fetchone()
        if row is None:
            return None
        conn.execute("UPDATE queries SET status = 'leased', lease_owner = ?, lease_expiry = ? WHERE id = ?",
                     (annotator, expiry, row[0]))
        cur = conn.execute("SELECT * FROM queries WHERE id = ?", (row[0],))
        return dict(zip([d[0] for d in cur.description], cur.fetchone()))


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


# --------------------------------------------------------------------------------------------
# metrics
# --------------------------------------------------------------------------------------------

def add_metric(db: Database, run: int | None, round: int | None, key: str, value: Any) -> None:
    """Record a metric of ``run`` at round number ``round`` (None for warm-up / run-level).
    Numbers go to ``value``; anything else JSON-serialisable (e.g. per-class IoU) to ``json``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            num, js = None, json.dumps(value)
        except TypeError:
            raise InvalidInput(f"metric {key!r}: value is not a number or JSON-serialisable") from None
    else:
        num, js = float(value), None
    db.execute("INSERT INTO metrics (run, round, key, value, json, created) VALUES (?, ?, ?, ?, ?, ?)",
               (run, round, key, num, js, now_iso()))


def metrics_table(db: Database, run: int | None = None) -> list[dict]:
    """Per-round metrics as rows ``{"round": r, key: value, ...}`` ordered by round (None first);
    the latest value of each key wins. ``run=None`` means the last run that has metrics."""
    if run is None:
        row = db.execute("SELECT max(run) FROM metrics").fetchone()
        run = row[0] if row else None
    rows: dict[Any, dict] = {}
    for rnd, key, value, js in db.execute(
            "SELECT round, key, value, json FROM metrics WHERE run IS ? ORDER BY id", (run,)):
        rows.setdefault(rnd, {"round": rnd})[key] = value if js is None else json.loads(js)
    return [rows[k] for k in sorted(rows, key=lambda r: (r is not None, r if r is not None else 0))]
