"""Opening the project store: one SQLite file ``project.db`` per workdir, through sqlite-utils.

- schema versioned with ``PRAGMA user_version`` and the ordered ``MIGRATIONS`` list;
- WAL journal, ``synchronous=FULL`` (a committed label survives power loss), a busy timeout so
  concurrent processes wait for each other instead of failing;
- every bad input (corrupt file, someone else's SQLite db, a newer schema, a read-only or
  missing workdir) raises :class:`StoreError` with one message the CLI can print as is.

Write transactions that read before they write use :func:`immediate` (``BEGIN IMMEDIATE``), so
two processes never both decide on the same row.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import sqlite3
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from sqlite_utils import Database

DB_NAME = "project.db"
APP_NAME = "ada-studio"
APPLICATION_ID = 0x41445331  # "ADS1", visible to `file` and sqlite3 tools
BUSY_TIMEOUT_S = 60.0


class StoreError(Exception):
    """A problem with the project store; the message is meant for the user as is."""


class InvalidInput(StoreError, ValueError):
    """A caller passed something the store cannot accept (unknown id, wrong patch shape...)."""


class LeaseError(StoreError):
    """The query is held by another annotator's live lease."""


def now_iso() -> str:
    """Current UTC time as ISO-8601 text with microseconds (sorts chronologically)."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds")


def encode_patch(patch: np.ndarray) -> bytes:
    """A (h,w) uint8 class patch as PNG bytes (lossless, single channel)."""
    ok, buf = cv2.imencode(".png", np.ascontiguousarray(patch, np.uint8))
    if not ok:
        raise StoreError("could not encode label patch as PNG")
    return buf.tobytes()


def decode_patch(data: bytes) -> np.ndarray:
    """PNG bytes from :func:`encode_patch` back to a (h,w) uint8 array."""
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.ndim != 2 or arr.dtype != np.uint8:
        raise StoreError("a stored label patch is not a single-channel 8-bit PNG (corrupt store?)")
    return arr



# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------

_SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    domain TEXT NOT NULL DEFAULT 'target',
    split TEXT NOT NULL DEFAULT 'train',
    path TEXT,
    height INTEGER,
    width INTEGER
);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    started TEXT NOT NULL,
    config TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL DEFAULT 'running'
);
CREATE TABLE steps (
    run INTEGER NOT NULL REFERENCES runs(id),
    name TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'done',
    finished TEXT,
    PRIMARY KEY (run, name)
);
CREATE TABLE rounds (
    id INTEGER PRIMARY KEY,
    run INTEGER REFERENCES runs(id),
    idx INTEGER NOT NULL,
    budget REAL,
    strategy TEXT,
    status TEXT NOT NULL DEFAULT 'open',
    UNIQUE (run, idx)
);
CREATE TABLE queries (
    id INTEGER PRIMARY KEY,
    image INTEGER NOT NULL REFERENCES images(id),
    round INTEGER REFERENCES rounds(id),
    kind TEXT NOT NULL CHECK (kind IN ('region', 'pixel')),
    y0 INTEGER, x0 INTEGER, y1 INTEGER, x1 INTEGER,
    y INTEGER, x INTEGER,
    score REAL,
    status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'leased', 'done', 'skipped', 'flagged')),
    lease_owner TEXT,
    lease_expiry REAL,
    reason TEXT,
    status_by TEXT,
    created TEXT NOT NULL
);
CREATE UNIQUE INDEX queries_unique ON queries (
    coalesce(round, -1), image, kind,
    coalesce(y0, -1), coalesce(x0, -1), coalesce(y1, -1), coalesce(x1, -1),
    coalesce(y, -1), coalesce(x, -1));
CREATE INDEX queries_queue ON queries (status, round, score);
CREATE INDEX queries_image ON queries (image);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY,
    query INTEGER NOT NULL REFERENCES queries(id),
    annotator TEXT NOT NULL,
    patch BLOB,
    point_class INTEGER,
    ms INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL,
    review TEXT NOT NULL DEFAULT 'pending' CHECK (review IN ('pending', 'approved', 'rejected')),
    reviewer TEXT,
    reviewed TEXT,
    UNIQUE (query, annotator)
);
CREATE TABLE label_history (
    id INTEGER PRIMARY KEY,
    label INTEGER NOT NULL REFERENCES labels(id),
    query INTEGER NOT NULL,
    annotator TEXT NOT NULL,
    patch BLOB,
    point_class INTEGER,
    ms INTEGER,
    created TEXT,
    review TEXT,
    reviewer TEXT,
    reviewed TEXT,
    replaced TEXT NOT NULL
);
CREATE INDEX label_history_label ON label_history (label);
CREATE TABLE checkpoints (
    id INTEGER PRIMARY KEY,
    run INTEGER REFERENCES runs(id),
    step TEXT NOT NULL,
    path TEXT NOT NULL,
    created TEXT NOT NULL
);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    run INTEGER REFERENCES runs(id),
    round INTEGER,
    key TEXT NOT NULL,
    value REAL,
    json TEXT,
    created TEXT NOT NULL
);
CREATE INDEX metrics_run ON metrics (run, round, key);
"""


def _migration_1(conn: sqlite3.Connection) -> None:
    for stmt in _SCHEMA_1.split(";"):
        if stmt.strip():
            conn.execute(stmt)
    conn.execute("INSERT INTO meta (key, value) VALUES ('app', ?), ('created', ?)", (APP_NAME, now_iso()))


_BUDGET_UNITS = {"%": ("percent", 1.0), "px": ("pixels", 1.0), "click": ("clicks", 1.0), "clicks": ("clicks", 1.0),
                 "s": ("seconds", 1.0), "sec": ("seconds", 1.0), "min": ("seconds", 60.0), "h": ("seconds", 3600.0)}


def budget_parts(spec) -> tuple[str | None, float | None, str | None]:
    """A round's budget as stored: (spec text, value, unit). ``"2.2%"`` -> ("2.2%", 2.2, "percent")
    (percent of each target image's pixels over all rounds, RA); ``"40px"`` -> ("40px", 40.0, "pixels")
    (pixels per target image over all rounds, PA); ``"200clicks"`` -> ("200clicks", 200.0, "clicks") and
    ``"30min"`` -> ("30min", 1800.0, "seconds") (over the whole target pool and all rounds; ``"30min/round"``
    -> ("30min/round", 1800.0, "seconds/round") per round); a bare float
    in (0, 1] (the pre-v2 REAL column, e.g. 0.022) -> ("2.2%", 2.2, "percent"); None -> (None, None, None).
    Raises StoreError for anything else."""
    if spec is None:
        return None, None, None
    if isinstance(spec, (int, float)) and not isinstance(spec, bool):
        if 0 < spec <= 1:
            value = round(float(spec) * 100, 9)
            return f"{value:g}%", value, "percent"
        raise StoreError(f"budget {spec!r}: a bare number must be a fraction in (0, 1]")
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(%|px|clicks?|sec|s|min|h)\s*(/\s*round)?\s*", str(spec), re.IGNORECASE)
    if not m:
        raise StoreError(f"budget {spec!r}: expected '<P>%', '<N>px', '<N>clicks' or a time such as 30min")
    suffix = m.group(2).lower()
    unit, factor = _BUDGET_UNITS[suffix]
    value = float(m.group(1))
    text = {"percent": "%", "pixels": "px", "clicks": "clicks"}.get(unit, suffix)
    if unit in ("clicks", "seconds"):   # the spec text as given, to its 12 significant digits
        value = float(f"{value:.12g}")
        return (f"{value:.12g}{text}" + ("/round" if m.group(3) else ""), value * factor,
                unit + ("/round" if m.group(3) else ""))
    if m.group(3):
        raise StoreError(f"budget {spec!r}: only clicks and time budgets can be given per round")
    return f"{value:g}{text}", value * factor, unit


def _migration_2(conn: sqlite3.Connection) -> None:
    """rounds.budget held either a fraction (REAL) or, from the loop, the spec text ("2.2%") in a REAL
    column; keep the spec text, its value and unit in their own columns (budget itself stays, unused)."""
    conn.execute("ALTER TABLE rounds ADD COLUMN budget_spec TEXT")     # '2.2%' or '40px', as given
    conn.execute("ALTER TABLE rounds ADD COLUMN budget_value REAL")    # 2.2 (percent) or 40 (pixels)
    conn.execute("ALTER TABLE rounds ADD COLUMN budget_unit TEXT")     # 'percent' | 'pixels' (per target image) | 'clicks' | 'seconds' (pool)
    for rid, budget in conn.execute("SELECT id, budget FROM rounds WHERE budget IS NOT NULL").fetchall():
        try:
            spec, value, unit = budget_parts(budget)
        except StoreError:
            continue
        conn.execute("UPDATE rounds SET budget_spec = ?, budget_value = ?, budget_unit = ? WHERE id = ?",
                     (spec, value, unit, rid))


def _migration_3(conn: sqlite3.Connection) -> None:
    """Human effort per answer: labels.ms is the *active* milliseconds spent on the query (idle gaps
    over 20 s excluded, summed over every save that changed the answer); labels.edits the edit
    operations (strokes, fills, class picks, undo/redo; 1 per point answer); labels.prefill which
    model's prediction pre-filled the canvas ('warmup' or 'round<r>', the training step whose
    checkpoint scored the round; NULL for answers that had none, e.g. the oracle's)."""
    for table in ("labels", "label_history"):
        conn.execute(f"ALTER TABLE {table} ADD COLUMN edits INTEGER NOT NULL DEFAULT 0")
        conn.execute(f"ALTER TABLE {table} ADD COLUMN prefill TEXT")


def _migration_4(conn: sqlite3.Connection) -> None:
    """Honeypots: queries whose answer is known (``--honeypot-rate``), mixed into the queue and shown
    like any other; their answers score the annotators (storage.honeypot_scores) and are never used
    for training, counted in the budget or exported. ``truth``: the known region patch (encoded like
    labels.patch), ``truth_class``: the known class of a pixel query."""
    conn.execute("ALTER TABLE queries ADD COLUMN honeypot INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE queries ADD COLUMN truth BLOB")
    conn.execute("ALTER TABLE queries ADD COLUMN truth_class INTEGER")


def _migration_5(conn: sqlite3.Connection) -> None:
    """Overlap (``--overlap``): ``queries.answers_needed``, how many annotators answer the query (1, or
    2-3 for an overlap query); it stays pending until that many live answers exist."""
    conn.execute("ALTER TABLE queries ADD COLUMN answers_needed INTEGER NOT NULL DEFAULT 1")


def _migration_6(conn: sqlite3.Connection) -> None:
    """Query units and costs. ``queries.shape``: a superpixel query's shape, a PNG (encoded like
    labels.patch) of its box, 1 = inside the superpixel, 0 = outside (NULL for square regions and
    pixels; a 'region' with a shape is a superpixel, answered with one class for the shape's pixels);
    ``area``: label pixels the query asks for (box area, shape pixels, 1 for a pixel); ``cost_s``: the
    cost model's predicted human seconds when it was selected; ``features``: the cost model's input
    (JSON list, in core.acquisition.cost.FEATURES order) the run refits the model on."""
    conn.execute("ALTER TABLE queries ADD COLUMN shape BLOB")
    conn.execute("ALTER TABLE queries ADD COLUMN area INTEGER")
    conn.execute("ALTER TABLE queries ADD COLUMN cost_s REAL")
    conn.execute("ALTER TABLE queries ADD COLUMN features TEXT")


# Migration i (0-based) brings the schema from user_version i to i+1. Append only; never edit
# a released migration.
MIGRATIONS: list[Callable[[sqlite3.Connection], None]] = [_migration_1, _migration_2, _migration_3, _migration_4,
                                                          _migration_5, _migration_6]
SCHEMA_VERSION = len(MIGRATIONS)


# --------------------------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------------------------

@contextlib.contextmanager
def immediate(db: Database) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception).

    Takes the write lock up front (waiting up to the busy timeout), so reads inside the block
    see the state the writes apply to. Yields the raw ``sqlite3.Connection``. Not nestable.
    """
    conn = db.conn
    if conn.in_transaction:
        raise StoreError("internal error: a store transaction is already open on this connection")
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


# --------------------------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------------------------

def _check_workdir(workdir: Path, create: bool) -> None:
    if workdir.exists() and not workdir.is_dir():
        raise StoreError(f"workdir {workdir} exists but is not a directory")
    if not workdir.exists():
        if not create:
            raise StoreError(f"no project at {workdir}: the directory does not exist")
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create workdir {workdir}: {e.strerror or e}") from None
    # the store writes project.db, project.db-wal and project.db-shm next to each other
    if not os.access(workdir, os.W_OK | os.X_OK):
        raise StoreError(f"workdir {workdir} is not writable; the project store needs to write there")


def open_store(workdir: str | os.PathLike, create: bool = True) -> Database:
    """Open (creating and migrating as needed) ``workdir/project.db`` and return a sqlite-utils
    ``Database``.

    ``create=False`` refuses to create a new project (raises :class:`StoreError` when
    ``project.db`` does not exist) but still migrates an older schema. Raises
    :class:`StoreError` for a corrupt file, a SQLite db of another program, a schema newer than
    this code, or a read-only / unusable workdir. One Database per thread (sqlite3 connections
    are not shared across threads); open as many as needed, they coordinate through SQLite locks.
    """
    workdir = Path(workdir)
    _check_workdir(workdir, create)
    path = workdir / DB_NAME
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} exists but is not a file")
    if not path.exists() and not create:
        raise StoreError(f"no project at {workdir}: {DB_NAME} does not exist (run without --resume to start one)")
    if path.exists() and not os.access(path, os.R_OK | os.W_OK):
        raise StoreError(f"{path} is not readable and writable by this user")
    try:
        conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as e:
        raise StoreError(f"cannot open {path}: {e}") from None
    try:
        _prepare(conn, path)
        db = Database(conn)
    except StoreError:
        conn.close()
        raise
    except sqlite3.DatabaseError as e:
        conn.close()
        raise StoreError(describe_error(path, e)) from None
    return db


def open_readonly(workdir: str | os.PathLike) -> Database:
    """``workdir/project.db`` opened read-only (SQLite ``mode=ro``): every write through it raises
    ``sqlite3.OperationalError`` ("attempt to write a readonly database"). For processes that only read
    a run's labels while another process owns the store (torchrun ranks > 0). Raises StoreError when
    the file does not exist or cannot be opened."""
    path = Path(workdir) / DB_NAME
    if not path.is_file():
        raise StoreError(f"no project at {workdir}: {DB_NAME} does not exist")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as e:
        raise StoreError(describe_error(path, e)) from None
    return Database(conn)


def describe_error(path: Path, e: sqlite3.Error) -> str:
    """One line for a SQLite error on ``path``: damaged (restore a backup), read-only, locked, disk full."""
    msg = str(e)
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return f"{path} is damaged or not a project database ({msg}); restore project.db from a backup"
    if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
        return f"{path} cannot be written (read-only file or directory?): {msg}"
    if "locked" in msg or "busy" in msg:
        return f"{path} is locked by another process for too long: {msg}"
    if "full" in msg:
        return f"{path}: the disk is full ({msg}); free space and run again (nothing is lost)"
    return f"{path}: {msg}"


_CHECKED: set[str] = set()   # project.db files quick_check'ed by this process


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    # reading the header validates the file: a non-SQLite file fails here
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    _check_ours(path, version, tables, conn)
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    if version < len(MIGRATIONS):
        _migrate(conn, path)
    if tables and str(path.resolve()) not in _CHECKED:   # an existing project, once per process: a damaged
        bad = conn.execute("PRAGMA quick_check(1)").fetchone()[0]   # page fails here, not at first use
        if bad != "ok":
            raise StoreError(f"{path} is damaged ({bad}); restore project.db from a backup (see README, Backups)")
        _CHECKED.add(str(path.resolve()))


def _check_ours(path: Path, version: int, tables: set[str], conn: sqlite3.Connection) -> None:
    if tables:  # an empty database is ours to create; otherwise it must carry our marker
        app = None
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key = 'app'").fetchone()
            app = row[0] if row else None
        if app != APP_NAME:
            shown = ", ".join(sorted(tables)[:8]) + (", ..." if len(tables) > 8 else "")
            raise StoreError(f"{path} is a SQLite database of another program (tables: {shown}); "
                             f"refusing to use it as a project store")
    if version > len(MIGRATIONS):
        raise StoreError(
            f"{path} has schema version {version}, newer than this program supports "
            f"({len(MIGRATIONS)}); upgrade the program or use another workdir")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        # re-read under the write lock: another process may have migrated meanwhile
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        _check_ours(path, version, tables, conn)
        for i in range(version, len(MIGRATIONS)):
            MIGRATIONS[i](conn)
            conn.execute(f"PRAGMA user_version = {i + 1}")
        if version == 0:
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def schema_version(db: Database) -> int:
    """The schema version stored in the database (``PRAGMA user_version``)."""
    return db.execute("PRAGMA user_version").fetchone()[0]


def checkpoint_wal(db: Database) -> None:
    """Copy SQLite's write-ahead log into project.db (``PRAGMA wal_checkpoint(PASSIVE)``: never waits
    for readers), so project.db alone holds every completed step; called at each step boundary and
    when a run ends."""
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")


def integrity_ok(db: Database) -> bool:
    """True when ``PRAGMA integrity_check`` reports ``ok``."""
    return db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
