"""Integrity of a project's state files (issue 15 items 4-6): a damaged project.db or checkpoint gives
one line naming the file and what to do; a failed re-export leaves the previous export whole;
project.db alone holds the run once launch.py has exited (the WAL is checkpointed)."""
from __future__ import annotations

import errno
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures_datasets import make_folder, make_gta5
from tests.test_input_faults import FAST, cli, one_error_line


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 1-round oracle run made by launch.py (tiny), copied fresh for every test."""
    root = tmp_path_factory.mktemp("integrity")
    gta = make_gta5(root / "gta5", n=2, size=(40, 72))
    target = make_folder(root / "t", n=2, size=(64, 128))
    w = root / "w"
    args = ["--source", f"gta5:{gta}", "--source-size", "40x72", "--target", f"folder:{target}", *FAST,
            "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "2", "--workdir", str(w)]
    from app.cli import main

    assert main(args) == 0
    return w, args


@pytest.fixture
def run(finished, tmp_path):
    w, args = finished
    copy = tmp_path / "w"
    shutil.copytree(w, copy)
    return copy, [a if a != str(w) else str(copy) for a in args]


def _damage(db: Path) -> None:
    """Random bytes over the pages after the first, header intact (a bad disk sector)."""
    data = bytearray(db.read_bytes())
    rng = np.random.default_rng(0)
    data[4096:] = rng.integers(0, 256, len(data) - 4096, dtype=np.uint8).tobytes()
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["resume", "export", "annotate"])
def test_a_damaged_project_db_is_one_line(run, capsys, command, tmp_path):
    w, args = run
    (w / "project.db-wal").unlink(missing_ok=True)
    _damage(w / "project.db")
    argv = {"resume": [*args, "--resume"], "export": ["export", "--workdir", w, "--out", tmp_path / "out"],
            "annotate": ["annotate", "--workdir", w, "--port", "7999"]}[command]
    rc, _, err = cli(capsys, *argv)
    line = one_error_line(err)
    assert rc == 2 and "project.db" in line and "damaged" in line, line


def test_a_damaged_round_checkpoint_is_one_line_and_resume_retrains_it_once_deleted(run, capsys):
    w, args = run
    ck = w / "checkpoints" / "round1.pt"
    ck.write_bytes(ck.read_bytes()[:1000])                       # truncated
    rc, _, err = cli(capsys, *args, "--resume", "--rounds", "2")
    line = one_error_line(err)
    assert rc == 2 and "round1.pt" in line and "delete" in line and "--resume" in line, line
    ck.unlink()
    rc, out, err = cli(capsys, *args, "--resume", "--rounds", "2")
    assert rc == 0, err
    assert ck.is_file() and (w / "checkpoints" / "round2.pt").is_file()


def test_an_unneeded_damaged_warmup_checkpoint_is_not_read(run, capsys):
    w, args = run
    (w / "checkpoints" / "warmup.pt").write_bytes(b"")          # every round is finished: not needed
    rc, _, err = cli(capsys, *args, "--resume")
    assert rc == 0, err


def test_export_dense_with_a_damaged_checkpoint_is_one_line(run, capsys, tmp_path):
    w, _ = run
    (w / "checkpoints" / "round1.pt").write_bytes(b"PK\x03\x04 not really")
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", tmp_path / "out", "--dense")
    line = one_error_line(err)
    assert rc == 2 and "round1.pt" in line, line


def test_fit_names_a_damaged_checkpoint_it_would_resume_from(tmp_path):
    from core.models import Segmentor
    from core.train import CheckpointError, TrainConfig, fit
    from tests.toy import ToyDataset

    ck = tmp_path / "ck.pt"
    ck.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="ck.pt.*delete it"):
        fit(Segmentor(19, weights=None), TrainConfig(iterations=1, crop_size=(32, 64)), ToyDataset(n=2, size=(32, 64)),
            checkpoint=ck, progress=False)


def test_a_failed_re_export_leaves_the_previous_export_whole(run, capsys, tmp_path, monkeypatch):
    w, _ = run
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", out)
    assert rc == 0, err
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    import core.fileio as fio

    real, n = fio.os.fsync, {"i": 0}

    def full_disk(fd):   # the 4th file of the re-export does not fit
        n["i"] += 1
        if n["i"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    # the re-export differs: the dense fill changes every mask
    monkeypatch.setattr(fio.os, "fsync", full_disk)
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", out, "--dense", "--threshold", "0")
    assert rc == 2 and "disk full" in one_error_line(err)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert after == before                                         # the old export, whole
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]   # no leftovers
    manifest = json.loads((out / "manifest.json").read_text())
    assert all((out / f"{stem}_gtFine_labelTrainIds.png").is_file() for stem in manifest["images"])


def test_project_db_alone_holds_every_step_finished_before_a_kill(finished, tmp_path):
    """SIGKILL during round 1's training: copying project.db alone (no -wal, no -shm) keeps every
    step that had finished (launch.py checkpoints the WAL at each step boundary)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    _, args = finished
    w = tmp_path / "killed"
    argv = [a for a in args]
    argv[argv.index("--workdir") + 1] = str(w)
    argv[argv.index("--round-iterations") + 1] = "400"          # slow enough to be killed inside it
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "launch.py"), *argv], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None:
            time.sleep(0.2)
            try:
                con = sqlite3.connect(w / "project.db", timeout=1)
                n = con.execute("SELECT count(*) FROM steps WHERE name = 'round1.annotate'").fetchone()[0]
                con.close()
            except sqlite3.Error:
                continue
            if n:
                break
        assert p.poll() is None, "the run ended before it could be killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(w / "project.db", alone / "project.db")           # no -wal, no -shm
    con = sqlite3.connect(alone / "project.db")
    steps = {r[0] for r in con.execute("SELECT name FROM steps")}
    labels = con.execute("SELECT count(*) FROM labels").fetchone()[0]
    con.close()
    assert {"data", "warmup", "round0.eval", "round1.score", "round1.annotate"} <= steps and labels > 0, steps


@pytest.mark.parametrize("budget", ["2.2%", "8px"])
def test_kill_after_a_mid_fit_checkpoint_then_resume_selects_the_uninterrupted_queries(finished, tmp_path, budget):
    """DACS (EMA teacher state) in round 1's training, checkpoints every 5 of 15 iterations: a run
    SIGKILLed after a mid-fit checkpoint and resumed selects exactly the queries of round 2 that the
    uninterrupted run selects (RA and PA), so the resumed training ended with the same weights."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import torch

    from tests.test_cli import _boxes

    _, args = finished
    argv = list(args)
    for flag, value in (("--rounds", "2"), ("--round-iterations", "15"), ("--budget", budget)):
        argv[argv.index(flag) + 1] = value
    argv += ["--checkpoint-every", "5", "--method", "dacs"]
    launch = [sys.executable, str(Path(__file__).resolve().parents[1] / "launch.py")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def with_workdir(w):
        a = list(argv)
        a[a.index("--workdir") + 1] = str(w)
        return a

    ref = tmp_path / "ref"
    assert subprocess.run([*launch, *with_workdir(ref)], env=env, capture_output=True).returncode == 0
    w = tmp_path / "killed"
    p = subprocess.Popen([*launch, *with_workdir(w)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ck = w / "checkpoints" / "round1.pt"
    deadline = time.time() + 300
    try:
        while time.time() < deadline and p.poll() is None and not ck.exists():
            time.sleep(0.02)
        assert p.poll() is None, "the run ended before it could be killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    assert 5 <= torch.load(ck, weights_only=True)["iteration"] < 15         # killed mid-fit
    assert subprocess.run([*launch, *with_workdir(w), "--resume"], env=env, capture_output=True).returncode == 0
    boxes = _boxes(ref)
    assert any(r[0] == 2 for r in boxes) and _boxes(w) == boxes


def test_resume_of_a_run_started_from_another_runs_warmup_pt(finished, tmp_path, capsys):
    """README's recipe `--init OTHER/checkpoints/warmup.pt`: the stored --init file is found on --resume
    and by export --dense (it is not this run's own checkpoints/warmup.pt)."""
    w, args = finished
    argv = list(args)
    argv[argv.index("--workdir") + 1] = str(tmp_path / "from_init")
    argv[argv.index("--budget") + 1] = "none"
    argv += ["--init", str(w / "checkpoints" / "warmup.pt")]
    rc, _, err = cli(capsys, *argv)
    assert rc == 0, err
    rc, _, err = cli(capsys, *argv, "--resume")
    assert rc == 0, err
