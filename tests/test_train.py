import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import numpy as np
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
    cfg = TrainConfig(iterations=6, crop_size=(32, 64), checkpoint_every=3, lr=1e-2)
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


@pytest.mark.parametrize("spec", ["dacs", "cpsl"])
def test_ddp_ranks_with_different_forward_counts_do_not_deadlock(tmp_path, spec):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), "uneven", spec]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-3000:]
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)


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


# ----------------------------------------------------------------------------- random scale + crop
class _Pairs:
    """Images whose pixels encode their own (row, column), so any transform can be checked exactly."""

    def __init__(self, H, W, lab_hw=None, labels=None):
        self.H, self.W = H, W
        self.lab_hw = lab_hw or (H, W)
        self.labels = labels

    def __len__(self):
        return 1

    def __getitem__(self, i):
        yy, xx = np.mgrid[0:self.H, 0:self.W]
        img = np.stack([yy % 256, xx % 256, (yy * 7 + xx * 3) % 256], -1).astype(np.uint8)
        lab = self.labels if self.labels is not None else ((np.mgrid[0:self.lab_hw[0], 0:self.lab_hw[1]][0] // 8)
                                                           % 19).astype(np.uint8)
        return {"image": img, "label": lab, "name": "x"}


def test_crop_at_stored_resolution_keeps_image_and_label_aligned():
    from core.data.transforms import TrainView

    np.random.seed(0)
    view = TrainView(_Pairs(256, 512), (128, 256), flip=True, scale=(1.0, 1.0))
    for _ in range(10):
        s = view[0]
        img, lab = s["image"].numpy(), s["label"].numpy()
        assert img.shape == (3, 128, 256) and lab.shape == (128, 256)
        rows = img[0, :, 0].astype(int)                # stored row index (mod 256) of each crop row
        assert np.all(np.diff(rows) == 1)                # unscaled: consecutive stored rows
        assert np.array_equal(lab[:, 0], (rows // 8) % 19)   # the label comes from the same rows


def test_scaled_crops_keep_every_sparse_active_label():
    """40-px style point labels: every labeled pixel survives down-scaling (nearest alone drops many)
    and a crop holds exactly the points inside it."""
    from core.data.folder import resize_label
    from core.data.transforms import TrainView, resize_sparse_label

    rng = np.random.default_rng(1)
    lab = np.full((256, 512), 255, np.uint8)
    ys, xs = rng.integers(0, 256, 40), rng.integers(0, 512, 40)
    lab[ys, xs] = rng.integers(0, 19, 40)
    n = int((lab != 255).sum())
    assert int((resize_label(lab, (192, 384)) != 255).sum()) < n          # plain nearest loses points
    assert int((resize_sparse_label(lab, (192, 384)) != 255).sum()) == n  # none lost
    np.random.seed(3)
    view = TrainView(_Pairs(256, 512, labels=lab), None, scale=(0.75, 0.75))   # whole image, scaled
    assert int((view[0]["label"].numpy() != 255).sum()) == n
    # full-resolution labels of a half-size stored image (Cityscapes labels at 1024x2048, images 512x1024)
    big = np.full((512, 1024), 255, np.uint8)
    big[ys * 2, xs * 2] = lab[ys, xs]
    view = TrainView(_Pairs(256, 512, labels=big), (256, 512), scale=(1.0, 1.0))
    out = view[0]["label"].numpy()
    assert out.shape == (256, 512) and int((out != 255).sum()) == n
    assert np.array_equal(out[lab != 255], lab[lab != 255])


def test_crop_smaller_image_is_padded_with_ignore():
    from core.data.transforms import TrainView

    np.random.seed(0)
    s = TrainView(_Pairs(40, 60), (64, 128), scale=(1.0, 1.0))[0]
    assert s["image"].shape == (3, 64, 128)
    lab = s["label"].numpy()
    assert (lab[40:] == 255).all() and (lab[:, 60:] == 255).all() and (lab[:40, :60] != 255).all()


@pytest.mark.parametrize("spec", ["source_only", "dacs"])
def test_fit_resumed_from_a_mid_run_checkpoint_ends_with_the_uninterrupted_weights(tmp_path, spec):
    """Every draw of an iteration is seeded from (seed, rank, iteration) and batch k is a function of
    (seed, k): a fit paused at a checkpoint and resumed in a new process-like setting (new model,
    new method objects) ends bit for bit where the uninterrupted fit ends (DACS: teacher state too)."""
    from core.methods import build_methods

    ds = ToyDataset(n=5, size=(32, 64))
    tgt = ToyDataset(n=3, size=(32, 64), seed=1)
    cfg = TrainConfig(iterations=6, crop_size=(32, 64), checkpoint_every=3, lr=1e-2, seed=3)

    def run(ck, stop_at=None):
        torch.manual_seed(0)
        model = Segmentor(19, output_stride=16, weights=None)
        fit(model, cfg, ds, target=tgt, methods=build_methods(spec), checkpoint=ck, progress=False, stop_at=stop_at)
        return model

    whole = run(tmp_path / "whole.pt")
    run(tmp_path / "paused.pt", stop_at=3)
    assert load_checkpoint(tmp_path / "paused.pt")["iteration"] == 3
    resumed = run(tmp_path / "paused.pt")
    a, b = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    moved = run(tmp_path / "other.pt", stop_at=1)          # and the check can fail: 1 of 6 iterations differs
    assert not all(torch.equal(a[k], v) for k, v in moved.state_dict().items())


def test_loader_workers_and_a_resumed_start_build_the_same_batches():
    from core.data.transforms import TrainView
    from core.train import batches

    view = TrainView(ToyDataset(n=5, size=(32, 64)), (24, 48), flip=True, scale=(0.75, 1.5))
    inline = batches(view, 2, seed=7)
    ref = [next(inline) for _ in range(6)]
    pooled = batches(view, 2, seed=7, workers=2)
    got = [next(pooled) for _ in range(6)]
    resumed = batches(view, 2, seed=7, start=3)
    later = [next(resumed) for _ in range(3)]
    for a, b in zip(ref, got):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"]) and a["index"] == b["index"]
        assert torch.equal(a["box"], b["box"])
    for a, b in zip(ref[3:], later):
        assert torch.equal(a["image"], b["image"]) and a["index"] == b["index"]
    # active labels travel to spawned workers as SparseLabels: same masks back
    from core.data.transforms import SparseLabels

    masks = {0: np.full((4, 5), 255, np.uint8), 1: np.arange(20, dtype=np.uint8).reshape(4, 5)}
    masks[0][1, 2] = 7
    back = pickle.loads(pickle.dumps(SparseLabels(masks)))
    assert all(np.array_equal(back(i), m) for i, m in masks.items())
    # augmentation differs between batches (the per-sample seeds are not all equal)
    assert not all(torch.equal(ref[0]["box"], r["box"]) for r in ref[1:])
