"""The whole active loop under torchrun: 2 gloo processes on the CPU, real launch.py runs.

* sharded scoring selects exactly the queries of one process (same picks, same order of writes);
* a 2-rank run with training (DACS + CRA) is killed in round 2 and resumed by ONE process (N -> M);
* rank 1 never opens project.db for writing (its open file descriptors are read from /proc).
"""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import storage
from tests.toy import step_marked

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synth-size", "64x128", "--synth-counts", "6,6,4", "--crop", "64x128", "--output-stride", "16",
        "--device", "cpu", "--budget", "2.2%", "--oracle", "--rounds", "2", "--region-radius", "1"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _env(cache):
    return {**os.environ, "SEGSTUDIO_CACHE": str(cache), "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _cmd(args, ranks: int):
    if ranks == 1:
        return [sys.executable, str(ROOT / "launch.py"), *args]
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={ranks}", "--standalone",
            str(ROOT / "launch.py"), *args]


def _run(args, cache, ranks):
    return subprocess.run(_cmd(args, ranks), env=_env(cache), capture_output=True, text=True, timeout=600, cwd=ROOT)


def _queries(w):
    con = sqlite3.connect(w / "project.db")
    rows = con.execute("SELECT round, image, kind, y0, x0, y1, x1, score FROM queries ORDER BY id").fetchall()
    con.close()
    return rows


def test_two_ranks_select_the_same_queries_in_the_same_order_as_one_process(tmp_path, cache):
    args = [*TINY, "--iterations", "0", "--round-iterations", "0", "--strategy", "ripu"]
    one = _run([*args, "--workdir", str(tmp_path / "one")], cache, 1)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _run([*args, "--workdir", str(tmp_path / "two")], cache, 2)
    assert two.returncode == 0, two.stderr[-3000:]
    q1, q2 = _queries(tmp_path / "one"), _queries(tmp_path / "two")
    assert len(q1) > 0 and {r[0] for r in q1} == {1, 2}
    assert q1 == q2
    # the annotator cache (written by rank 0 only) holds every image of both rounds
    for w in ("one", "two"):
        assert len(list((tmp_path / w / "cache" / "round2").glob("*.npz"))) == 6
    # resuming the finished 2-rank run with one process says it is done and shows each round's own share
    again = _run([*args, "--workdir", str(tmp_path / "two"), "--resume"], cache, 1)
    assert again.returncode == 0 and "had done all its rounds already" in again.stdout, again.stdout[-2000:]
    shares = [line.split("|")[2].strip() for line in again.stdout.splitlines() if line.startswith(("| 1 |", "| 2 |"))]
    assert len(shares) == 2 and shares[0] != shares[1], shares


def _rank_pid(workdir: Path, rank: str):
    """The pid of the torchrun worker of rank ``rank`` running in ``workdir`` (None before it started)."""
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(workdir).encode() in (d / "cmdline").read_bytes() \
                    and f"RANK={rank}".encode() in (d / "environ").read_bytes().split(b"\0"):
                return int(d.name)
        except OSError:
            continue
    return None


def _pids(workdir: Path) -> list[int]:
    """Every process running in ``workdir`` (its path is on their command line)."""
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and str(workdir).encode() in (d / "cmdline").read_bytes() and \
                    int(d.name) != os.getpid():
                out.append(int(d.name))
        except OSError:
            continue
    return out


def _db_fds(pid: int, db: Path) -> list[Path]:
    try:
        return [f for f in Path(f"/proc/{pid}/fd").iterdir() if os.path.realpath(f) == str(db.resolve())]
    except OSError:
        return []


def _db_write_fds(pid: int, db: Path) -> list[str]:
    """Descriptors of ``pid`` on project.db (the main file) opened for writing (O_WRONLY / O_RDWR)."""
    out = []
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
            flags = int((Path(f"/proc/{pid}/fdinfo") / fd.name).read_text().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue
        if target == str(db.resolve()) and flags & 0o3:
            out.append(f"fd {fd.name} flags {oct(flags)}")
    return out


def test_torchrun_loop_killed_in_round_two_resumes_with_one_rank_and_rank1_only_reads(tmp_path, cache):
    w = tmp_path / "w"
    args = [*TINY, "--iterations", "3", "--round-iterations", "4", "--method", "dacs+cra", "--workdir", str(w)]
    p = subprocess.Popen(_cmd(args, 2), env=_env(cache), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         cwd=ROOT, start_new_session=True)
    deadline = time.time() + 400
    checked = None
    try:
        while time.time() < deadline:   # kill once round 2's queries exist but before round 2 has trained
            time.sleep(0.1)
            pid = _rank_pid(w, "1") if checked is None else None
            if pid is not None and _db_fds(pid, w / "project.db"):   # rank 1 has the store open: check how
                checked = _db_write_fds(pid, w / "project.db")
            if step_marked(w, "round2.score"):
                break
        assert p.poll() is None, p.stderr.read()[-3000:]
        for pid in [p.pid, *_pids(w)]:   # torchrun's agent and its workers (their own process groups)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        p.wait()
        deadline = time.time() + 30
        while _pids(w) and time.time() < deadline:
            time.sleep(0.1)
    assert checked == [], f"rank 1 holds project.db open for writing: {checked}"
    con = sqlite3.connect(w / "project.db")
    assert con.execute("SELECT count(*) FROM steps WHERE name = 'round2.train'").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM steps WHERE name = 'round1.train'").fetchone()[0] == 1
    n_before = con.execute("SELECT count(*) FROM queries").fetchone()[0]
    steps = [n for (n,) in con.execute("SELECT name FROM steps")]
    con.close()
    r = _run([*args, "--resume"], cache, 1)      # started with 2 ranks, resumed with 1
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| 2 |" in r.stdout, str(steps) + r.stderr[-2000:]
    assert "round 2: train" in r.stderr
    con = sqlite3.connect(w / "project.db")
    assert con.execute("SELECT count(*) FROM queries").fetchone()[0] == n_before   # round 2 not asked twice
    assert con.execute("SELECT status FROM runs ORDER BY id DESC").fetchone()[0] == "done"
    con.close()


def test_readonly_store_refuses_writes(tmp_path):
    db = storage.open_store(tmp_path)
    db.execute("CREATE TABLE IF NOT EXISTS t (x)")
    ro = storage.open_readonly(tmp_path)
    assert ro.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
    with pytest.raises(sqlite3.OperationalError, match="readonly|read-only"):
        ro.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(storage.StoreError):
        storage.open_readonly(tmp_path / "nowhere")
