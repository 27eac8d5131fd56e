"""HRDA (core/models/hrda.py wrapper + core/methods/hrda.py detail loss): the fusion rule, the detail box,
the sliding-window eval path the EMA teacher uses, state loading, the label crop of the detail loss, the
loop and the CLI (tiny random-init segmentor, as tests/test_methods.py)."""
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from app.session import load_init
from core.methods import build_methods
from core.methods.base import wrap_model
from core.methods.hrda import HRDA, detail_target
from core.methods.services import EMATeacher
from core.models import upsample
from core.models.hrda import HRDASegmentor, attention_by_class
from core.train import TrainConfig, fit, load_checkpoint, save_checkpoint
from tests.test_cli import ROOT, TINY
from tests.toy import ToyDataset, tiny_segmentor

C = 19


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed=0):
    return tiny_segmentor(seed, C)


def hrda(seed=0):
    return HRDASegmentor(tiny(seed))


def images(b=2, size=(64, 128), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, *size), generator=g, dtype=torch.uint8)


# ----------------------------------------------------------------------------- the wrapper
def test_fusion_is_exactly_lr_outside_the_detail_box_and_mixes_inside():
    m = hrda().train()
    x = images()
    torch.manual_seed(3)
    out = m(x)
    y0, x0, h, w = out.extra["box"]
    grid = out.logits.shape[-2:]
    assert tuple(grid) == (16, 32) and out.extra["hr"].shape[-2:] == (h // 4, w // 4)
    lr_up = upsample(out.extra["lr"], grid)
    inside = torch.zeros(grid, dtype=torch.bool)
    inside[y0 // 4:(y0 + h) // 4, x0 // 4:(x0 + w) // 4] = True
    assert torch.equal(out.logits[..., ~inside], lr_up[..., ~inside])
    assert (out.extra["att"][..., ~inside] == 0).all() and (out.extra["att"][..., inside] > 0).all()
    # inside: (1 - A) * up(lr) + A * hr, which is not the LR prediction
    a = out.extra["att"][..., inside]
    hr = out.extra["hr"].flatten(2)
    assert torch.allclose(out.logits[..., inside], (1 - a) * lr_up[..., inside] + a * hr, atol=1e-5)
    assert not torch.allclose(out.logits[..., inside], lr_up[..., inside], atol=1e-3)
    # the feature is the context's: it covers the whole input (stride 8 here)
    assert out.feat.shape == (2, m.feat_channels, 8, 16)


def test_detail_box_is_random_divisible_by_8_and_inside_the_input():
    m = hrda().train()
    x = images(1, (64, 128))
    boxes = set()
    with torch.no_grad():
        for seed in range(12):
            torch.manual_seed(seed)
            y0, x0, h, w = m(x).extra["box"]
            assert (h, w) == (32, 64) and y0 % 8 == 0 and x0 % 8 == 0
            assert 0 <= y0 <= 64 - h and 0 <= x0 <= 128 - w
            boxes.add((y0, x0))
        torch.manual_seed(5)
        again = m(x).extra["box"]
        torch.manual_seed(5)
        assert m(x).extra["box"] == again          # drawn with the (per-iteration seeded) global RNG
    assert len(boxes) > 3
    # a size that is not a multiple of 8 is padded, and the outputs cropped back to the input
    out = m(images(1, (70, 90)))
    y0, x0, h, w = out.extra["box"]
    assert out.logits.shape[-2:] == (18, 23) and y0 + h <= 72 and x0 + w <= 96 and y0 % 8 == x0 % 8 == 0


def test_eval_forward_covers_the_whole_image_with_sliding_detail_windows():
    m = hrda().eval()
    x = images(2, (64, 128))
    with torch.no_grad():
        out = m(x)
        assert out.logits.shape == (2, C, 16, 32) and "box" not in out.extra and "hr" not in out.extra
        assert (out.extra["att"] > 0).all()                 # no box: the whole image is detail
        # expected: 32x64 windows at stride 16x32, logits averaged by count, fused with the LR context
        hr = torch.zeros(2, C, 16, 32)
        cnt = torch.zeros(1, 1, 16, 32)
        for y in (0, 16, 32):
            for x0 in (0, 32, 64):
                hr[..., y // 4:y // 4 + 8, x0 // 4:x0 // 4 + 16] += m.base(x[..., y:y + 32, x0:x0 + 64]).logits
                cnt[..., y // 4:y // 4 + 8, x0 // 4:x0 // 4 + 16] += 1
        a = out.extra["att"]
        expect = (1 - a) * upsample(out.extra["lr"], (16, 32)) + a * hr / cnt
    assert torch.allclose(out.logits, expect, atol=1e-5)


def test_state_dict_round_trip_and_a_plain_segmentor_state(tmp_path):
    a, b = hrda(0), hrda(1)
    sd = a.state_dict()
    assert all(k.startswith(("base.", "att.")) for k in sd) and any(k.startswith("att.") for k in sd)
    b.load_state_dict(sd)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in sd.items())
    # a plain (e.g. source-only --init) state loads into the base; the attention head is kept
    plain = tiny(7)
    att = {k: v.clone() for k, v in b.att.state_dict().items()}
    b.load_state_dict(plain.state_dict())
    assert all(torch.equal(v, b.base.state_dict()[k]) for k, v in plain.state_dict().items())
    assert all(torch.equal(v, b.att.state_dict()[k]) for k, v in att.items())
    # --init either way: plain checkpoint -> HRDA model, HRDA checkpoint -> plain model
    save_checkpoint(tmp_path / "plain.pt", {"model": plain.state_dict()})
    save_checkpoint(tmp_path / "hrda.pt", {"model": sd})
    assert set(load_init(str(tmp_path / "plain.pt"), hrda(2))) == set(sd)
    back = load_init(str(tmp_path / "hrda.pt"), tiny(3))
    assert set(back) == set(plain.state_dict()) and torch.equal(back["head.classifier.weight"],
                                                                 sd["base.head.classifier.weight"])


def test_freeze_scopes_and_param_groups_cover_the_attention_head():
    m = hrda().train()
    att = list(m.att.parameters())
    assert all(p.requires_grad for p in att)
    head_group = m.param_groups(1.0)[-1]
    assert head_group["lr"] == 10 and all(any(p is q for q in head_group["params"]) for p in att)
    with m.freezing("classifier"):
        m.train()
        assert not any(p.requires_grad for p in att) and not any(b.training for b in m.att.modules()
                                                                  if isinstance(b, torch.nn.BatchNorm2d))
        trainable = {id(p) for p in m.parameters() if p.requires_grad}
        assert trainable == {id(p) for p in m.base.head.classifier.parameters()}
    assert m.frozen == "backbone" and all(p.requires_grad for p in att) and m.att[1].training


# ----------------------------------------------------------------------------- the detail loss
def test_detail_loss_target_is_the_label_under_the_box_at_the_labels_resolution():
    m = hrda().train()
    x = images(2, (64, 128))
    torch.manual_seed(1)
    with torch.no_grad():
        out = m(x)
    y0, x0, h, w = out.extra["box"]
    k = 11
    label = torch.zeros(2, 32, 64, dtype=torch.long)      # labels stored at half the image size
    label[:, y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = k
    target = detail_target(label, (64, 128), out.extra["box"])
    assert target.shape == (2, h // 2, w // 2) and (target == k).all()
    method = HRDA()
    terms = method.source_loss(None, {"image": x, "label": label}, out)
    expect = F.cross_entropy(upsample(out.extra["hr"], (h // 2, w // 2)), torch.full_like(target, k))
    assert torch.allclose(terms["hr_s"], expect / 9)       # lambda_d / (1 - lambda_d) = 0.1 / 0.9
    # target: active labels only; none in the batch -> no term; none inside the box -> zero
    none = torch.full_like(label, 255)
    assert method.target_loss(None, {"image": x, "label": none}, out) == {}
    free = torch.ones(32, 64, dtype=torch.bool)
    free[y0 // 2:(y0 + h) // 2, x0 // 2:(x0 + w) // 2] = False
    yy, xx = free.nonzero()[0].tolist()
    outside = none.clone()
    outside[:, yy, xx] = 3
    assert float(method.target_loss(None, {"image": x, "label": outside}, out)["hr_t"]) == 0
    assert float(method.target_loss(None, {"image": x, "label": label}, out)["hr_t"]) == pytest.approx(
        float(terms["hr_s"]))


# ----------------------------------------------------------------------------- loop, teacher, CLI
def test_fit_hrda_dacs_ripu_is_finite_and_resumes(tmp_path):
    src = ToyDataset(n=4, size=(64, 128))
    tgt = ToyDataset(n=4, size=(64, 128), classes=(0, 8, 10, 11), seed=1)

    def some(i, sample):   # sparse active labels everywhere: every crop and detail box holds some
        lab = np.full(np.shape(sample["label"])[:2], 255, np.uint8)
        lab[::4, ::4] = sample["label"][::4, ::4]
        return lab

    cfg = TrainConfig(iterations=2, crop_size=(32, 64), lr=1e-2, checkpoint_every=1)
    ck = tmp_path / "ck.pt"
    methods = build_methods("hrda+dacs+ripu")
    assert methods[0].name == "hrda"
    with pytest.raises(ValueError, match="built with hrda"):
        fit(tiny(), cfg, src, tgt, methods=methods, progress=False)
    out = fit(wrap_model(tiny(), methods), cfg, src, tgt, target_labels=some, methods=methods, checkpoint=ck,
              progress=False)
    assert {"ce_s", "hr_s", "ce_t", "hr_t", "ce_mix", "cr_s", "nl_t"} <= set(out["losses"])
    assert all(math.isfinite(v) for v in out["losses"].values()), out["losses"]
    assert any(k.startswith("att.") for k in load_checkpoint(ck)["model"])
    methods = build_methods("hrda+dacs+ripu")
    fit(wrap_model(tiny(1), methods), TrainConfig(**{**cfg.__dict__, "iterations": 3}), src, tgt,
        target_labels=some, methods=methods, checkpoint=ck, progress=False)
    assert load_checkpoint(ck)["iteration"] == 3


def test_ema_teacher_is_a_deep_copy_that_uses_the_sliding_window_path():
    student = hrda().train()
    teacher = EMATeacher(student)
    assert isinstance(teacher.model, HRDASegmentor) and teacher.model.base is not student.base
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    x = images(2, (32, 64))
    out = teacher(x)
    assert "box" not in out.extra and out.logits.shape == (2, C, 8, 16)
    with torch.no_grad():
        student.eval()
        assert torch.equal(out.logits, student(x).logits)
        student.train()
        for p in student.parameters():
            p.add_(1.0)
    teacher.update(student, 0)     # it = 0: the teacher becomes the student, attention head included
    assert all(torch.equal(t, s) for t, s in zip(teacher.model.parameters(), student.parameters()))


def test_attention_by_class_on_ground_truth_pixels():
    ds = ToyDataset(n=2, size=(32, 64))
    m = hrda().train()
    att = attention_by_class(m, ds, ["road", "building", "pole"], n_images=2)
    assert m.training
    assert 0 < att["road"] < 1 and 0 < att["building"] < 1 and math.isnan(att["pole"])
    with torch.no_grad():    # road = class 0 channel over the road pixels of image 0
        m.eval()
        s = ds[0]
        a = upsample(m(torch.from_numpy(s["image"]).permute(2, 0, 1)[None]).extra["att"], (32, 64))[0, 0]
    one = attention_by_class(m, ds, ["road"], n_images=1)["road"]
    assert one == pytest.approx(float(a[torch.from_numpy(s["label"]) == 0].mean()), rel=1e-5)


def test_cli_hrda_dacs_one_oracle_round(tmp_path, tmp_path_factory):
    cache = tmp_path_factory.mktemp("hrda_cache")
    w = tmp_path / "w"
    env = {**os.environ, "SEGSTUDIO_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "launch.py"), "--workdir", str(w), "--method", "hrda+dacs",
                        "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "1", *TINY],
                       capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    for step in ("warmup", "round1"):     # the run trained the wrapper, from the warm-up on
        assert any(k.startswith("att.") for k in load_checkpoint(w / "checkpoints" / f"{step}.pt")["model"])
