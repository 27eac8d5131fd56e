"""UDA methods, part 2 (CPSL, BiDA, T2S, depth distribution, the distillation stages): each formula on
small tensors, the composition rules, and the stages through the loop. HRDA: tests/test_hrda.py."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.methods import build_methods
from core.methods.bida import BiDA, class_thresholds, entropy, proto_scores
from core.methods.cpsl import CPSL, sinkhorn
from core.methods.depth import (berhu, component_sizes, drop_small_components, fit_gmm, fit_gmms, pixel_points)
from core.methods.distill import kl_teacher_student, symmetric_ce
from core.methods.services import class_means, make_pseudo_labels
from core.methods.t2s import T2S, fda, info_nce
from core.train import Context, TrainConfig, fit, run_stages
from tests.toy import ToyDataset, tiny_segmentor

C = 19
SIZE = (32, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0):
    return tiny_segmentor(seed, C)


# ----------------------------------------------------------------------------- CPSL
def test_sinkhorn_class_marginal_equals_the_prior():
    torch.manual_seed(0)
    logits = torch.randn(500, 5)
    prior = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05])
    q = sinkhorn(logits, prior, eps=0.5, iters=200)
    assert torch.allclose(q.sum(1), torch.ones(500), atol=1e-5)          # each pixel a distribution
    assert torch.allclose(q.mean(0), prior, atol=1e-4), q.mean(0)        # class totals = the prior
    # the default 3 iterations already move the marginal from the plain softmax's towards the prior
    plain = torch.softmax(logits / 0.5, 1).mean(0)
    q3 = sinkhorn(logits, prior, eps=0.5, iters=3).mean(0)
    assert (q3 - prior).abs().sum() < 0.5 * (plain - prior).abs().sum()


def test_symmetric_ce_and_kl_match_hand_values():
    logits = torch.tensor([[[[2.0]], [[0.0]], [[-1.0]]]])                  # (1,3,1,1)
    p = torch.softmax(logits[0, :, 0, 0], 0)
    label = torch.tensor([[[0]]])
    want = 0.1 * -math.log(p[0]) + 1.0 * -math.log(1e-4) * (1 - p[0])
    assert symmetric_ce(logits, label) == pytest.approx(float(want), rel=1e-5)
    assert float(symmetric_ce(logits, torch.full((1, 1, 1), 255))) == 0.0
    t = torch.tensor([0.2, 0.3, 0.5])
    kl = float((t * (t.log() - p.log())).sum())
    assert float(kl_teacher_student(logits, t.view(1, 3, 1, 1))) == pytest.approx(kl, rel=1e-5)
    # the reference's bug (probabilities as kl_div's input) gives another, negative-valued number
    assert float(F.kl_div(p, t, reduction="sum")) != pytest.approx(kl, rel=1e-2)
    assert float(kl_teacher_student(torch.log(t).view(1, 3, 1, 1), t.view(1, 3, 1, 1))) == pytest.approx(0, abs=1e-6)


def _ctx(model, src, tgt):
    model.train()
    return Context(model=model, cfg=TrainConfig(iterations=4, crop_size=SIZE), device=torch.device("cpu"),
                   source=src, target=tgt)


def _ready(method):
    """(model, ctx, method set up on toy source/target data, a source batch, a target batch)."""
    src, tgt = ToyDataset(n=4, size=SIZE), ToyDataset(n=4, size=SIZE, classes=(0, 8, 10, 11), seed=1)
    model = tiny()
    ctx = _ctx(model, src, tgt)
    method.setup(ctx)
    return model, ctx, method, _batch(src), _batch(tgt)


def _batch(ds, n=2):
    return {"image": torch.stack([torch.from_numpy(ds[i]["image"]).permute(2, 0, 1) for i in range(n)]),
            "label": torch.stack([torch.from_numpy(ds[i]["label"]).long() for i in range(n)])}


def test_cpsl_self_labeling_gradient_reaches_only_the_prototypes_and_rectification_keeps_active_labels():
    model, ctx, m, _, bt = _ready(CPSL(n_sl=16))
    assert torch.isclose(m.prior.sum(), torch.tensor(1.0)) and m.mu.shape == (C, model.feat_channels)
    active = torch.full_like(bt["label"], 255)
    active[:, 5:8, 5:8] = 3
    bt["label"] = active
    out_t = model(bt["image"])
    pl = m.refine_pseudo_labels(ctx, bt, make_pseudo_labels(ctx, bt, out_t))
    assert (pl.label[active != 255] == 3).all()
    bt["pseudo"] = pl
    terms = m.target_loss(ctx, bt, out_t)
    model.zero_grad()
    terms["sl_t"].backward()
    assert m.mu.grad is not None and m.mu.grad.abs().sum() > 0
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())


def test_cpsl_refused_with_dacs_both_mix():
    with pytest.raises(ValueError, match="cpsl.*dacs|dacs.*cpsl"):
        build_methods("dacs+cpsl")
    with pytest.raises(ValueError, match="depth"):
        build_methods("advent+depth")
    for spec in ["t2s+dacs", "bida+t2s", "cpsl>kd", "fada>sd", "fada>cra>sd", "depth>sprior", "cpsl+t2s+ripu"]:
        build_methods(spec)


# ----------------------------------------------------------------------------- BiDA
def test_bida_formulas():
    logits = torch.randn(2, 4, 3, 3)
    p = logits.softmax(1)
    assert float(entropy(logits)) == pytest.approx(float(-(p * p.log()).sum(1).mean()), rel=1e-5)
    # the reference's double softmax gives a different (flatter, larger) value
    q = p.softmax(1)
    assert float(-(q * q.log()).sum(1).mean()) > float(entropy(logits)) + 1e-3
    conf = [np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.05, 0.95, 0.85])]
    pred = [np.array([0] * 10 + [1, 1])]
    thr = class_thresholds(conf, pred, 3, prop=0.2)
    assert thr[0] == pytest.approx(0.8) and thr[1] == pytest.approx(0.95) and thr[2] == 1.0
    feat = torch.tensor([[[[1.0]], [[0.0]]]])                               # (1,2,1,1): along x
    protos = torch.tensor([[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s = proto_scores(feat, protos, torch.tensor([True, True, False]))
    assert torch.allclose(s[0, :, 0, 0], torch.tensor([10.0, 0.0, -10.0]), atol=1e-5)


def test_class_means_are_masked_means():
    feat = torch.arange(8.0).view(1, 2, 2, 2)
    label = torch.tensor([[[0, 0], [1, 255]]])
    means, present = class_means(feat, label, 3)
    assert torch.allclose(means[0], torch.tensor([0.5, 4.5])) and torch.allclose(means[1], torch.tensor([2.0, 6.0]))
    assert present.tolist() == [True, True, False]


def test_bida_static_and_dynamic_pseudo_labels():
    model, ctx, m, bs, bt = _ready(BiDA())
    bt["label"] = torch.full_like(bt["label"], 255)
    out_s = model(bs["image"])
    m.source_loss(ctx, bs, out_s)
    assert m.seen_s.any()
    pl = make_pseudo_labels(ctx, bt, model(bt["image"]))
    static = m.static_labels(pl)
    # a kept pixel is at or above its class threshold or in its image's top 10 %
    kept = static != 255
    assert kept.any() and (~kept).any()
    ctx.iteration = 3   # gamma = 1: the calibrated prototypes are the target ones
    pl2 = m.refine_pseudo_labels(ctx, bt, pl)
    assert ((pl2.label != 255).sum() >= kept.sum())                      # dynamic labels only fill ignored pixels
    assert (pl2.label[kept] == static[kept]).all()


# ----------------------------------------------------------------------------- T2S
def test_fda_keeps_the_source_phase_and_takes_the_target_low_amplitudes():
    torch.manual_seed(0)
    src, tgt = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48) * 0.5
    out = fda(src, tgt, beta=0.1)
    fs, ft, fo = (torch.fft.fft2(x) for x in (src, tgt, out))
    strong = fs.abs() > 1e-3
    d = torch.remainder(fo.angle() - fs.angle() + math.pi, 2 * math.pi) - math.pi
    assert d[strong].abs().max() < 1e-3                                   # phase kept
    assert torch.allclose(fo[..., 0, 0].abs(), ft[..., 0, 0].abs(), rtol=1e-4)   # mean brightness: the target's
    b = int(0.1 * 32)   # the band's edge, both signs: the target's amplitudes (a one-sided band would average them)
    for ky, kx in [(b, b), (-b, -b), (b, -b)]:
        assert torch.allclose(fo[..., ky, kx].abs(), ft[..., ky, kx].abs(), rtol=1e-4)
    assert torch.allclose(fo[..., 10, 10].abs(), fs[..., 10, 10].abs(), rtol=1e-3)   # high frequency: the source's
    assert not torch.allclose(out, src)


def test_info_nce_matches_a_hand_computed_value():
    q = F.normalize(torch.tensor([[1.0, 0.0]]), dim=1)
    pos = F.normalize(torch.tensor([[1.0, 1.0]]), dim=1)
    neg = F.normalize(torch.tensor([[[0.0, 1.0], [-1.0, 0.0]]]), dim=2)
    tau = 0.5
    a, b, c = (1 / math.sqrt(2)) / tau, 0.0 / tau, -1.0 / tau
    want = -math.log(math.exp(a) / (math.exp(a) + math.exp(b) + math.exp(c)))
    assert float(info_nce(q, pos, neg, tau)[0]) == pytest.approx(want, rel=1e-5)


def test_t2s_source_images_change_labels_stay_and_class_weights_favour_unsure_classes():
    model, ctx, m, bs, bt = _ready(T2S())
    new = m.transform_source(ctx, bs, bt)
    assert torch.equal(new["label"], bs["label"]) and not torch.equal(new["image"], bs["image"])
    assert new["image"].dtype == torch.uint8   # mixes with uint8 target images (DACS, CPSL CutMix) unchanged
    m.conf[:] = 0.9
    m.conf[3] = 0.5
    w = m.class_weights(torch.tensor([0, 3]))
    assert w[1] > w[0] and float(w.mean()) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- depth distribution
def test_berhu_is_l1_below_c_and_scaled_l2_above():
    pred, tgt = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([0.1, 1.0, 0.5])
    c = 0.2 * 1.0
    want = (0.1 + (1.0 + c * c) / (2 * c) + (0.25 + c * c) / (2 * c)) / 3
    assert float(berhu(pred, tgt)) == pytest.approx(want, rel=1e-6)


def test_gmm_em_recovers_two_clusters_and_density_targets_are_in_range():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 3, generator=g) * 0.02 + torch.tensor([0.2, 0.3, 0.5])
    b = torch.randn(400, 3, generator=g) * 0.02 + torch.tensor([0.8, 0.6, 0.1])
    mu, var, w = fit_gmm(torch.cat([a, b]), k=2)
    got = sorted(mu.tolist())
    assert np.allclose(got[0], [0.2, 0.3, 0.5], atol=0.02) and np.allclose(got[1], [0.8, 0.6, 0.1], atol=0.02)
    assert torch.allclose(w.sum(), torch.tensor(1.0))
    ds = ToyDataset(n=3, size=(32, 64), depth=True)
    gm = fit_gmms(ds, C, (8, 16), components=3)
    assert gm.fitted[0] and not gm.fitted[5]
    box = torch.tensor([[0.0, 0.0, 1.0, 1.0, 0.0]])
    pts = pixel_points(box, torch.full((1, 8, 16), 0.5))
    d = gm.density_target(pts.reshape(-1, 3), torch.zeros(8 * 16, dtype=torch.long))
    assert ((d >= 0) & (d < 1)).all()
    # a flipped crop mirrors x; a crop maps into its box
    p = pixel_points(torch.tensor([[0.5, 0.25, 0.5, 0.5, 1.0]]), torch.zeros(1, 2, 2))
    assert torch.allclose(p[0, 0, 0, :2], torch.tensor([1 - (0.25 + 0.125), 0.5 + 0.125]))


def test_depth_refuses_a_source_without_depth_in_one_line():
    src, tgt = ToyDataset(n=2, size=SIZE), ToyDataset(n=2, size=SIZE, seed=1)
    with pytest.raises(ValueError) as e:
        fit(tiny(), TrainConfig(iterations=1, crop_size=SIZE), src, tgt, methods=build_methods("depth"), progress=False)
    assert "depth" in str(e.value) and "\n" not in str(e.value)


def test_spatial_prior_drops_small_components_per_class():
    lab = np.full((10, 10), 255, np.uint8)
    lab[0:5, 0:5] = 1          # 25 px
    lab[8:10, 8:10] = 1        # 4 px
    lab[7, 0] = 2              # 1 px
    lab[6:8, 5:7] = 2          # 4 px, 8-connected to nothing else of class 2
    lab[9, 0], lab[8, 1] = 3, 3   # two pixels touching at a corner: one 8-connected component of 2
    out = drop_small_components(lab, np.array([0, 5, 3, 2]))
    assert (out[0:5, 0:5] == 1).all() and (out[8:10, 8:10] == 255).all()
    assert out[7, 0] == 255 and (out[6:8, 5:7] == 2).all()
    assert out[9, 0] == 3 and out[8, 1] == 3
    # the sizes reproduce the reference's 16-class scale: the most frequent class gets 50 + 4950
    sizes = component_sizes(np.array([0.5, 0.25, 0.0]), 1280 * 760)
    assert sizes.tolist() == pytest.approx([5000, 2525, 50])


# ----------------------------------------------------------------------------- stages through the loop
@pytest.mark.parametrize("spec,term", [("fada>sd", "sd_t"), ("source_only>kd", "kd_t"), ("source_only>sprior", "sd_t")])
def test_distillation_stages_train_on_the_frozen_models_pseudo_labels(spec, term):
    src = ToyDataset(n=4, size=(64, 128), depth=True)
    tgt = ToyDataset(n=4, size=(64, 128), classes=(0, 8, 10, 11), seed=1)
    model = tiny()
    cfg = TrainConfig(iterations=1, crop_size=SIZE, lr=1e-2)
    methods = build_methods(spec, {"sd": {"iterations": 2}, "kd": {"iterations": 2, "threshold": 0.0},
                                   "sprior": {"iterations": 2, "threshold": 0.0}})
    fit(model, cfg, src, tgt, methods=methods, progress=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = run_stages(methods, model, src, tgt, cfg)
    (name, r), = res.items()
    assert r["iterations"] == 2 and term in r["losses"] and math.isfinite(r["losses"][term])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
