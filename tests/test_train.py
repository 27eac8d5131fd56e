import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from core.models import Segmentor
from core.train import TrainConfig, fit, load_checkpoint
from tests.toy import ToyDataset

ROOT = Path(__file__).resolve().parents[1]


def test_one_training_step_lowers_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    model = Segmentor(19, output_stride=16)
    batch = ToyDataset(n=2, size=(64, 128))
    x = torch.stack([torch.from_numpy(s["image"]).permute(2, 0, 1) for s in batch.items])
    y = torch.stack([torch.from_numpy(s["label"]).long() for s in batch.items])

    def loss():
        return F.cross_entropy(F.interpolate(model(x).logits, size=y.shape[-2:], mode="bilinear"), y,
                               ignore_index=255)
    opt = torch.optim.SGD(model.param_groups(2.5e-4), lr=2.5e-4, momentum=0.9)
    before = loss()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss()
    assert after < before - 1e-3


def test_fit_learns_and_resumes_from_checkpoint(tmp_path):
    ds = ToyDataset(n=4, size=(32, 64))
    cfg = TrainConfig(iterations=6, image_size=(32, 64), checkpoint_every=3, lr=1e-2)
    torch.manual_seed(0)
    model = Segmentor(19, output_stride=16)
    ck = tmp_path / "ck.pt"
    out = fit(model, cfg, ds, target=ds, target_labels=lambda i, s: s["label"], checkpoint=ck, progress=False)
    assert set(out["losses"]) == {"ce_s", "ce_t"} and all(v == v for v in out["losses"].values())
    state = load_checkpoint(ck)
    assert state["iteration"] == 6
    # a finished checkpoint is not retrained; a longer run continues from it
    model2 = Segmentor(19, output_stride=16)
    cfg2 = TrainConfig(**{**cfg.__dict__, "iterations": 8})
    fit(model2, cfg2, ds, checkpoint=ck, progress=False)
    assert load_checkpoint(ck)["iteration"] == 8


def test_ddp_two_gloo_processes_end_with_identical_weights(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "init.pt", weights_only=True)
    assert w0.keys() == w1.keys()
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
    # and training did change the weights (the ranks saw different batches)
    assert any(not torch.equal(w0[k], init[k]) for k in w0 if w0[k].is_floating_point())


def test_poly_lr_with_linear_warmup():
    from core.train import poly_lr

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([dict(params=[p], lr=1.0, base_lr=1.0)], lr=1.0)
    seen = []
    for it in range(100):
        poly_lr(opt, it, 100, 0.9, warmup=10)
        seen.append(opt.param_groups[0]["lr"])
    assert seen[0] == pytest.approx(0.1 * (1 - 0 / 100) ** 0.9)
    assert seen[9] == pytest.approx((1 - 9 / 100) ** 0.9)          # warm-up ends at the poly value
    assert all(a < b for a, b in zip(seen[:9], seen[1:10]))          # rising during warm-up
    assert all(a > b for a, b in zip(seen[10:], seen[11:]))          # decaying afterwards
    poly_lr(opt, 50, 100, 0.9)                                       # no warm-up: plain poly
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5 ** 0.9)
