"""Budgets in human time (issue 19): superpixels, click/time budgets, the cost model, cost-aware and
pool-wide selection, the oracle's clock, and superpixel queries in the store."""
import numpy as np
import pytest

import storage
from core.acquisition import (BudgetError, CostModel, SECONDS_PER_CLICK, parse_budget, pick_queries, pool_select,
                              pooled_round_budget, queries_per_round, region_clicks, scale_budget, select_queries,
                              slic_segments)
from core.acquisition.cost import FEATURES, segment_features, square_features
from core.acquisition.superpixel import dominant_class, segment_box, segment_scores, select_segments


def _softmax(C, H, W, seed=0):
    x = np.random.default_rng(seed).normal(size=(C, H, W)).astype(np.float32) * 2
    e = np.exp(x - x.max(0))
    return e / e.sum(0)


@pytest.fixture(scope="module")
def real_image(tmp_path_factory):
    """A target image of the embedded benchmark as the loop reads it (uint8 RGB, 64x128)."""
    from core.data.synthcity import SynthCity, ensure_synthcity

    root = ensure_synthcity(tmp_path_factory.mktemp("sc"), size=(64, 128), counts=(2, 2, 1), seed=0, workers=1,
                            progress=False)
    s = SynthCity(root, "target", "train")[0]
    return s["image"], s["label"]


def test_budgets_in_clicks_and_time_parse_and_spread_over_rounds():
    assert parse_budget("200clicks").kind == "clicks" and parse_budget("200 clicks").amount == 200
    assert parse_budget("30min").amount == 1800 and parse_budget("1.5h").amount == 5400
    assert parse_budget("90s").amount == 90 and parse_budget("90s").pooled
    assert not parse_budget("2.2%").pooled and not parse_budget("40px").pooled
    assert parse_budget(str(parse_budget("1.5h"))).amount == 5400   # round trip of the text
    for bad in ("0clicks", "0min", "-3s", "2 weeks", "1e3h"):
        with pytest.raises(BudgetError):
            parse_budget(bad)
    with pytest.raises(ValueError):   # a pooled budget has no per-image count
        queries_per_round("30min", 64, 128, 2, 2)
    # the round's share so far minus what earlier rounds logged; an overspent round is paid back
    assert pooled_round_budget("30min", 3, 1, 0) == 600
    assert pooled_round_budget("30min", 3, 2, 700) == 500
    assert pooled_round_budget("30min", 3, 2, 1500) == 0
    assert scale_budget("30min", 2).amount == 3600
    per = parse_budget("20min/round")   # per round: the share grows by the whole amount each round
    assert per.per_round and str(per) == "20min/round" and scale_budget(per, 2) == per
    assert pooled_round_budget(per, 3, 2, 1000) == 2 * 1200 - 1000
    assert storage.db.budget_parts("20min/round") == ("20min/round", 1200.0, "seconds/round")


def test_slic_superpixels_of_a_real_target_image(real_image):
    import cv2

    img, _ = real_image
    seg = slic_segments(img, 25)
    K = seg.max() + 1
    assert seg.shape == img.shape[:2] and seg.dtype == np.int32
    assert set(np.unique(seg).tolist()) == set(range(K))   # consecutive ids
    assert 0.5 * 64 * 128 / 25 <= K <= 1.5 * 64 * 128 / 25   # mean area near the size asked for
    for k in range(0, K, 7):   # every superpixel is one 4-connected piece
        n, _ = cv2.connectedComponents((seg == k).astype(np.uint8), connectivity=4)
        assert n == 2
    assert (slic_segments(img, 25) == seg).all()   # deterministic
    with pytest.raises(ValueError):
        slic_segments(img[..., 0], 25)


def test_superpixel_ripu_score_is_impurity_times_mean_uncertainty():
    C, H, W = 5, 12, 16
    prob = _softmax(C, H, W)
    seg = (np.arange(H)[:, None] // 4) * 4 + np.arange(W)[None, :] // 4   # 3 x 4 blocks of 4x4
    s = segment_scores(prob, seg, "ripu")
    pred = prob.argmax(0)
    ent = -(prob * np.log(prob + 1e-6)).sum(0)
    for k in range(seg.max() + 1):
        m = seg == k
        frac = np.bincount(pred[m], minlength=C) / m.sum()
        imp = -(frac * np.log(frac + 1e-6)).sum() / np.log(19)
        assert s[k] == pytest.approx(imp * ent[m].mean() / np.log(19), rel=1e-5)
    assert np.allclose(segment_scores(prob, seg, "ent"), [ent[seg == k].mean() for k in range(12)], rtol=1e-5)
    r1, r2 = segment_scores(prob, seg, "rand", rng=3), segment_scores(prob, seg, "rand", rng=3)
    assert (r1 == r2).all() and r1.shape == (12,)
    with pytest.raises(ValueError):
        segment_scores(prob, seg, "nope")


def test_superpixel_selection_skips_labeled_ones_and_stops_near_the_pixel_target():
    seg = (np.arange(8)[:, None] // 4) * 4 + np.arange(16)[None, :] // 4   # 8 blocks of 16 px
    score = np.array([0.1, 0.9, 0.5, np.nan, 0.7, 0.3, 0.8, -np.inf])
    labeled = np.zeros((8, 16), bool)
    labeled[0, 4] = True   # one pixel of superpixel 1
    assert select_segments(score, seg, labeled).tolist() == [6, 4, 2, 5, 0]
    assert select_segments(score, seg, labeled, n=2).tolist() == [6, 4]
    assert select_segments(score, seg, None, pixels=40).tolist() == [1, 6, 4]   # 48 px is closer to 40 than 32
    box, shape = segment_box(seg, 5)
    assert box == (4, 4, 8, 8) and shape.all()
    assert dominant_class(np.array([3, 3, 255, 255, 255, 7])) == 3
    assert dominant_class(np.array([255, 255])) == 255


def test_region_clicks_follow_cais_rule():
    box = np.zeros((10, 10), np.uint8)
    assert region_clicks(box) == 1   # one class: one click (fill)
    half = box.copy()
    half[:, 5:] = 1   # two components; the boundary crosses the top and bottom edges; no vertex inside
    assert region_clicks(half) == 2 + 2
    blob = box.copy()
    blob[3:6, 3:7] = 2   # two components, four polygon vertices inside, no crossing
    assert region_clicks(blob) == 2 + 4
    shape = np.zeros((10, 10), np.uint8)
    shape[2:8, 2:8] = 1
    assert region_clicks(blob, shape) == 2 + 4   # a superpixel drawn exactly: same object inside it
    assert region_clicks(half, shape) == 2       # the superpixel's own border is not drawn


def test_cost_model_nnls_recovers_weights_and_keeps_the_default_below_min_answers():
    rng = np.random.default_rng(0)
    f = np.column_stack([np.ones(200), rng.random((200, len(FEATURES) - 1)) * 5])
    true = np.array([1.0, 0.5, 2.0, 0.0, 3.0])
    cm = CostModel()
    assert cm.fit("square", f, f @ true)
    assert np.allclose(cm.weights["square"], true, atol=1e-6)
    assert "fitted on 200 answers" in cm.describe("square")
    before = cm.weights["pixel"].copy()
    assert not cm.fit("pixel", f[:3], f[:3] @ true)   # too few answers: the default stays
    assert (cm.weights["pixel"] == before).all()
    assert cm.predict("pixel", np.zeros(len(FEATURES))) == pytest.approx(SECONDS_PER_CLICK / 4)   # the floor
    with pytest.raises(ValueError):
        cm.predict("hexagon", f[0])


def test_square_features_are_the_window_sums_of_the_pixel_features():
    prob = _softmax(4, 20, 24, seed=2)
    r = 2
    f = square_features(prob, r)
    pred, p1 = prob.argmax(0), prob.max(0)
    b = np.zeros(pred.shape, bool)
    b[:, :-1] |= pred[:, :-1] != pred[:, 1:]
    b[:-1] |= pred[:-1] != pred[1:]
    for y, x in [(0, 0), (10, 11), (19, 23), (5, 2)]:
        win = (slice(max(0, y - r), y + r + 1), slice(max(0, x - r), x + r + 1))
        assert f[y, x, 1] == pytest.approx(pred[win].size / 100)
        assert f[y, x, 2] == len(np.unique(pred[win]))
        assert f[y, x, 3] == pytest.approx(b[win].sum() / 10)
        assert f[y, x, 4] == pytest.approx((1 - p1[win]).mean(), rel=1e-5)
    seg = np.zeros((20, 24), int)
    seg[:, 12:] = 1
    sf = segment_features(prob, seg)
    assert sf[1, 2] == len(np.unique(pred[:, 12:])) and sf[0, 1] == pytest.approx(2.4)


def test_pick_queries_plain_squares_equal_the_greedy_selection_and_cost_aware_prefers_cheap_ones():
    prob = _softmax(6, 48, 64, seed=1)
    labeled = np.zeros((48, 64), bool)
    picks, score = pick_queries(prob, labeled, "square", "ripu", 2, n=6)
    from core.acquisition import score_map

    centres, _ = select_queries(score_map(prob, "ripu", "region", 2), labeled, 6, "region", 2)
    assert len(picks) == 6 and [(p["y0"], p["x0"]) for p in picks] == [(max(0, y - 2), max(0, x - 2))
                                                                          for y, x in centres.tolist()]
    assert [p["score"] for p in picks] == [float(score[y, x]) for y, x in centres.tolist()]
    # a cost model that charges every predicted boundary pixel makes cost-aware picks cheaper
    cm = CostModel({"square": (0.5, 0, 0, 5.0, 0), "superpixel": (1.75, 0, 0, 0, 0), "pixel": (1.75, 0, 0, 0, 0)})
    plain, _ = pick_queries(prob, labeled, "square", "ripu", 2, n=6, cost_model=cm)
    aware, _ = pick_queries(prob, labeled, "square", "ripu", 2, n=6, cost_model=cm, cost_aware=True)
    assert sum(p["cost_s"] for p in aware) < sum(p["cost_s"] for p in plain)
    assert all(p["rank"] == pytest.approx(p["score"] / p["cost_s"]) for p in aware)
    seg = (np.arange(48)[:, None] // 8) * 8 + np.arange(64)[None, :] // 8
    sp, smap = pick_queries(prob, labeled, "superpixel", "ripu", 2, n=3, segments=seg)
    for p in sp:
        k = seg[p["y0"], p["x0"]]
        assert (p["shape"].astype(bool) == (seg[p["y0"]:p["y1"], p["x0"]:p["x1"]] == k)).all()
        assert smap[p["y0"], p["x0"]] == pytest.approx(p["score"])
    with pytest.raises(ValueError):
        pick_queries(prob, labeled, "superpixel", "ripu", 2, n=3)


def test_pool_select_spends_clicks_in_rank_order_and_seconds_greedily():
    c = [(0, {"rank": 0.9, "cost_s": 30.0}), (1, {"rank": 0.8, "cost_s": 5.0}), (0, {"rank": 0.7, "cost_s": 20.0}),
         (2, {"rank": 0.1, "cost_s": 1.0})]
    assert [x[0] for x in pool_select(c, 2, "clicks")] == [0, 1]
    chosen = pool_select(c, 36, "seconds")   # 30 + 5 fit, 20 does not, 1 still fits
    assert [x[1]["rank"] for x in chosen] == [0.9, 0.8, 0.1]
    assert pool_select(c, 0, "seconds") == []
    with pytest.raises(ValueError):
        pool_select(c, 3, "pixels")


def test_superpixel_queries_in_the_store(tmp_path):
    db = storage.open_store(tmp_path)
    storage.add_images(db, [{"name": "a", "height": 8, "width": 8}])
    run = storage.start_run(db, {})
    rid = storage.add_round(db, run, 1, budget="10min")
    assert storage.get_round(db, rid)["budget_value"] == 600 and storage.get_round(db, rid)["budget_unit"] == "seconds"
    shape = np.zeros((3, 4), np.uint8)
    shape[1:, 1:] = 1
    qid, sq = storage.add_queries(db, rid, "a", "region", [
        dict(y0=2, x0=2, y1=5, x1=6, score=0.5, shape=shape, cost_s=1.75, features=[1, 0.06, 1, 0, 0.2]),
        dict(y0=0, x0=0, y1=2, x1=2, score=0.1)])
    q = storage.get_query(db, qid)
    assert q["area"] == 6 and q["cost_s"] == 1.75 and storage.get_query(db, sq)["area"] == 4
    with pytest.raises(storage.InvalidInput):
        storage.add_queries(db, rid, "a", "region", [dict(y0=0, x0=0, y1=2, x1=2, shape=np.ones((3, 3)))])
    with pytest.raises(storage.InvalidInput):
        storage.add_queries(db, rid, "a", "pixel", [dict(y=0, x=0, shape=np.ones((1, 1)))])
    storage.save_label(db, qid, "ann", point_class=7, ms=3500, edits=1)
    mask = storage.label_mask(db, "a")
    assert (mask[2:5, 2:6][shape == 1] == 7).all() and (mask[2:5, 2:6][shape == 0] == 255).all()
    assert storage.answered_mask(db, "a", 8, 8).sum() == 6
    assert storage.labeled_pixels(db, run) == 6
    assert storage.spent_effort(db, run) == {"clicks": 1, "seconds": 3.5}
    rows = storage.answered_costs(db, run)
    assert rows == [{"round": 1, "unit": "superpixel", "features": [1, 0.06, 1, 0, 0.2], "cost_s": 1.75,
                     "seconds": 3.5}]
    patch = np.full((3, 4), 4, np.uint8)   # a "mixed" answer: drawn, kept only on the shape
    storage.save_label(db, qid, "ann", patch=patch, ms=1000, edits=3)
    mask = storage.label_mask(db, "a")
    assert (mask[2:5, 2:6][shape == 1] == 4).all() and (mask[2:5, 2:6][shape == 0] == 255).all()
    assert storage.spent_effort(db, run) == {"clicks": 4, "seconds": 4.5}   # an edit adds its time and edits
    # two superpixels with the same box stay two queries (their first pixels differ)
    other = np.zeros((3, 4), np.uint8)
    other[0, :] = other[:, 0] = 1
    q2, q2again = storage.add_queries(db, rid, "a", "region", [dict(y0=2, x0=2, y1=5, x1=6, shape=other),
                                                               dict(y0=2, x0=2, y1=5, x1=6, shape=other)])
    assert q2 not in (qid, sq) and q2 == q2again
    # overlap: a second annotator's answer is one more sample and its time and click are spent
    storage.set_answers_needed(db, [q2], 2)
    storage.save_label(db, q2, "ann", point_class=1, ms=2000, edits=1)
    storage.save_label(db, q2, "bob", point_class=1, ms=2000, edits=1)
    assert storage.spent_effort(db, run) == {"clicks": 6, "seconds": 8.5}
    assert [r["seconds"] for r in storage.answered_costs(db, run)] == [4.5]   # q2 carries no features


def test_pooled_budget_text_survives_the_store_at_any_size():
    for text in ("1000000s", "1234567clicks", "166.666666667s", "20min/round"):
        b = parse_budget(text)
        spec, value, unit = storage.db.budget_parts(str(b))
        assert value == pytest.approx(b.amount, rel=1e-11) and parse_budget(spec).amount == pytest.approx(b.amount)
        assert unit.startswith(b.kind)
