"""What the canvases and the page share: the store (one SQLite connection per thread), the
provider, the label space, the current round, the annotator's name, and image encoding.

Also the few store operations ``storage`` does not offer (yet), kept small and on top of its
schema: leasing all pixel queries of one image at once, and listing labels for review.
"""
from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

import storage
from core.data.labels import IGNORE, LabelSpace
from annotator.provider import ImageView, Provider, load_view

LEASE_MINUTES = 20.0
DEFAULT_USER = "local"


class AnnotatorError(ValueError):
    """A configuration problem of the annotator (bad path, unsafe binding, bad auth spec)."""


def resolve_workdir(db_path: str | os.PathLike) -> Path:
    """The project workdir for ``db_path``: a workdir, or the ``project.db`` file inside one."""
    p = Path(db_path)
    if p.suffix == ".db" or p.is_file():
        if p.name != storage.DB_NAME:
            raise AnnotatorError(f"{p}: the project store must be named {storage.DB_NAME} (pass its workdir)")
        return p.parent
    return p


# --------------------------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------------------------

def b64(data: bytes | np.ndarray) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def data_url(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> str:
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    if fmt == "png":
        ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        mime = "image/png"
    else:
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
        mime = "image/jpeg"
    if not ok:
        raise ValueError("could not encode image")
    return f"data:{mime};base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def photo_url(rgb: np.ndarray) -> str:
    """Exact PNG up to ~1 MP, high-quality JPEG above (keeps payloads of big photos small)."""
    return data_url(rgb, "png" if rgb.shape[0] * rgb.shape[1] <= 1_000_000 else "jpg", 95)


# --------------------------------------------------------------------------------------------
# who is calling
# --------------------------------------------------------------------------------------------

def username(request: Any) -> str:
    """The logged-in user of a request, ``"local"`` without auth.

    Event handlers get a ``gr.Request`` (``.username``); ``gr.HTML`` server functions get the
    raw FastAPI request, whose login cookie is resolved through the Gradio app's token table
    (the same lookup Gradio's own ``login_check`` does before the function runs).
    """
    if request is None:
        return DEFAULT_USER
    from gradio.route_utils import Request as GrRequest

    if isinstance(request, GrRequest) or hasattr(request, "username"):
        return str(request.username) if request.username else DEFAULT_USER
    scope = getattr(request, "scope", None)
    app = scope.get("app") if isinstance(scope, dict) else None
    tokens = getattr(app, "tokens", None)
    cookie_id = getattr(app, "cookie_id", None)
    cookies = getattr(request, "cookies", None) or {}
    if isinstance(tokens, dict) and cookie_id is not None:
        tok = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        if tok and tokens.get(tok):
            return str(tokens[tok])
    return DEFAULT_USER


# --------------------------------------------------------------------------------------------
# context
# --------------------------------------------------------------------------------------------

class AnnotatorContext:
    """Shared state of one annotator app. Thread-safe: Gradio runs handlers in a thread pool,
    and each thread gets its own store connection."""

    def __init__(self, db_path: str | os.PathLike, provider: Provider, label_space: LabelSpace,
                 round_id: int | None = None, on_finish: Callable | None = None, auth: bool = False,
                 view_cache: int = 6):
        self.workdir = resolve_workdir(db_path)
        storage.open_store(self.workdir).close()  # fail early with the store's own message
        self.provider = provider
        self.space = label_space
        self.fixed_round = round_id
        self.on_finish = on_finish
        self.auth = auth
        self._local = threading.local()
        self._views: OrderedDict[str, ImageView] = OrderedDict()
        self._memo: OrderedDict[tuple[str, str], Any] = OrderedDict()
        self._view_cap = view_cache
        self._lock = threading.Lock()
        self.prefetcher = None  # set by the region canvas (background superpixels)
        self.valid_classes = frozenset(c.train_id for c in label_space.classes) | {IGNORE}

    # store ------------------------------------------------------------------------------
    @property
    def db(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = storage.open_store(self.workdir, create=False)
            self._local.db = db
        return db

    def round_id(self) -> int | None:
        """The round being annotated: the fixed one, else the newest round (None: no rounds)."""
        if self.fixed_round is not None:
            return self.fixed_round
        row = self.db.execute("SELECT max(id) FROM rounds").fetchone()
        return row[0] if row else None

    # provider ---------------------------------------------------------------------------
    def view(self, name: str) -> ImageView:
        with self._lock:
            if name in self._views:
                self._views.move_to_end(name)
                return self._views[name]
        v = load_view(self.provider, name)
        with self._lock:
            self._views[name] = v
            while len(self._views) > self._view_cap:
                self._views.popitem(last=False)
        return v

    def memo(self, name: str, key: str, fn: Callable[[], Any]) -> Any:
        """Per-image derived data (downscaled context image, heat-map maximum...), computed once
        and kept for the last few images."""
        k = (name, key)
        with self._lock:
            if k in self._memo:
                self._memo.move_to_end(k)
                return self._memo[k]
        val = fn()
        with self._lock:
            self._memo[k] = val
            while len(self._memo) > 4 * self._view_cap:
                self._memo.popitem(last=False)
        return val

    def palette(self) -> list[list[int]]:
        return [list(map(int, c.color)) for c in self.space.classes]

    def classes_json(self) -> list[dict]:
        return [{"id": c.train_id, "name": c.name, "color": list(map(int, c.color))} for c in self.space.classes]


# --------------------------------------------------------------------------------------------
# store additions (adapter on top of storage's schema)
# --------------------------------------------------------------------------------------------

def holds(db, query_id: int, annotator: str, kind: str | None = None) -> bool:
    """True when ``annotator`` holds the query's lease (live, or expired but not taken by anyone
    since), optionally of the given kind. Skips and flags are only accepted from the holder."""
    row = db.execute("SELECT kind, status, lease_owner FROM queries WHERE id = ?", (int(query_id),)).fetchone()
    return row is not None and row[1] == "leased" and row[2] == annotator and (kind is None or row[0] == kind)


def lease_image_points(db, annotator: str, round_id: int | None, image: int,
                       minutes: float = LEASE_MINUTES) -> int:
    """Lease every available pixel query of ``image`` (in ``round_id``) to ``annotator``, in one
    ``BEGIN IMMEDIATE`` transaction, so the whole image's points go to one person. Returns how
    many were leased. (storage.lease_next leases one query at a time.)"""
    t = time.time()
    rsql = " AND round = ?" if round_id is not None else ""
    args: list[Any] = [annotator, t + minutes * 60.0, image]
    if round_id is not None:
        args.append(round_id)
    with storage.immediate(db) as conn:
        cur = conn.execute(
            "UPDATE queries SET status = 'leased', lease_owner = ?, lease_expiry = ? "
            "WHERE kind = 'pixel' AND image = ?" + rsql +
            " AND (status = 'pending' OR (status = 'leased' AND lease_expiry < ?))", [*args, t])
        return cur.rowcount


def image_pixel_points(db, annotator: str, round_id: int | None, image: int) -> list[dict]:
    """The pixel queries of ``image`` (in ``round_id``) this annotator works on: those leased to
    them and those they already answered, ordered by id (the point index), each with their
    current answer (``None`` when unanswered)."""
    rsql = " AND q.round = ?" if round_id is not None else ""
    args: list[Any] = [annotator, annotator, image]
    if round_id is not None:
        args.append(round_id)
    return list(db.query(
        "SELECT q.id, q.y, q.x, q.status, l.point_class AS answer FROM queries q "
        "LEFT JOIN labels l ON l.query = q.id AND l.annotator = ? AND l.review != 'rejected' "
        "WHERE q.kind = 'pixel' AND (q.lease_owner = ? AND q.status = 'leased' OR l.id IS NOT NULL) "
        "AND q.image = ?" + rsql + " ORDER BY q.id", args))


def pixel_image_counts(db, round_id: int | None) -> tuple[int, int]:
    """(images with pixel queries, images whose pixel queries are all answered or set aside)."""
    rsql = " WHERE kind = 'pixel' AND round = ?" if round_id is not None else " WHERE kind = 'pixel'"
    args = [round_id] if round_id is not None else []
    rows = db.execute(
        "SELECT image, sum(status IN ('done', 'skipped', 'flagged')), count(*) FROM queries" + rsql +
        " GROUP BY image", args).fetchall()
    return len(rows), sum(1 for _, d, n in rows if d == n)


def review_rows(db, round_id: int | None, status: str = "pending", limit: int = 200) -> list[dict]:
    """Labels for the review table (newest first)."""
    where, args = [], []
    if round_id is not None:
        where.append("q.round = ?")
        args.append(round_id)
    if status and status != "all":
        where.append("l.review = ?")
        args.append(status)
    w = (" WHERE " + " AND ".join(where)) if where else ""
    return list(db.query(
        "SELECT l.id AS label, l.query, q.kind, i.name AS image, l.annotator, l.review, l.ms, l.created "
        "FROM labels l JOIN queries q ON q.id = l.query JOIN images i ON i.id = q.image" + w +
        " ORDER BY l.created DESC, l.id DESC LIMIT ?", [*args, int(limit)]))
