"""What a run did: runs (config, status), resume steps, checkpoints and metrics.

Times are ISO-8601 UTC strings (``now_iso``); a run's ``config`` is the RunConfig as JSON.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

from sqlite_utils import Database

from storage.db import InvalidInput, checkpoint_wal, now_iso


# --------------------------------------------------------------------------------------------
# runs, steps, checkpoints
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
    """Record that step ``name`` of ``run`` (e.g. 'data', 'warmup', 'round1.train') finished, and copy the
    write-ahead log into project.db (a step boundary: project.db alone then holds the run so far)."""
    db.execute("INSERT INTO steps (run, name, status, finished) VALUES (?, ?, ?, ?) "
               "ON CONFLICT(run, name) DO UPDATE SET status = excluded.status, finished = excluded.finished",
               (run, name, status, now_iso()))
    checkpoint_wal(db)


def unmark_step(db: Database, run: int, name: str) -> None:
    """Forget that step ``name`` of ``run`` finished (its result is gone: ``--resume`` redoes it)."""
    db.execute("DELETE FROM steps WHERE run = ? AND name = ?", (run, name))


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
