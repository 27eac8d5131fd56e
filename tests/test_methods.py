"""UDA method suite: composition rules, one fit step per method, and each method's defining property
(tiny random-init segmentor at 32x64 on the toy dataset; the whole file runs in well under a minute)."""
import math

import numpy as np
import pytest
import torch

from core.acquisition.confidence import cra_entropy
from core.evaluate import predict_logits
from core.methods import REGISTRY, build_methods, compose_adjust
from core.methods.advent import AdvEnt
from core.methods.base import wrap_model
from core.methods.cra import CRA
from core.methods.dacs import DACS, class_masks, class_mix, strong_augment
from core.methods.fada import FADA
from core.methods.labelshift import ClassifierRectification, InferenceAdjustment
from core.methods.services import (EMATeacher, class_stats, ema_teacher, estimate_target_prior, make_pseudo_labels,
                                   pseudo_from_logits)
from core.train import Context, TrainConfig, fit, load_checkpoint, run_stages
from tests.toy import ToyDataset, tiny_segmentor

SIZE = (32, 64)
C = 19


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0):
    return tiny_segmentor(seed, C)


def data():
    return ToyDataset(n=4, size=SIZE), ToyDataset(n=4, size=SIZE, classes=(0, 8, 10, 11), seed=1)


def make_ctx(model, src=None, tgt=None, iterations=10):
    model.train()
    return Context(model=model, cfg=TrainConfig(iterations=iterations, crop_size=SIZE), device=torch.device("cpu"),
                   source=src, target=tgt)


def batch(ds, active=None):
    imgs = torch.stack([torch.from_numpy(ds[i]["image"]).permute(2, 0, 1) for i in range(2)])
    labs = torch.stack([torch.from_numpy(ds[i]["label"]).long() for i in range(2)])
    return {"image": imgs, "label": labs if active is None else active}


# ----------------------------------------------------------------------------- registry / composition
def test_compositions_accepted_and_sorted():
    assert build_methods("source_only") == []
    assert [m.name for m in build_methods("dacs+cra+ia+ripu")] == ["ia", "dacs", "ripu", "cra"]
    for spec in ["advent+minent+ripu", "fada+ripu", "dacs+advent", "fada>cra", "dacs>cra>cr", "cra+ripu+ia",
                 "source_only+ripu", "dacs+cr"]:
        assert build_methods(spec)
    ms = build_methods("fada>cra")
    assert [m.post_hoc for m in ms] == [False, True] and ms[1].name == ">cra"
    # RIPU's losses compose with every method
    for name in REGISTRY:
        if name != "ripu":
            build_methods(f"{name}+ripu")
    assert build_methods("minent", {"minent": {"lambda_ent": 0.5}})[0].lambda_ent == 0.5


@pytest.mark.parametrize("spec,words", [
    ("advent+fada", ["advent", "fada", "discriminator"]),
    ("fada+cra", ["fada", "cra"]),
    ("cra+advent", ["cra", "advent"]),
    ("ia+cr", ["ia", "cr", "twice"]),
    ("cr>ia", ["cr", "ia"]),
    ("dacs+dacs", ["dacs", "twice"]),
    ("dacs+nope", ["unknown", "nope"]),
    ("fada>", ["empty"]),
])
def test_incompatible_compositions_rejected_with_one_line(spec, words):
    with pytest.raises(ValueError) as e:
        build_methods(spec)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_options_are_a_value_error():
    with pytest.raises(ValueError, match="minent"):
        build_methods("minent", {"minent": {"nonsense": 1}})


# ----------------------------------------------------------------------------- every method through the loop
@pytest.mark.parametrize("name", [n for n in REGISTRY if n not in ("source_only", "ripu")])
def test_each_method_with_ripu_trains_finite_and_resumes(name, tmp_path):
    # stored at 2x the training size: the loop keeps target labels at their stored size
    src = ToyDataset(n=4, size=(64, 128), depth=True)
    tgt = ToyDataset(n=4, size=(64, 128), classes=(0, 8, 10, 11), seed=1)
    opts = {"cr": {"iterations": 1}, "cra": {"stage_iterations": 1}, "sd": {"iterations": 1}, "kd": {"iterations": 1},
            "sprior": {"iterations": 1}}
    methods = build_methods(f"{name}+ripu", opts)
    model = wrap_model(tiny(), methods)    # hrda trains a wrapper around the segmentor
    cfg = TrainConfig(iterations=2, crop_size=SIZE, lr=1e-2, checkpoint_every=1)
    ck = tmp_path / "ck.pt"
    out = fit(model, cfg, src, tgt, methods=methods, checkpoint=ck, progress=False)
    assert {"ce_s", "ce_t", "cr_s", "nl_t"} <= set(out["losses"])
    assert all(math.isfinite(v) for v in out["losses"].values()), out["losses"]
    expect = {"dacs": "ce_mix", "advent": "adv_t", "minent": "ent_t", "fada": "adv_t", "cra": "st_t", "cpsl": "sl_t",
              "bida": "fwd_t", "t2s": "t2s", "depth": "dens_t"}.get(name)
    if expect:
        assert expect in out["losses"]
    run_stages(methods, model, src, tgt, cfg)
    ev_adjust = compose_adjust(methods)
    assert (ev_adjust is not None) == (name == "ia")
    # the checkpoint carries the method state (discriminator + its optimizer, teacher); resume continues
    state = load_checkpoint(ck)
    assert len(state["methods"]) == 2
    if name in ("advent", "fada", "cra", "depth"):
        st = state["methods"][[m.name for m in methods].index(name)]
        assert "disc" in st and "opt_d" in st
    methods = build_methods(f"{name}+ripu", opts)
    fit(wrap_model(tiny(1), methods), TrainConfig(**{**cfg.__dict__, "iterations": 3}), src, tgt,
        methods=methods, checkpoint=ck, progress=False)
    assert load_checkpoint(ck)["iteration"] == 3


def test_source_only_fit_never_trains_on_target_ground_truth():
    src, tgt = data()
    out = fit(tiny(), TrainConfig(iterations=1, crop_size=SIZE), src, tgt, progress=False)
    assert out["losses"].get("ce_t", 0) == 0
    out = fit(tiny(), TrainConfig(iterations=1, crop_size=SIZE), src, tgt, methods=build_methods("minent"),
              progress=False)
    assert out["losses"]["ce_t"] == 0   # the target forward ran (MinEnt reads it), with no labels


def test_unused_target_forward_is_skipped_without_active_labels():
    """source_only and DACS never read the student's target output: without active labels the loop
    skips that forward (1 student forward per iteration for source_only, 2 for DACS: source + mixed);
    with active labels it runs and the target CE is trained."""
    src, tgt = data()

    def forwards(spec, labels=None):
        model = tiny()
        calls = []
        # counts student forwards only: the EMA teacher is a deep copy (hook included) in eval mode
        model.register_forward_hook(lambda mod, inp, out: calls.append(1) if mod.training else None)
        out = fit(model, TrainConfig(iterations=2, crop_size=SIZE), src, tgt, target_labels=labels,
                  methods=build_methods(spec), progress=False)
        return len(calls) / 2, out["losses"]

    assert forwards("source_only")[0] == 1
    assert forwards("dacs")[0] == 2
    assert forwards("advent")[0] == 2

    def some(i, sample):
        lab = np.full(np.shape(sample["label"])[:2], 255, np.uint8)
        lab[::4, ::4] = 0          # sparse points everywhere: every random crop holds some
        return lab

    n, losses = forwards("dacs", some)
    assert n == 3 and losses["ce_t"] > 0


# ----------------------------------------------------------------------------- EMA teacher
def test_ema_update_formula_exact_and_once_per_step():
    student = tiny()
    teacher = EMATeacher(student, alpha=0.99)
    t0 = [p.clone() for p in teacher.model.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    it = 500
    a = min(1 - 1 / (it + 1), 0.99)
    assert a == 0.99
    assert teacher.update(student, it)
    for t, old, s in zip(teacher.model.parameters(), t0, student.parameters()):
        assert torch.equal(t, a * old + (1 - a) * s)
    snap = [p.clone() for p in teacher.model.parameters()]
    assert not teacher.update(student, it)        # a second user in the same step: no second update
    assert all(torch.equal(a, b) for a, b in zip(snap, teacher.model.parameters()))
    # the ramp: at it = 0 the teacher becomes the student; at it = 4, a = 0.8
    teacher.update(student, 0)
    assert all(torch.equal(t, s) for t, s in zip(teacher.model.parameters(), student.parameters()))
    assert teacher.alpha_at(4) == pytest.approx(0.8)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_is_one_shared_service():
    ctx = make_ctx(tiny())
    d1, d2 = DACS(), DACS(alpha=0.5)
    d1.setup(ctx)
    d2.setup(ctx)
    assert d1.teacher is d2.teacher is ema_teacher(ctx) and d1.teacher.alpha == 0.99
    ctx.iteration = 7
    d1.after_step(ctx)
    snap = [p.clone() for p in d1.teacher.model.parameters()]
    with torch.no_grad():
        for p in ctx.model.parameters():
            p.add_(1.0)
    d2.after_step(ctx)
    assert all(torch.equal(a, b) for a, b in zip(snap, d1.teacher.model.parameters()))


# ----------------------------------------------------------------------------- DACS
def test_classmix_image_and_label_consistency():
    src, tgt = data()
    bs, bt = batch(src), batch(tgt)
    torch.manual_seed(0)
    mask = class_masks(bs["label"])
    for i in range(2):
        classes = [c for c in torch.unique(bs["label"][i]).tolist() if c != 255]
        picked = torch.unique(bs["label"][i][mask[i]]).tolist()
        assert 255 not in picked and len(picked) == (len(classes) + 1) // 2
        assert torch.equal(mask[i], torch.isin(bs["label"][i], torch.tensor(picked)))
    w_t = torch.full(bt["label"].shape, 0.3)
    img, lab, w = class_mix(bs["image"], bs["label"], bt["image"], bt["label"], w_t, mask)
    m3 = mask.unsqueeze(1).expand_as(img)
    assert torch.equal(img[m3], bs["image"][m3]) and torch.equal(img[~m3], bt["image"][~m3])
    assert torch.equal(lab[mask], bs["label"][mask]) and torch.equal(lab[~mask], bt["label"][~mask])
    assert torch.all(w[mask] == 1) and torch.all(w[~mask] == 0.3)
    aug = strong_augment(img, jitter_p=1.0, blur_p=1.0)
    assert aug.shape == img.shape and aug.dtype == torch.float32 and 0 <= aug.min() and aug.max() <= 1


def test_dacs_active_labels_override_pseudo_labels_in_the_mix():
    src, tgt = data()
    ctx = make_ctx(tiny(), src, tgt)
    dacs = DACS(strong_aug=False)
    dacs.setup(ctx)
    bs = batch(src)
    active = torch.full((2, *SIZE), 255, dtype=torch.long)
    active[:, 10:20, :] = 18                       # "bicycle": neither the teacher's nor the source's guess
    bt = batch(tgt, active=active)
    bt["pseudo"] = make_pseudo_labels(ctx, bt, None)
    pl = bt["pseudo"]
    assert torch.all(pl.label[active != 255] == 18) and torch.all(pl.active == (active != 255))
    torch.manual_seed(1)
    mixed = dacs.mix(ctx, bs, bt)
    mask = mixed["mask"]
    on_target_active = ~mask & (active != 255)
    assert on_target_active.any()
    assert torch.all(mixed["label"][on_target_active] == 18) and torch.all(mixed["weight"][on_target_active] == 1)
    frac = float((pl.confidence > 0.968).float().mean())
    rest = ~mask & (active == 255)
    assert torch.allclose(mixed["weight"][rest], torch.tensor(frac))
    assert torch.equal(mixed["label"][rest], pl.label[rest])
    assert torch.equal(mixed["image"][mask.unsqueeze(1).expand(-1, 3, -1, -1)],
                       bs["image"][mask.unsqueeze(1).expand(-1, 3, -1, -1)])


# ----------------------------------------------------------------------------- adversarial: who gets gradients
@pytest.mark.parametrize("cls", [AdvEnt, FADA, CRA])
def test_discriminator_frozen_in_generator_step_and_generator_untouched_by_d_step(cls):
    src, tgt = data()
    model = tiny()
    ctx = make_ctx(model, src, tgt)
    bs, bt = batch(src), batch(tgt, active=torch.full((2, *SIZE), 255, dtype=torch.long))
    out_s, out_t = model(bs["image"]), model(bt["image"])
    if cls is CRA:    # a random model is unsure everywhere: put the threshold at the median entropy
        E = cra_entropy(make_pseudo_labels(ctx, bt, out_t).prob[0].numpy())
        m = CRA(ent_thresh=float(np.median(E)), rare_pct=0.0)
    else:
        m = cls()
    m.setup(ctx)
    if m.needs_pseudo_labels:
        bt["pseudo"] = m.refine_pseudo_labels(ctx, bt, make_pseudo_labels(ctx, bt, out_t))
        assert bt["pseudo"].trusted.any() and not bt["pseudo"].trusted.all()
    g_terms = m.target_loss(ctx, bt, out_t)
    sum(g_terms.values()).backward()
    assert all(p.grad is None or not p.grad.any() for p in m.disc.parameters())
    stem = model.backbone.conv_stem.weight.grad
    assert stem is not None and stem.abs().sum() > 0                   # the encoder is aligned
    head = model.head.classifier.weight.grad        # the classifier on top of .feat
    if cls is FADA:   # FADA's generator term acts on features only (its soft labels are detached)
        assert head is None
    else:             # ADVENT's term acts through the softmax; CRA also self-trains the head
        assert head is not None and head.abs().sum() > 0
    seg_before = {k: v.clone() for k, v in model.state_dict().items()}
    grads_before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    d_before = [p.clone() for p in m.disc.parameters()]
    logs = m.adversary_step(ctx, bs, bt, out_s, out_t)
    assert math.isfinite(logs["d_adv"])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in seg_before.items())
    for g, p in zip(grads_before, model.parameters()):
        assert (g is None and p.grad is None) or torch.equal(g, p.grad)
    assert any(not torch.equal(a, b) for a, b in zip(d_before, m.disc.parameters()))
    assert all(p.grad is None for p in m.disc.parameters())


# ----------------------------------------------------------------------------- label shift
def test_ia_adds_log_prior_ratio_to_logits():
    pi_s = np.linspace(1, 2, C)
    pi_s /= pi_s.sum()
    pi_t = np.linspace(3, 1, C)
    pi_t /= pi_t.sum()
    ia = InferenceAdjustment(pi_s=pi_s, pi_t=pi_t)
    z = torch.randn(2, C, 4, 8)
    expect = z + torch.tensor(np.log(pi_t / pi_s), dtype=torch.float32).view(1, C, 1, 1)
    assert torch.allclose(ia.adjust_logits(z), expect, atol=1e-6)
    assert torch.allclose(ia.adjust_logits(z[0]), expect[0], atol=1e-6)
    # through evaluate's prediction path
    model = tiny().eval()
    img = ToyDataset(n=1, size=SIZE)[0]["image"]
    plain = predict_logits(model, img, SIZE)
    adj = predict_logits(model, img, SIZE, adjust=compose_adjust([ia]))
    bias = torch.tensor(np.log(pi_t) - np.log(pi_s), dtype=torch.float32).view(C, 1, 1)
    assert torch.allclose(adj - plain, bias.expand_as(plain), atol=1e-5)
    # and on pseudo-labels: the argmax follows the adjusted logits; active pixels keep their label
    active = torch.full((2, 4, 8), 255, dtype=torch.long)
    active[:, 0, 0] = 5
    pl = ia.refine_pseudo_labels(None, {}, pseudo_from_logits(z, active))
    assert torch.equal(pl.label[active == 255], expect.argmax(1)[active == 255]) and torch.all(pl.label[:, 0, 0] == 5)


def test_class_stats_and_target_prior_estimate():
    src, tgt = data()
    ctx = make_ctx(tiny(), src, tgt)
    st = class_stats(ctx)
    assert st is class_stats(ctx) and st.num_images == 4
    assert set(np.flatnonzero(st.image_counts)) == {0, 2, 10, 13} and abs(st.pixel_freq.sum() - 1) < 1e-9
    assert abs(st.source_prior.sum() - 1) < 1e-9 and np.all(st.source_prior > 0)
    counts = estimate_target_prior(ctx.model, tgt, st.pixel_freq, SIZE)
    assert counts.shape == (C,) and counts.min() >= 0 and counts.max() <= len(tgt)
    # a model that always predicts class 8 (confidently) "finds" class 8 in every image, nothing rare
    model = tiny()
    with torch.no_grad():
        model.head.classifier.weight.zero_()
        model.head.classifier.bias.zero_()
        model.head.classifier.bias[8] = 20.0
    counts = estimate_target_prior(model, tgt, st.pixel_freq, SIZE)
    assert counts[8] == len(tgt) and counts.sum() == len(tgt)


def test_cr_stage_retrains_only_the_head_with_logit_adjusted_ce():
    src, tgt = data()
    model = tiny()
    cfg = TrainConfig(iterations=2, crop_size=SIZE, lr=1e-2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = run_stages([ClassifierRectification(iterations=2)], model, src, tgt, cfg)["cr"]
    after = model.state_dict()
    # only the classifier changes: backbone and decoder (incl. its BN statistics) stay as they were
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("head.classifier."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head.classifier."))
    bn = {id(p) for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters()}
    assert all(p.requires_grad != (id(p) in bn) for p in model.parameters())   # flags restored
    assert model.frozen == "backbone" and all(m.training for m in model.head.modules())
    assert abs(res["pi_s"].sum() - 1) < 1e-9 and abs(res["pi_t"].sum() - 1) < 1e-9


# ----------------------------------------------------------------------------- CRA trust split
def test_cra_trust_masks_follow_the_threshold_rule():
    # controlled softmax maps: pixel entropies spread around the threshold, two classes predicted
    B, H, W = 1, 8, 16
    torch.manual_seed(0)
    conf = torch.linspace(0.80, 0.999, H * W).view(1, H, W)
    pred = torch.zeros(1, H, W, dtype=torch.long)
    pred[:, :, W - 1:] = 3                                  # class 3: 1/16 of the pixels
    prob = ((1 - conf) / (C - 1)).unsqueeze(1).repeat(1, C, 1, 1)
    prob.scatter_(1, pred.unsqueeze(1), conf.unsqueeze(1))
    logits = prob.log()
    active = torch.full((B, H, W), 255, dtype=torch.long)
    active[0, 0, 0] = 7
    pl = pseudo_from_logits(logits, active)
    E = torch.from_numpy(cra_entropy(pl.prob[0].numpy()))
    # class 3 frequent here: plain threshold 0.01 everywhere
    cra = CRA(rare_pct=0.01)
    cra.setup(make_ctx(tiny()))
    out = cra.refine_pseudo_labels(None, {}, pseudo_from_logits(logits, active))
    expect = E <= 0.01
    expect[0, 0] = True                                     # active pixels are always trusted
    assert torch.equal(out.trusted[0], expect) and 0 < expect.float().mean() < 1
    assert torch.all(out.label[0][~expect] == 255) and out.label[0, 0, 0] == 7
    # with rare_pct 10%, class 3 (6.25% of the pixels) is rare: its E is halved (threshold doubled)
    cra = CRA(rare_pct=0.1)
    cra.setup(make_ctx(tiny()))
    out = cra.refine_pseudo_labels(None, {}, pseudo_from_logits(logits, active))
    rare_px = pl.label[0] == 3
    expect = torch.where(rare_px, E * 0.5 <= 0.01, E <= 0.01)
    expect[0, 0] = True
    assert torch.equal(out.trusted[0], expect)
    assert (expect & rare_px & (E > 0.01)).any()            # the halving actually changed something
    # the stage's fixed thresholds from a pool sweep
    thr = CRA().pool_thresholds(tiny(), ToyDataset(n=2, size=SIZE), SIZE, "cpu")
    assert thr.shape == (C,) and set(np.round(thr, 6)) <= {0.01, 0.02}
