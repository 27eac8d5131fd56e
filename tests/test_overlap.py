"""Overlap (``--overlap``): a share of the queries is answered by two annotators; their agreement is
measured and a consensus rule decides what trains."""
import numpy as np
import pytest

import storage


def _store(tmp_path, needed=2):
    db = storage.open_store(tmp_path)
    storage.add_images(db, [dict(name="a", domain="target", split="train", path="", height=16, width=16)])
    rid = storage.add_round(db, None, 1, budget="2.2%", strategy="ripu")
    q = storage.add_queries(db, rid, "a", "region", [(0, 0, 4, 4, 0.9)])[0]
    storage.set_answers_needed(db, [q], needed)
    return db, rid, q


def _answer(db, rid, who, patch):
    got = storage.lease_next(db, who, round=rid)
    assert got is not None, f"{who} got no query"
    return storage.submit_label(db, got["id"], who, rid, patch=patch)


def test_an_overlap_query_goes_to_two_annotators_and_no_third(tmp_path):
    db, rid, q = _store(tmp_path)
    a = np.full((4, 4), 1, np.uint8)
    _answer(db, rid, "ann", a)
    assert storage.get_query(db, q)["status"] == "pending"          # waits for its second answer
    assert storage.lease_next(db, "ann", round=rid) is None          # never twice to the same person
    storage.submit_label(db, q, "ann", rid, patch=a)                 # ...who may still edit their answer
    b = a.copy()
    b[0] = 2
    _answer(db, rid, "bob", b)
    assert storage.get_query(db, q)["status"] == "done"
    assert storage.lease_next(db, "cy", round=rid) is None
    with pytest.raises(storage.AnswerRefused):
        storage.submit_label(db, q, "cy", rid, patch=a)
    storage.submit_label(db, q, "ann", rid, patch=a)                 # own answer still editable
    # consensus: where the two disagree nothing trains until a reviewer decides
    m = storage.label_mask(db, "a")
    assert (m[1:4, :4] == 1).all() and (m[0, :4] == 255).all() and (m[4:] == 255).all()
    agree = storage.agreement(db)
    assert len(agree) == 1 and agree[0]["annotators"] == ["ann", "bob"] and agree[0]["queries"] == 1
    assert agree[0]["pixels"] == 16 and agree[0]["agreement"] == 75.0
    assert agree[0]["iou"] == {1: 75.0, 2: 0.0}
    from core.data.labels import CITYSCAPES19
    man = storage.export(db, tmp_path / "out", CITYSCAPES19)
    assert man["agreement"][0]["annotators"] == ["ann", "bob"] and man["agreement"][0]["agreement"] == 75.0
    assert man["agreement"][0]["iou"] == {"sidewalk": 75.0, "building": 0.0}   # trainIds 1 and 2
    bob = next(lab for lab in storage.image_labels(db, "a") if lab["annotator"] == "bob")
    storage.review(db, bob["id"], True, "rev")                       # the reviewer sides with bob
    assert (storage.label_mask(db, "a")[0, :4] == 2).all()


def test_a_rejected_overlap_answer_reopens_the_query_for_one_more(tmp_path):
    db, rid, q = _store(tmp_path)
    a = np.full((4, 4), 1, np.uint8)
    _answer(db, rid, "ann", a)
    lab = _answer(db, rid, "bob", a)
    storage.review(db, lab, False, "rev")
    assert storage.get_query(db, q)["status"] == "pending"
    assert storage.lease_next(db, "ann", round=rid) is None
    _answer(db, rid, "cy", a)
    assert storage.get_query(db, q)["status"] == "done"
    with pytest.raises(storage.InvalidInput):        # bob's rejected answer cannot come back: two live already
        storage.review(db, lab, True, "rev")


def test_majority_of_three(tmp_path):
    db, rid, q = _store(tmp_path, needed=3)
    a = np.full((4, 4), 1, np.uint8)
    b = a.copy()
    b[0] = 2
    c = a.copy()
    c[0] = 3
    c[1] = 2
    for who, p in (("ann", a), ("bob", b), ("cy", c)):
        _answer(db, rid, who, p)
    m = storage.label_mask(db, "a")[:4, :4]
    assert (m[0] == 255).all()        # 1, 2, 3: no majority
    assert (m[1] == 1).all()          # 1, 1, 2
    assert (m[2:] == 1).all()


def test_overlap_with_the_oracle_is_refused_in_one_line(tmp_path, capsys):
    from tests.test_input_faults import cli, one_error_line

    rc, _, err = cli(capsys, "--budget", "2.2%", "--oracle", "--overlap", "0.2", "--workdir", tmp_path / "w")
    assert rc == 2 and "--overlap" in one_error_line(err)
    rc, _, err = cli(capsys, "--budget", "2.2%", "--overlap", "1.5", "--workdir", tmp_path / "w")
    assert rc == 2 and "[0, 1]" in one_error_line(err)
