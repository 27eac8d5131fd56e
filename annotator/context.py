"""What the canvases and the page share: the store (one SQLite connection per thread), the
provider, the label space, the current round, the annotator's name, and image encoding.

Also the few store operations ``storage`` does not offer (yet), kept small and on top of its
schema: leasing all pixel queries of one image at once, and listing labels for review.
"""
from __future__ import annotations

import base64
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

import storage
from core.data.labels import IGNORE, LabelSpace
from annotator.provider import ImageView, Provider, load_view
from annotator.status import RunStatus

LEASE_MINUTES = 20.0
DEFAULT_USER = "local"


class AnnotatorError(ValueError):
    """A configuration problem of the annotator (bad path, unsafe binding, bad auth spec)."""


class RoundClosed(ValueError):
    """An answer or review arrived while the running loop has no round open."""


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
                 view_cache: int = 6, status: RunStatus | None = None):
        self.workdir = resolve_workdir(db_path)
        storage.open_store(self.workdir).close()  # fail early with the store's own message
        self.provider = provider
        self.space = label_space
        self.fixed_round = round_id
        self.status = status      # a running loop's RunStatus: it says which round is open, if any
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
        """The round being annotated: with a running loop (``status``) the round it opened for answers
        (None while it trains, evaluates or scores); else the fixed one, else the newest round (None:
        no rounds)."""
        if self.status is not None:
            return self.status.open_round
        if self.fixed_round is not None:
            return self.fixed_round
        row = storage.current_round(self.db)
        return row["id"] if row else None

    def shown_round_id(self) -> int | None:
        """The round the page describes: the open one, else (a running loop between rounds) the newest."""
        rnd = self.round_id()
        if rnd is None and self.status is not None:
            row = storage.current_round(self.db)
            rnd = row["id"] if row else None
        return rnd

    def answer_round(self) -> int | None:
        """The round answers and reviews go to; :class:`RoundClosed` while a running loop has no round
        open (after "Finish round", before the next round's queries exist)."""
        rnd = self.round_id()
        if rnd is None and self.status is not None:
            raise RoundClosed("no round is open for answers now: the run is busy (see the progress above); "
                              "nothing was stored")
        return rnd

    def forget_views(self) -> None:
        """Drop the cached image views and derived data (a new round brings new predictions)."""
        with self._lock:
            self._views.clear()
            self._memo.clear()

    def prefill_source(self) -> str | None:
        """Which model's prediction pre-fills the canvases of the current round: 'warmup' for round 1,
        'round<r-1>' for round r (the training step whose checkpoint scored the round); stored with
        every answer (labels.prefill). None without rounds."""
        rid = self.round_id()
        row = storage.get_round(self.db, rid) if rid is not None else None
        if row is None:
            return None
        return "warmup" if row["idx"] <= 1 else f"round{row['idx'] - 1}"

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
