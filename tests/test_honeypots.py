"""Honeypots (``--honeypot-rate``): queries with a known answer mixed into the queue; they score the
annotators and never train, count in the budget or get exported."""
import json
import sqlite3

import numpy as np

import storage
from tests.test_input_faults import cli

SYNTH = ["--synth-size", "64x128", "--synth-counts", "6,3,3", "--crop", "64x128", "--output-stride", "16",
         "--iterations", "0", "--round-iterations", "0", "--device", "cpu", "--weights", "none"]


def _store(tmp_path):
    db = storage.open_store(tmp_path)
    storage.add_images(db, [dict(name="a", domain="target", split="train", path="", height=32, width=32)])
    rid = storage.add_round(db, None, 1, budget="2.2%", strategy="ripu")
    return db, rid


def test_two_annotators_of_different_accuracy_are_ranked_and_honeypots_train_nothing(tmp_path):
    db, rid = _store(tmp_path)
    rng = np.random.default_rng(0)
    real = storage.add_queries(db, rid, "a", "region", [(0, 0, 8, 8, 0.9)])
    truths = [rng.integers(0, 4, (8, 8)).astype(np.uint8) for _ in range(4)]
    truths[0][:2] = 255                                     # unknown pixels of a truth are not scored
    boxes = [(8, 0, 16, 8, 0.5), (8, 8, 16, 16, 0.4), (16, 0, 24, 8, 0.3), (16, 8, 24, 16, 0.2)]
    hp = storage.add_queries(db, rid, "a", "region", boxes, truths=truths)
    hp += storage.add_queries(db, rid, "a", "pixel", [(30, 30, 0.1)], truths=[2])
    storage.save_label(db, real[0], "good", patch=np.full((8, 8), 1, np.uint8))
    for q, t in zip(hp[:4], truths):
        storage.save_label(db, q, "good", patch=t)           # right everywhere
    storage.save_label(db, hp[4], "good", point_class=2)
    db.execute("UPDATE queries SET status = 'pending', status_by = NULL WHERE honeypot = 1")  # let a 2nd answer in
    for q, t in zip(hp[:4], truths):
        wrong = t.copy()
        flip = rng.random(t.shape) < 0.3
        wrong[flip] = (wrong[flip] + 1) % 4                  # about 30 % of the pixels wrong
        storage.save_label(db, q, "sloppy", patch=wrong)
    storage.save_label(db, hp[4], "sloppy", point_class=3)
    scores = storage.honeypot_scores(db)
    assert [s["annotator"] for s in scores] == ["good", "sloppy"]
    good, sloppy = scores
    known = sum(int((t != 255).sum()) for t in truths) + 1
    assert good["pixels"] == sloppy["pixels"] == known and good["honeypots"] == 5
    assert good["accuracy"] == 100.0 and good["miou"] == 100.0
    assert 55 < sloppy["accuracy"] < 85 and sloppy["miou"] < good["miou"]
    # only the real query trains and counts
    mask = storage.label_mask(db, "a")
    assert (mask[:8, :8] == 1).all() and (mask[8:] == 255).all()
    run = storage.start_run(db, {})
    db.execute("UPDATE rounds SET run = ?", [run])
    assert storage.labeled_pixels(db, run) == 64
    man = storage.export(db, tmp_path / "out", __import__("core.data.labels", fromlist=["x"]).CITYSCAPES19)
    assert [h["annotator"] for h in man["honeypots"]] == ["good", "sloppy"]
    assert set(man["honeypots"][0]["iou"]) <= {"road", "sidewalk", "building", "wall"}


def test_an_oracle_run_with_honeypots(tmp_path, capsys):
    w = tmp_path / "w"
    rc, out, err = cli(capsys, *SYNTH, "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "2",
                       "--honeypot-rate", "0.25", "--workdir", w)
    assert rc == 0, err
    con = sqlite3.connect(w / "project.db")
    real, hp = (con.execute("SELECT count(*) FROM queries WHERE honeypot = ?", [h]).fetchone()[0] for h in (0, 1))
    assert real > 0 and hp == round(0.25 * real)
    assert con.execute("SELECT count(*) FROM queries WHERE honeypot = 1 AND status = 'done'").fetchone()[0] == hp
    # the budget counts the real queries only
    pct = con.execute("SELECT value FROM metrics WHERE key = 'labeled_pct' AND round = 1").fetchone()[0]
    area = con.execute("SELECT sum((y1 - y0) * (x1 - x0)) FROM queries WHERE honeypot = 0").fetchone()[0]
    total = con.execute("SELECT sum(height * width) FROM images").fetchone()[0]
    assert abs(pct - 100 * area / total) < 1e-9
    con.close()
    rc, _, err = cli(capsys, "export", "--workdir", w, "--out", tmp_path / "out")
    assert rc == 0, err
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["honeypots"][0]["annotator"] == "oracle" and man["honeypots"][0]["accuracy"] == 100.0
    rc, _, err = cli(capsys, *SYNTH, "--budget", "2.2%", "--oracle", "--honeypot-rate", "1.5", "--workdir",
                     tmp_path / "w2")
    assert rc == 2 and "--honeypot-rate" in err


def test_without_masks_honeypots_re_ask_answers_a_reviewer_approved(tmp_path):
    """A target without ground truth: round 2's honeypots are round 1 queries whose answer a reviewer
    approved, asked again with that answer as the truth (apart from round 2's own queries)."""
    from types import SimpleNamespace

    from app.session import ActiveSession

    db = storage.open_store(tmp_path)
    storage.add_images(db, [dict(name=n, domain="target", split="train", path="", height=32, width=32)
                            for n in ("a", "b")])
    run = storage.start_run(db, {})
    r1, r2 = (storage.add_round(db, run, k, budget="2.2%", strategy="ripu") for k in (1, 2))
    q_ok, q_no = storage.add_queries(db, r1, "a", "region", [(0, 0, 8, 8, 0.9), (8, 8, 16, 16, 0.5)])
    ok_patch = np.full((8, 8), 3, np.uint8)
    lab_ok = storage.save_label(db, q_ok, "ann", patch=ok_patch)
    storage.save_label(db, q_no, "ann", patch=np.full((8, 8), 4, np.uint8))       # answered, never approved
    storage.review(db, lab_ok, True, "rev")
    assert [a["name"] for a in storage.approved_answers(db, r2)] == ["a"]
    assert storage.approved_answers(db, r1) == []                                  # nothing before round 1
    real = (16, 16, 24, 24, 0.7)
    storage.add_queries(db, r2, "b", "region", [real])
    session = SimpleNamespace(db=db, target=SimpleNamespace(names=["a", "b"], has_labels=False),
                              cfg=SimpleNamespace(honeypot_rate=1.0, train_seed=0, seed=0))
    session._reask_approved = lambda *a: ActiveSession._reask_approved(session, *a)
    ActiveSession.add_honeypots(session, 2, r2, {1: [real]}, "region", 4)
    hp = db.execute("SELECT image, y0, x0, y1, x1, truth FROM queries WHERE round = ? AND honeypot = 1", [r2]).fetchall()
    assert len(hp) == 1 and hp[0][1:5] == (0, 0, 8, 8)
    assert (storage.decode_patch(hp[0][5]) == ok_patch).all()
