"""Project store under real processes: kill -9 mid-write, and two concurrent annotator processes.

Each worker is a separate Python process on the same project.db file.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import storage as S

ROOT = Path(__file__).resolve().parents[1]

WRITER = r"""
import os, sys, time, numpy as np, storage as S
db = S.open_store(sys.argv[1], create=False)
name = sys.argv[2]
rng = np.random.default_rng(sum(map(ord, name)))
print("ready", flush=True)
gate = sys.argv[3] if len(sys.argv) > 3 else None
while gate and not os.path.exists(gate):  # start together with the other worker
    time.sleep(0.005)
while True:
    q = S.lease_next(db, name)
    if q is None:
        break
    if q["kind"] == "region":
        h, w = q["y1"] - q["y0"], q["x1"] - q["x0"]
        S.save_label(db, q["id"], name, patch=rng.integers(0, 19, (h, w)).astype(np.uint8), ms=5)
    else:
        S.save_label(db, q["id"], name, point_class=int(rng.integers(0, 19)), ms=5)
    print(q["id"], flush=True)  # acknowledged: save_label returned, the transaction committed
    time.sleep(0.002)  # "annotation time": SQLite's busy handler is not fair to a waiter otherwise
print("end", flush=True)
"""


def _spawn(workdir: Path, name: str, gate: Path | None = None) -> subprocess.Popen:
    args = [str(workdir), name] + ([str(gate)] if gate else [])
    return subprocess.Popen([sys.executable, "-c", WRITER, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _setup(workdir: Path, n_img: int, per_img: int) -> int:
    db = S.open_store(workdir)
    S.add_images(db, [dict(name=f"t{i}", height=64, width=64) for i in range(n_img)])
    run = S.start_run(db)
    rnd = S.add_round(db, run, 1, strategy="ripu")
    for i in range(n_img):
        regions = [(8 * (k // 8), 8 * (k % 8), 8 * (k // 8) + 8, 8 * (k % 8) + 8, float(k)) for k in range(per_img)]
        S.add_queries(db, rnd, f"t{i}", "region", regions[: per_img // 2])
        S.add_queries(db, rnd, f"t{i}", "pixel", [(k, k, 0.5) for k in range(per_img - per_img // 2)])
    db.close()
    return rnd


def _write_then_kill(work: Path, n_acks: int, delay: float) -> list[int]:
    """Run a writer, SIGKILL it ``delay`` s after its ``n_acks``-th acknowledgement; return all acks."""
    p = _spawn(work, "writer")
    acked = []
    try:
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        while len(acked) < n_acks:
            line = p.stdout.readline()
            assert line and line.strip() != "end", f"writer stopped early: {p.stderr.read()}"
            acked.append(int(line))
        time.sleep(delay)  # a random phase of the next write: inside or between transactions
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
        acked += [int(x) for x in p.stdout.read().split() if x.isdigit()]  # flushed before the kill
    finally:
        if p.poll() is None:
            p.kill()
        p.stdout.close()
        p.stderr.close()
    assert p.returncode == -signal.SIGKILL
    return acked


def test_sigkill_mid_write_loses_no_acknowledged_label(tmp_path):
    work = tmp_path / "w"
    _setup(work, n_img=10, per_img=60)  # 600 queries: far more than get written before the kills
    rng = np.random.default_rng(0)
    acked: list[int] = []
    for _ in range(4):  # kill, restart on the same store, kill again
        acked += _write_then_kill(work, 25, float(rng.uniform(0, 0.01)))
        db = S.open_store(work, create=False)
        assert S.integrity_ok(db)
        labeled = {r[0] for r in db.execute("SELECT query FROM labels WHERE annotator = 'writer'")}
        assert set(acked) <= labeled, f"lost acknowledged labels: {sorted(set(acked) - labeled)}"
        # label and 'done' were one transaction: no label without done, no done without label
        done = {r[0] for r in db.execute("SELECT id FROM queries WHERE status = 'done'")}
        assert done == labeled
        # at most the query being worked on at the kill stays leased (the writer gets it back)
        assert db.execute("SELECT count(*) FROM queries WHERE status = 'leased'").fetchone()[0] <= 1
        assert db["labels"].count == len(labeled)  # one row per query: restarts never duplicate
        db.close()
    assert len(set(acked)) == len(acked) and len(labeled) < 600  # it really was killed mid-way

    db = S.open_store(work, create=False)  # the store keeps working after the crashes
    q = S.lease_next(db, "after")
    S.save_label(db, q["id"], "after", point_class=1)
    assert S.get_query(db, q["id"])["status"] == "done"


def test_two_concurrent_annotators_each_query_labeled_once(tmp_path):
    work = tmp_path / "w"
    rnd = _setup(work, n_img=4, per_img=60)  # 240 queries
    gate = tmp_path / "go"
    procs = {name: _spawn(work, name, gate) for name in ("ann_a", "ann_b")}
    for p in procs.values():
        assert p.stdout.readline().strip() == "ready"
    gate.touch()
    seen = {}
    t0 = time.time()
    for name, p in procs.items():
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        lines = out.split()
        assert lines[-1] == "end", out[-500:]
        seen[name] = [int(x) for x in lines[:-1]]
    assert time.time() - t0 < 120

    a, b = seen["ann_a"], seen["ann_b"]
    assert len(a) == len(set(a)) and len(b) == len(set(b))
    assert not set(a) & set(b), f"queries labeled by both: {sorted(set(a) & set(b))[:10]}"
    assert len(a) + len(b) == 240
    assert len(a) > 0 and len(b) > 0  # they really competed for the same round

    db = S.open_store(work, create=False)
    assert S.integrity_ok(db)
    rows = db.execute("SELECT query, annotator FROM labels").fetchall()
    assert len(rows) == 240 and len({q for q, _ in rows}) == 240  # every query exactly one label
    owner = dict(rows)
    assert all(owner[q] == "ann_a" for q in a) and all(owner[q] == "ann_b" for q in b)
    prog = S.round_progress(db, rnd)
    assert prog["done"] == prog["total"] == 240 and prog["pending"] == prog["leased"] == 0
    assert prog["annotators"] == {"ann_a": len(a), "ann_b": len(b)}
    assert S.pending_count(db) == 0 and db["label_history"].count == 0
    # masks compose from both annotators' labels
    counts = S.labeled_pixel_count(db)
    assert set(counts) == {f"t{i}" for i in range(4)} and all(v > 0 for v in counts.values())


OPENER = r"""
import os, sys, time, storage as S
while not os.path.exists(sys.argv[2]):
    time.sleep(0.002)
db = S.open_store(sys.argv[1])
S.add_images(db, [dict(name=sys.argv[3])])
print(S.schema_version(db), flush=True)
"""


def test_concurrent_first_open_creates_schema_once(tmp_path):
    work, gate = tmp_path / "w", tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", OPENER, str(work), str(gate), f"img{i}"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}) for i in range(3)]
    time.sleep(0.3)
    gate.touch()
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0 and out.strip() == str(len(S.MIGRATIONS)), err
    db = S.open_store(work, create=False)
    assert S.integrity_ok(db) and db["images"].count == 3
    assert db.execute("SELECT count(*) FROM meta WHERE key = 'app'").fetchone()[0] == 1
