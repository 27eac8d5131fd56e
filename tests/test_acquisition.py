"""Tests for core.acquisition (RIPU scores, greedy RA/PA selection, baselines, budgets, CRA maps).

Hand-computed cases spell out the window counts; a slow re-statement of the official greedy
(repeated argmax with -inf suppression, column-major first max) checks the fast selector.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.acquisition import (
    Budget,
    BudgetError,
    ClassEntropyStats,
    acquire,
    confidence_maps,
    cra_entropy,
    cra_trust_mask,
    dilate_square,
    ent_score,
    parse_budget,
    pseudo_confidence,
    queries_per_round,
    rand_score,
    ripu_score,
    score_map,
    sconf_score,
    select_queries,
    window_impurity,
)

EPS = 1e-6
L19 = math.log(19.0)
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def prob_from_pred(pred, class_probs):
    """(C,H,W) float32 map where a pixel predicted as k has the probability vector class_probs[k]."""
    pred = np.asarray(pred)
    cp = np.asarray(class_probs, dtype=np.float64)
    return cp[pred].transpose(2, 0, 1).astype(np.float32)


def ent(p):
    return -sum(q * math.log(q + EPS) for q in p)


def mix_entropy(counts):
    """-sum (n_c/n) log(n_c/n + eps) of a window with the given class counts."""
    n = sum(counts)
    return -sum((c / n) * math.log(c / n + EPS) for c in counts)


def random_prob(rng, C, H, W, scale=2.0):
    z = rng.normal(size=(C, H, W)) * scale
    p = np.exp(z - z.max(0))
    return (p / p.sum(0)).astype(np.float32)


def brute_ripu(prob, r, mode):
    """Direct float64 loop over windows (clipped, in-image counts)."""
    C, H, W = prob.shape
    p = prob.astype(np.float64)
    y = p.argmax(0)
    h = -(p * np.log(p + EPS)).sum(0)
    imp = np.zeros((H, W))
    unc = np.zeros((H, W))
    for i in range(H):
        for j in range(W):
            win = y[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1]
            x = np.bincount(win.ravel(), minlength=C) / win.size
            imp[i, j] = -(x * np.log(x + EPS)).sum()
            unc[i, j] = h[max(i - r, 0):i + r + 1, max(j - r, 0):j + r + 1].mean()
    if mode == "pixel":
        return imp, h, imp * h
    return imp / L19, unc / L19, imp * unc / L19 ** 2


def ref_greedy(score, labeled, n, mode, r):
    """The official loop: score[dilate(labeled, r)] = -inf; n times: column-major first argmax,
    label, set -inf on the suppression square. Stops (instead of re-picking) at -inf; NaN = -inf."""
    H, W = score.shape
    s = 2 * r if mode == "region" else r
    lr = r if mode == "region" else 0
    sc = np.array(score, dtype=np.float64)
    sc[np.isnan(sc)] = -np.inf
    for yy, xx in zip(*np.nonzero(labeled)):
        sc[max(yy - r, 0):yy + r + 1, max(xx - r, 0):xx + r + 1] = -np.inf
    picks, newly = [], np.zeros((H, W), dtype=bool)
    for _ in range(n):
        j = int(np.argmax(sc.max(axis=0)))  # first column holding the max
        i = int(np.argmax(sc[:, j]))  # first row in it
        if sc[i, j] == -np.inf:
            break
        picks.append((i, j))
        sc[max(i - s, 0):i + s + 1, max(j - s, 0):j + s + 1] = -np.inf
        newly[max(i - lr, 0):i + lr + 1, max(j - lr, 0):j + lr + 1] = True
    return picks, newly


def region_size(y, x, r, H, W):
    return (min(y + r, H - 1) - max(y - r, 0) + 1) * (min(x + r, W - 1) - max(x - r, 0) + 1)


# ----------------------------------------------------------------------------- RIPU maps, by hand
PRED_3x3 = [[0, 0, 1],
            [0, 1, 1],
            [0, 0, 0]]
# (class-0 count, class-1 count) of the clipped 3x3 window around each pixel, counted by hand
COUNTS_3x3 = [[(3, 1), (3, 3), (1, 3)],
              [(5, 1), (6, 3), (3, 3)],
              [(3, 1), (4, 2), (2, 2)]]
PA_3x3 = (0.8, 0.2)
PB_3x3 = (0.3, 0.7)


def test_ra_3x3_by_hand():
    prob = prob_from_pred(PRED_3x3, [PA_3x3, PB_3x3])
    out = ripu_score(prob, "region", 1)
    ha, hb = ent(PA_3x3), ent(PB_3x3)
    for i in range(3):
        for j in range(3):
            c0, c1 = COUNTS_3x3[i][j]
            n = c0 + c1
            P = mix_entropy([c0, c1]) / L19
            U = (c0 * ha + c1 * hb) / n / L19  # entropy depends only on the predicted class here
            assert out["impurity"][i, j] == pytest.approx(P, rel=1e-5, abs=1e-7), (i, j)
            assert out["uncertainty"][i, j] == pytest.approx(U, rel=1e-5), (i, j)
            assert out["score"][i, j] == pytest.approx(P * U, rel=2e-5, abs=1e-9), (i, j)
    # explicit arithmetic for the centre: 6 of class 0, 3 of class 1
    centre = -((6 / 9) * math.log(6 / 9 + EPS) + (3 / 9) * math.log(3 / 9 + EPS)) / L19
    assert out["impurity"][1, 1] == pytest.approx(centre, rel=1e-5)
    for k in ("impurity", "uncertainty", "score"):
        assert out[k].shape == (3, 3) and out[k].dtype == np.float32


PRED_4x4 = [[0, 0, 0, 0],
            [0, 0, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 1, 1]]
P3_A = (0.6, 0.3, 0.1)
P3_B = (0.2, 0.5, 0.3)


def test_pa_4x4_by_hand():
    prob = prob_from_pred(PRED_4x4, [P3_A, P3_B, (1 / 3, 1 / 3, 1 / 3)])
    out = ripu_score(prob, "pixel", 1)
    ha, hb = ent(P3_A), ent(P3_B)
    cases = {  # pixel: (class-0 count, class-1 count) in its clipped 3x3 window, by hand
        (0, 0): (4, 0), (1, 1): (8, 1), (2, 2): (5, 4), (3, 3): (0, 4),
        (2, 1): (7, 2), (0, 3): (4, 0), (3, 2): (2, 4), (1, 3): (4, 2),
    }
    for (i, j), cnt in cases.items():
        own = hb if PRED_4x4[i][j] == 1 else ha
        P = mix_entropy([c for c in cnt if c])
        assert out["impurity"][i, j] == pytest.approx(P, rel=1e-5, abs=1e-7), (i, j)
        assert out["uncertainty"][i, j] == pytest.approx(own, rel=1e-5), (i, j)  # own entropy, nats
        if len([c for c in cnt if c]) > 1:
            assert out["score"][i, j] == pytest.approx(own * P, rel=2e-5), (i, j)
        else:  # pure window: -log(1 + 1e-6) is -9.54e-7 in float32 (official arithmetic), -1e-6 exactly
            assert out["score"][i, j] == pytest.approx(own * P, rel=0.06) and out["score"][i, j] < 0
    # r = 2: the window of (1, 1) is the whole 4x4 image: 12 of class 0, 4 of class 1
    out2 = ripu_score(prob, "pixel", 2)
    P = -(0.75 * math.log(0.75 + EPS) + 0.25 * math.log(0.25 + EPS))
    assert out2["impurity"][1, 1] == pytest.approx(P, rel=1e-5)
    assert out2["score"][1, 1] == pytest.approx(P * ha, rel=2e-5)


def test_ra_4x4_pure_window_is_slightly_negative():
    prob = prob_from_pred(PRED_4x4, [P3_A, P3_B, (1 / 3, 1 / 3, 1 / 3)])
    out = ripu_score(prob, "region", 1)
    pure = -math.log(1 + EPS) / L19  # about -3.4e-7 (float32: -3.24e-7)
    for i, j in [(0, 0), (0, 3), (3, 0), (3, 3)]:
        assert out["impurity"][i, j] < 0
        assert out["impurity"][i, j] == pytest.approx(pure, rel=0.1)
        assert out["score"][i, j] < 0
    # (2, 2): 5 of class 0, 4 of class 1; uncertainty = mean of 9 pixel entropies
    assert out["impurity"][2, 2] == pytest.approx(mix_entropy([5, 4]) / L19, rel=1e-5)
    u = (5 * ent(P3_A) + 4 * ent(P3_B)) / 9 / L19
    assert out["uncertainty"][2, 2] == pytest.approx(u, rel=1e-5)


def test_border_windows_use_in_image_counts():
    # constant softmax: the window mean of the entropy must be the entropy itself, border included
    C, H, W = 5, 7, 11
    pvec = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
    prob = np.broadcast_to(pvec[:, None, None], (C, H, W)).astype(np.float32)
    for r in (1, 3, 20):
        out = ripu_score(prob, "region", r)
        np.testing.assert_allclose(out["uncertainty"], ent(pvec) / L19, rtol=1e-5)
    # corner impurity of a checkerboard: 2x2 window = 2 + 2; edge 2x3 = 3 + 3; interior 3x3 = 5 + 4
    pred = (np.add.outer(np.arange(H), np.arange(W)) % 2)
    imp = window_impurity(pred, 2, 1)
    assert imp[0, 0] == pytest.approx(mix_entropy([2, 2]), rel=1e-5)
    assert imp[0, 5] == pytest.approx(mix_entropy([3, 3]), rel=1e-5)
    assert imp[3, 5] == pytest.approx(mix_entropy([5, 4]), rel=1e-5)


@pytest.mark.parametrize("r", [0, 1, 3, 4, 9, 40])
def test_box_sum_and_dilation_match_direct_sums(r):
    from core.acquisition._util import box_sum, window_count

    rng = np.random.default_rng(r)
    H, W = 13, 29
    a = rng.random((H, W)).astype(np.float32)
    ints = rng.integers(0, 5, (H, W)).astype(np.uint8)
    mask = rng.random((H, W)) < 0.05
    ref = np.zeros((H, W))
    refi = np.zeros((H, W), dtype=np.int64)
    refd = np.zeros((H, W), dtype=bool)
    for i in range(H):
        for j in range(W):
            win = (slice(max(i - r, 0), i + r + 1), slice(max(j - r, 0), j + r + 1))
            ref[i, j] = a[win].astype(np.float64).sum()
            refi[i, j] = ints[win].sum()
            refd[i, j] = mask[win].any()
    got = box_sum(box_sum(a, r, axis=0), r, axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    goti = box_sum(box_sum(ints, r, axis=0, dtype=np.int32), r, axis=1)
    np.testing.assert_array_equal(goti, refi)
    np.testing.assert_array_equal(dilate_square(mask, r), refd)
    n = window_count(H, W, r)
    assert n[H // 2, W // 2] == min(2 * r + 1, H) * min(2 * r + 1, W)
    np.testing.assert_array_equal(n, box_sum(box_sum(np.ones((H, W), np.uint8), r, 0, np.int32), r, 1))


@pytest.mark.parametrize("C,H,W,r", [(3, 7, 9, 1), (19, 13, 17, 1), (20, 12, 15, 2), (5, 20, 17, 5),
                                     (18, 30, 33, 8), (40, 9, 12, 1), (3, 5, 60, 130), (2, 1, 1, 0)])
def test_ripu_matches_direct_loop(C, H, W, r):
    # covers the packed-counter paths: 4-bit (r=1, several words), 8-bit, 16-bit and float (r=130)
    rng = np.random.default_rng(C * 1000 + r)
    prob = random_prob(rng, C, H, W)
    for mode in ("region", "pixel"):
        out = ripu_score(prob, mode, r)
        for key, ref in zip(("impurity", "uncertainty", "score"), brute_ripu(prob, r, mode)):
            np.testing.assert_allclose(out[key], ref, rtol=2e-5, atol=2e-6, err_msg=f"{mode} {key}")


def test_argmax_ties_go_to_first_class():
    prob = np.full((3, 2, 2), 1 / 3, dtype=np.float32)
    prob[:, 0, 0] = [0.25, 0.375, 0.375]
    st = confidence_maps(prob)
    assert st["pred"].tolist() == [[1, 0], [0, 0]]


def test_bad_inputs():
    prob = np.full((2, 3, 3), 0.5, dtype=np.float32)
    with pytest.raises(ValueError):
        ripu_score(prob, "box", 1)
    with pytest.raises(ValueError):
        ripu_score(prob, "region", -1)
    with pytest.raises(ValueError):
        ripu_score(prob[0], "region", 1)
    with pytest.raises(ValueError):
        score_map(prob, "bald", "region", 1)


# ----------------------------------------------------------------------------- selection
@pytest.mark.parametrize("mode", ["region", "pixel"])
def test_select_equals_reference_greedy(mode):
    rng = np.random.default_rng(7 if mode == "region" else 8)
    for t in range(60):
        H, W = (int(v) for v in rng.integers(1, 45, 2))
        r = int(rng.integers(0, 5))
        score = rng.random((H, W)).astype(np.float32)  # continuous: no ties
        if t % 3 == 0:
            score[rng.random((H, W)) < 0.2] = np.nan
        labeled = rng.random((H, W)) < 0.02
        n = int(rng.integers(0, 80))
        picks, newly = select_queries(score, labeled, n, mode, r)
        ref_picks, ref_newly = ref_greedy(score, labeled, n, mode, r)
        assert set(map(tuple, picks.tolist())) == set(ref_picks)
        assert [tuple(p) for p in picks.tolist()] == ref_picks  # no ties: the order agrees too
        np.testing.assert_array_equal(newly, ref_newly)


def test_select_ties_follow_official_column_major_order():
    rng = np.random.default_rng(3)
    score = (np.round(rng.random((23, 31)) * 3) / 3).astype(np.float32)  # many ties
    for mode, r in (("region", 1), ("pixel", 2)):
        picks, _ = select_queries(score, None, 40, mode, r)
        assert [tuple(p) for p in picks.tolist()] == ref_greedy(score, np.zeros_like(score, bool), 40, mode, r)[0]
    picks, _ = select_queries(np.ones((8, 8), np.float32), None, 3, "region", 1)
    # suppression radius 2r = 2: the next free centre down column 0 is row 3, then row 6
    assert picks.tolist() == [[0, 0], [3, 0], [6, 0]]


def test_ra_regions_disjoint_within_and_across_rounds():
    rng = np.random.default_rng(11)
    H, W, r = 60, 80, 1
    labeled = np.zeros((H, W), dtype=bool)
    all_picks = []
    for rnd in range(5):
        score = rng.random((H, W)).astype(np.float32)
        picks, newly = select_queries(score, labeled, 40, "region", r)
        assert len(picks) == 40
        sizes = sum(region_size(y, x, r, H, W) for y, x in picks.tolist())
        assert newly.sum() == sizes  # within the round: regions do not overlap
        assert not (newly & labeled).any()  # across rounds: nothing relabeled
        labeled |= newly
        all_picks += picks.tolist()
    a = np.asarray(all_picks)
    cheb = np.abs(a[:, None, :] - a[None, :, :]).max(-1)
    np.fill_diagonal(cheb, 99)
    assert cheb.min() >= 2 * r + 1  # centres of disjoint (2r+1)^2 squares
    assert labeled.sum() == sum(region_size(y, x, r, H, W) for y, x in all_picks)


@pytest.mark.parametrize("mode,r", [("region", 1), ("region", 2), ("pixel", 3)])
def test_no_centre_within_dilated_labels(mode, r):
    rng = np.random.default_rng(5)
    H, W = 50, 70
    labeled = np.zeros((H, W), dtype=bool)
    labeled[10:14, 20:25] = True  # e.g. a user-drawn patch
    labeled[rng.random((H, W)) < 0.01] = True
    score = rng.random((H, W)).astype(np.float32)
    score[labeled] = 10.0  # the labels sit on the best scores: must still be avoided
    picks, newly = select_queries(score, labeled, 200, mode, r)
    forbidden = dilate_square(labeled, r)
    for y, x in picks.tolist():
        assert not forbidden[y, x]
        assert not labeled[max(y - r, 0):y + r + 1, max(x - r, 0):x + r + 1].any()
    assert not (newly & labeled).any()
    # the dilation itself is Chebyshev: one pixel grows into a (2r+1)^2 square
    one = np.zeros((9, 9), dtype=bool)
    one[4, 4] = True
    assert dilate_square(one, 2).sum() == 25 and dilate_square(one, 2)[2:7, 2:7].all()


def test_exhaustion_stops_cleanly_without_duplicates():
    rng = np.random.default_rng(2)
    score = rng.random((10, 10)).astype(np.float32)
    picks, newly = select_queries(score, None, 1000, "region", 1)
    assert 0 < len(picks) < 1000
    assert len(set(map(tuple, picks.tolist()))) == len(picks)
    assert len(picks) == len(ref_greedy(score, np.zeros((10, 10), bool), 1000, "region", 1)[0])
    # nothing fits any more: a second call picks nothing (the official code would re-pick (0, 0))
    # every remaining free centre lies within r of a label, so it is forbidden
    p2, n2 = select_queries(score, newly, 5, "region", 1)
    assert p2.shape == (0, 2) and not n2.any()
    # PA on a full label map
    p3, n3 = select_queries(score, np.ones((10, 10), bool), 3, "pixel", 0)
    assert p3.shape == (0, 2) and not n3.any()
    p4, _ = select_queries(score, None, 0, "pixel", 1)
    assert p4.shape == (0, 2)


def test_nan_and_minus_inf_are_never_picked():
    score = np.full((12, 12), np.nan, dtype=np.float32)
    picks, newly = select_queries(score, None, 5, "pixel", 1)
    assert picks.shape == (0, 2) and not newly.any()
    score[3, 4] = 0.5
    score[8, 9] = -np.inf
    score[10, 1] = -5.0
    picks, _ = select_queries(score, None, 5, "pixel", 1)
    assert picks.tolist() == [[3, 4], [10, 1]]
    # NaN from a degenerate probability map does not crash RIPU selection either
    prob = np.full((2, 6, 6), 0.5, dtype=np.float32)
    prob[:, 2, 2] = np.nan
    out = acquire(prob, None, 4, "ent", "pixel", 1)
    assert [2, 2] not in out["picks"].tolist()


# ----------------------------------------------------------------------------- budgets
def test_parse_budget_good():
    assert parse_budget("40px") == Budget("pixel", pixels=40)
    b = parse_budget("2.2%")
    assert b.kind == "region" and b.fraction == pytest.approx(0.022)
    assert parse_budget(" 5 % ").fraction == pytest.approx(0.05)
    assert parse_budget("100%").fraction == 1.0
    assert parse_budget("1PX").pixels == 1
    assert str(parse_budget("2.2%")) == "2.2%" and str(parse_budget("40px")) == "40px"


@pytest.mark.parametrize("text", ["40pz", "-1%", "120%", "0px", "0%", "2.2", "abc", "", "  ", "4.5px",
                                  "-3px", "%", "px", "2.2%%", None, "nan%"])
def test_parse_budget_errors(text):
    with pytest.raises(BudgetError) as ei:
        parse_budget(text)
    assert isinstance(ei.value, ValueError)
    msg = str(ei.value)
    assert msg and "\n" not in msg and "budget" in msg


def test_queries_per_round_arithmetic():
    # RA 2.2 % at 1024x2048, k = 1: round(2097152 * 0.022 / 9) = 5126 regions over 5 rounds
    q = queries_per_round("2.2%", 1024, 2048, 5, 1)
    assert q == [1026, 1025, 1025, 1025, 1025] and sum(q) == 5126
    assert queries_per_round("40px", 512, 1024, 5, 32) == [8] * 5
    assert queries_per_round("42px", 512, 1024, 5, 32) == [9, 9, 8, 8, 8]
    # official PA scaling (40 px defined at 1280x640): about 21 per round at 1024x2048
    assert sum(queries_per_round("40px", 1024, 2048, 5, 32, pixel_ref_hw=(640, 1280))) == 102
    with pytest.raises(ValueError):
        queries_per_round("2.2%", 100, 100, 0, 1)


@pytest.mark.parametrize("text,r", [("2.2%", 1), ("5%", 2), ("1%", 1)])
def test_realised_ra_budget_within_one_region(text, r):
    rng = np.random.default_rng(4)
    H, W, rounds = 120, 150, 5
    labeled = np.zeros((H, W), dtype=bool)
    for n in queries_per_round(text, H, W, rounds, r):
        score = rng.random((H, W)).astype(np.float32)
        score[:r], score[-r:], score[:, :r], score[:, -r:] = np.nan, np.nan, np.nan, np.nan  # no clipping
        picks, newly = select_queries(score, labeled, n, "region", r)
        assert len(picks) == n
        labeled |= newly
    requested = H * W * parse_budget(text).fraction
    assert abs(labeled.sum() - requested) <= (2 * r + 1) ** 2


def test_realised_pa_budget_exact():
    rng = np.random.default_rng(6)
    labeled = np.zeros((256, 512), dtype=bool)
    for n in queries_per_round("40px", 256, 512, 5, 8):
        picks, newly = select_queries(rng.random((256, 512)), labeled, n, "pixel", 8)
        assert len(picks) == n
        labeled |= newly
    assert labeled.sum() == 40


# ----------------------------------------------------------------------------- baselines, dispatch
def test_baselines_by_hand():
    prob = np.zeros((3, 1, 3), dtype=np.float32)
    prob[:, 0, 0] = [0.7, 0.2, 0.1]
    prob[:, 0, 1] = [0.4, 0.35, 0.25]
    prob[:, 0, 2] = [0.1, 0.1, 0.8]
    np.testing.assert_allclose(sconf_score(prob)[0], [1 - 0.5, 1 - 0.05, 1 - 0.7], rtol=1e-5)
    np.testing.assert_allclose(ent_score(prob)[0], [ent(prob[:, 0, j]) for j in range(3)], rtol=1e-5)
    np.testing.assert_allclose(pseudo_confidence(prob)[0], [0.7, 0.4, 0.8], rtol=1e-6)
    a, b = rand_score(prob, 123), rand_score(prob, np.random.default_rng(123))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 3) and ((a >= 0) & (a < 1)).all()
    assert sconf_score(np.ones((1, 2, 2), np.float32)).tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_score_map_and_acquire():
    rng = np.random.default_rng(9)
    prob = random_prob(rng, 19, 40, 50)
    np.testing.assert_array_equal(score_map(prob, "ripu", "region", 1), ripu_score(prob, "region", 1)["score"])
    np.testing.assert_array_equal(score_map(prob, "ripu", "pixel", 4), ripu_score(prob, "pixel", 4)["score"])
    np.testing.assert_array_equal(score_map(prob, "ent", "pixel", 4), ent_score(prob))
    np.testing.assert_array_equal(score_map(prob, "sconf", "region", 1), sconf_score(prob))
    np.testing.assert_array_equal(score_map(prob, "rand", "region", 1, rng=5), rand_score(prob, 5))
    for strategy in ("ripu", "rand", "ent", "sconf"):
        out = acquire(prob, None, 7, strategy, "region", 1, rng=0)
        assert set(out) == {"picks", "newly", "score"}
        assert out["picks"].shape == (7, 2) and out["newly"].shape == (40, 50)
        assert out["picks"].dtype.kind == "i"
        ref = ref_greedy(out["score"], np.zeros((40, 50), bool), 7, "region", 1)[0]
        assert set(map(tuple, out["picks"].tolist())) == set(ref)


# ----------------------------------------------------------------------------- CRA trust maps
def cra_e(p):
    C = len(p)
    return sum(-q * math.log2(q) for q in p if q > 0) / C / math.log2(C)


def test_cra_entropy_by_hand():
    vecs = [(0.97, 0.01, 0.01, 0.01), (0.997, 0.001, 0.001, 0.001), (0.99, 1 / 300, 1 / 300, 1 / 300),
            (1.0, 0.0, 0.0, 0.0)]
    prob = np.array(vecs, dtype=np.float32).T.reshape(4, 1, 4)
    e = cra_entropy(prob)[0]
    # 0.97: (0.042625 + 3 * 0.066439) / 4 / 2 = 0.030243, by hand
    assert e[0] == pytest.approx(0.030243, abs=2e-6)
    for j, v in enumerate(vecs):
        assert e[j] == pytest.approx(cra_e(v), rel=1e-4, abs=1e-7)
    assert e[3] == 0.0
    trusted = cra_trust_mask(prob, 0.01)[0]
    assert trusted.tolist() == [False, True, False, True]  # E = 0.0302, 0.0043, 0.0121, 0


def test_cra_rare_class_halving_and_streaming():
    C = 4
    # image A: 200 pixels of class 0 (E = 0.0121), image B: 1 pixel of class 3 (E = 0.0121) + 150 of class 0
    between0 = (0.99, 1 / 300, 1 / 300, 1 / 300)  # E = 0.0121: untrusted unless halved
    between3 = (1 / 300, 1 / 300, 1 / 300, 0.99)
    a = np.array([between0] * 200, dtype=np.float32).T.reshape(C, 10, 20)
    b = np.array([between3] + [between0] * 149, dtype=np.float32).T.reshape(C, 10, 15)
    stats = ClassEntropyStats(C)
    stats.update(a)
    stats.update(b)
    assert stats.counts.tolist() == [349, 0, 0, 1]
    assert stats.rare_classes().tolist() == [False, True, True, True]  # 1/350 < 1 %
    thr = stats.class_thresholds()
    np.testing.assert_allclose(thr, [0.01, 0.02, 0.02, 0.02])
    trusted = cra_trust_mask(b, thr)
    assert trusted[0, 0] and not trusted.ravel()[1:].any()  # only the rare-class pixel is trusted
    np.testing.assert_allclose(stats.class_mean_entropy()[[0, 3]], [cra_e(between0)] * 2, rtol=1e-4)
    # streaming equals one pass over the concatenated pool; valid masks exclude padding
    whole = ClassEntropyStats(C)
    whole.update(np.concatenate([a.reshape(C, 1, -1), b.reshape(C, 1, -1)], axis=2))
    np.testing.assert_array_equal(whole.counts, stats.counts)
    np.testing.assert_allclose(whole.ent_sums, stats.ent_sums, rtol=1e-6)
    masked = ClassEntropyStats(C)
    valid = np.ones((10, 15), dtype=bool)
    valid[0, 0] = False
    masked.update(b, valid=valid)
    assert masked.counts.tolist() == [149, 0, 0, 0]
    maps = confidence_maps(b, thr)
    np.testing.assert_array_equal(maps["trusted"], trusted)
    np.testing.assert_allclose(maps["confidence"], 0.99, rtol=1e-6)


def test_package_does_not_import_torch():
    code = "import sys, core.acquisition; assert 'torch' not in sys.modules, 'torch imported'"
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
