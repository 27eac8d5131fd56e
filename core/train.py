"""The one training loop. Read top to bottom: setup, then `for it in range(...)`: batches, losses,
step, hooks, checkpoint. Source CE + (optional) target CE on active labels + (optional) mixed-image
CE on pseudo-labels + method losses.

Runs on CPU by default, CUDA (+ autocast) when asked or available, and under ``torchrun`` with
DistributedDataParallel (gloo on CPU, nccl on GPU): each rank draws its own batches, gradients are
averaged, rank 0 writes checkpoints and shows the progress bar.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

from core.data.transforms import TrainView
from core.fileio import atomic_write, plain_dict
from core.progress import bar as progress_bar
from core.models.segmentor import upsample
from core.methods.services import make_pseudo_labels


@dataclass
class TrainConfig:
    """Everything ``fit`` needs besides the model and data, as plain values (the run's values come
    from app.config.RunConfig via app.session.train_config). Units: iterations are optimizer steps,
    sizes are (H, W) pixels of the stored images, lr is per step (SGD, poly decay)."""
    iterations: int = 1200
    batch_size: int = 2              # images per domain per rank
    lr: float = 2.5e-4               # backbone; the head gets 10x (the papers' values)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    poly_power: float = 0.9
    warmup: int = 0                  # linear lr warm-up iterations before the poly decay
    crop_size: tuple[int, int] | None = (128, 256)   # (H, W) random crop at the stored resolution; None: whole image
    scale: tuple[float, float] = (0.75, 1.5)   # random scale range applied before the crop
    infer_window: tuple[int, int] | None = (512, 1024)   # inference: sliding window above this size (H, W)
    flip: bool = True
    seed: int = 0
    device: str = "auto"             # auto | cpu | cuda | cuda:N
    amp: bool = True                 # autocast on CUDA only (bf16 on CPU is far slower here)
    checkpoint_every: int = 200
    grad_clip: float | None = None   # clip the gradient norm (None: off, as in the papers)
    workers: int = 0                 # DataLoader worker processes per domain (0: batches built in the loop)


@dataclass
class Context:
    """What method hooks see: the model (unwrapped), config, device, current iteration."""
    model: nn.Module
    cfg: TrainConfig
    device: torch.device
    iteration: int = 0
    services: dict = field(default_factory=dict)   # shared services (EMA teacher, class stats)
    source: object = None                           # the datasets (class statistics, prior estimates)
    target: object = None
    grad_scale: float = 1.0                         # the loss scale of this iteration's backward (fp16 GradScaler)

    @staticmethod
    def upsample(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return upsample(logits, like.shape[-2:])


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda asked, but no CUDA GPU is available")
    dev = torch.device(name)
    if dev.type == "cuda" and dist.is_available() and dist.is_initialized():
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return dev


def init_distributed() -> tuple[int, int]:
    """Join the torchrun process group if launched by torchrun; returns (rank, world_size)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world > 1 and not dist.is_initialized():
        if torch.cuda.is_available():   # one GPU per rank; CPU tensors (step messages, counts) over gloo
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
            dist.init_process_group("cpu:gloo,cuda:nccl")
        else:
            dist.init_process_group("gloo")
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def iteration_seed(seed: int, rank: int, it: int) -> int:
    """The seed of iteration ``it`` on ``rank``: every random draw of an iteration (batch augmentation,
    ClassMix, jitter) is seeded from (seed, rank, it) alone, so a run resumed from a checkpoint at any
    iteration continues bit for bit on CPU as if it had never stopped."""
    return int(np.random.SeedSequence([seed, rank, it]).generate_state(1)[0])


class BatchStream(torch.utils.data.Dataset):
    """Batch number k -> the collated batch k (a map-style dataset over batch numbers, so a DataLoader's
    workers build batches ahead). Batch k holds positions k*B .. k*B+B-1 of the sequence of epochs,
    epoch e being ``default_rng([*seed, e]).permutation(len(view))``, and item j of it is augmented with
    ``default_rng([*seed, 2**31 - 1, k, j])``: a function of (seed, k) only, in whatever process it is built, so
    a resumed run, and a run with any number of workers, reads the same samples. ``seed``: an int or a
    tuple of ints (fit: (run seed, rank, domain), so source and target draw independently)."""

    def __init__(self, view: TrainView, batch_size: int, seed):
        self.view, self.batch_size = view, batch_size
        self.seed = list(seed) if isinstance(seed, (tuple, list)) else [int(seed)]
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self):
        return 2**62

    def _epoch(self, e: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != e:
            self._perm = (e, np.random.default_rng([*self.seed, e]).permutation(len(self.view)))
        return self._perm[1]

    def __getitem__(self, k: int) -> dict:
        n = len(self.view)
        items = []
        for j, p in enumerate(range(k * self.batch_size, (k + 1) * self.batch_size)):
            rng = np.random.default_rng([*self.seed, 2**31 - 1, k, j])   # apart from the epochs' streams
            items.append(self.view.sample(int(self._epoch(p // n)[p % n]), rng))
        return {key: (torch.stack([x[key] for x in items]) if torch.is_tensor(items[0][key])
                      else [x[key] for x in items]) for key in items[0]}


def _worker_init(_):
    import cv2

    cv2.setNumThreads(1)        # one OpenCV and one torch thread per loader worker
    torch.set_num_threads(1)


def batches(view: TrainView, batch_size: int, seed, start: int = 0, workers: int = 0, pin: bool = False):
    """Endless batches from batch number ``start`` on (``BatchStream``), built by ``workers`` DataLoader
    worker processes ahead of training (0: in this process), in pinned memory with ``pin`` (CUDA).
    With workers the view is pickled to each (spawned) worker: its dataset and label callable must pickle
    (core.data.transforms.SparseLabels for active labels)."""
    import itertools

    # workers are spawned, never forked: a child forked from a process whose OpenMP/OpenCV threads hold a
    # lock deadlocks (seen in the test suite); so the view (dataset, label callable) must pickle
    loader = torch.utils.data.DataLoader(BatchStream(view, batch_size, seed), batch_size=None,
                                         sampler=itertools.count(start), num_workers=workers, pin_memory=pin,
                                         worker_init_fn=_worker_init if workers else None,
                                         prefetch_factor=2 if workers else None,
                                         multiprocessing_context="spawn" if workers else None)
    return iter(loader)


def poly_lr(optimizer: torch.optim.Optimizer, it: int, total: int, power: float, warmup: int = 0) -> None:
    """The papers' poly decay, after an optional linear warm-up of `warmup` iterations."""
    f = (1 - it / max(total, 1)) ** power
    if it < warmup:
        f *= (it + 1) / warmup
    for g in optimizer.param_groups:
        g["lr"] = g["base_lr"] * f


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic and fsync'ed (core.fileio.atomic_write): a crash leaves the previous file intact."""
    atomic_write(path, lambda f: torch.save(state, f))


class CheckpointError(ValueError):
    """A checkpoint that is missing or cannot be read (truncated, empty, not a checkpoint): one line
    naming the file."""


def load_checkpoint(path: Path) -> dict:
    """The checkpoint dict at ``path`` (CPU tensors). Raises CheckpointError naming the file when it is
    missing or unreadable (truncated by a crash, empty, another file)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} is missing")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - EOFError, RuntimeError (zip), UnpicklingError...
        raise CheckpointError(f"checkpoint {path} is damaged ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:80] if str(e) else 'unreadable'})") from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{path} is not a checkpoint of this studio (no 'model' state)")
    return state


def fit(model: nn.Module, cfg: TrainConfig, source, target=None, target_labels=None, methods=(),
        checkpoint: str | Path | None = None, progress: bool = True, desc: str = "train",
        stop_at: int | None = None) -> dict:
    """Train ``model`` in place for ``cfg.iterations``; resumes from ``checkpoint`` if it exists.

    ``source``: a labeled dataset (core/data/base.py contract). ``target``: optional unlabeled dataset;
    ``target_labels(i, sample) -> uint8 (H,W)`` gives its active labels (255 = unlabeled), which are
    supervised with CE; without it the target is unlabeled (its dataset labels are never used).
    ``methods``: core.methods.Method objects whose hooks add losses (core/methods/base.py).
    Post-hoc stages are not run here: call ``run_stages`` after fit. ``stop_at``: pause after
    that many iterations (checkpointed; a later call with the same ``checkpoint`` continues the schedule).
    Returns {"iterations", "seconds" (wall time of this call), "losses": last smoothed loss terms}.
    Raises what the data raises (core.data.base.DatasetError for a bad file, unless the dataset skips
    bad files), ValueError from a method's setup, CheckpointError for an unreadable ``checkpoint`` to
    resume from, RuntimeError from torch (out of memory, a checkpoint of another model) and OSError
    (a full disk when saving a checkpoint).
    """
    rank, world = init_distributed()
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed + 1000 * rank)    # method setup (discriminator init) and the first draws
    model.to(device)
    model.train()
    ctx = Context(model=model, cfg=cfg, device=device, source=source, target=target)
    for m in methods:
        m.setup(ctx)

    groups = model.param_groups(cfg.lr)
    for g in groups:
        g["params"] = [p for p in g["params"] if p.requires_grad]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    start = 0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        try:
            state = load_checkpoint(ckpt)
        except CheckpointError as e:
            raise CheckpointError(f"{e}: delete it and run again (with --resume), and this step is retrained "
                                  "from its start") from None
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        for m, ms in zip(methods, state.get("methods", [])):
            m.load_state_dict(ms)
        start = int(state["iteration"])
    net = model
    if world > 1:
        # buffers (BN statistics) are not synchronised before each forward: ranks may make different numbers
        # of forwards per iteration (a target forward only where a rank's crop has active labels, CPSL's
        # CutMix coin), which a per-forward broadcast would deadlock; rank 0's are broadcast at the end
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False)

    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    pin = device.type == "cuda"
    src = batches(TrainView(source, cfg.crop_size, cfg.flip, scale=cfg.scale), cfg.batch_size,
                  (cfg.seed, rank, 0), start, cfg.workers, pin)
    tgt = None
    if target is not None:
        if target_labels is None:   # pure UDA: no active labels (never the target's ground truth)
            target_labels = _no_labels
        tgt = batches(TrainView(target, cfg.crop_size, cfg.flip, labels=target_labels, scale=cfg.scale),
                      cfg.batch_size, (cfg.seed, rank, 1), start, cfg.workers, pin)
    ce = nn.CrossEntropyLoss(ignore_index=255)
    # the student's target forward is skipped on batches without active labels when nothing reads it
    # (source_only, DACS: pseudo-labels come from the teacher, created in setup)
    target_output_read = any(m.uses_target_output for m in methods) or (
        "ema_teacher" not in ctx.services and any(m.needs_pseudo_labels for m in methods))
    smooth: dict[str, float] = {}
    t0 = time.time()
    end = cfg.iterations if stop_at is None else min(stop_at, cfg.iterations)
    bar = progress_bar(range(start, end), desc=desc, total=cfg.iterations, initial=start,
                       disable=not progress or rank != 0, report=rank == 0)
    for it in bar:
        ctx.iteration = it
        seed_everything(iteration_seed(cfg.seed, rank, it))
        poly_lr(opt, it, cfg.iterations, cfg.poly_power, cfg.warmup)
        bs = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(src).items()}
        bt = None
        if tgt is not None:
            bt = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in next(tgt).items()}
        for m in methods:
            bs = m.transform_source(ctx, bs, bt)               # T2S: FDA pseudo-target source images
        with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
            terms: dict[str, torch.Tensor] = {}
            out_s = net(bs["image"])
            logits_s = out_s.logits
            for m in methods:
                logits_s = m.source_logits(ctx, logits_s)      # FADA temperature, CR logit adjustment
            terms["ce_s"] = ce(ctx.upsample(logits_s, bs["label"]).float(), bs["label"])
            for m in methods:
                terms.update(m.source_loss(ctx, bs, out_s))
            out_t = None
            if bt is not None:
                labeled = bool((bt["label"] != 255).any())
                if labeled or target_output_read:
                    out_t = net(bt["image"])
                    logits_t = ctx.upsample(out_t.logits, bt["label"]).float()
                    # active labels: mean CE over labeled pixels; zero (but in the graph) when none
                    terms["ce_t"] = ce(logits_t, bt["label"]) if labeled else logits_t.sum() * 0
                if any(m.needs_pseudo_labels for m in methods):
                    # teacher (if any) or detached student; active labels override pseudo-labels
                    bt["pseudo"] = make_pseudo_labels(ctx, bt, out_t)
                    for m in methods:
                        bt["pseudo"] = m.refine_pseudo_labels(ctx, bt, bt["pseudo"])
                mixed = next((mb for m in methods if (mb := m.mix(ctx, bs, bt)) is not None), None)
                if mixed is not None:   # e.g. ClassMix (DACS): weighted CE on the mixed image
                    logits_m = ctx.upsample(net(mixed["image"]).logits, mixed["label"]).float()
                    ce_m = F.cross_entropy(logits_m, mixed["label"], ignore_index=255, reduction="none")
                    terms["ce_mix"] = (ce_m * mixed["weight"]).mean()
                for m in methods:
                    terms.update(m.target_loss(ctx, bt, out_t))
            loss = sum(terms.values())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if cfg.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        scaler.step(opt)
        ctx.grad_scale = scaler.get_scale() if scaler.is_enabled() else 1.0   # for methods' own parameters
        scaler.update()
        for m in methods:
            for k, v in m.adversary_step(ctx, bs, bt, out_s, out_t).items():
                terms[k] = torch.tensor(v)
        for m in methods:
            m.after_step(ctx)
        for k, v in terms.items():
            fv = float(v.detach()) if torch.is_tensor(v) else float(v)
            smooth[k] = 0.9 * smooth.get(k, fv) + 0.1 * fv
        if rank == 0 and it % 10 == 0:
            bar.set_postfix(smooth)
        done = it + 1
        if ckpt is not None and rank == 0 and (done % cfg.checkpoint_every == 0 or done in (end, cfg.iterations)):
            save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": done,
                                   "methods": [m.state_dict() for m in methods], "config": plain_dict(cfg)})
    bar.close()
    if ckpt is not None and rank == 0 and not ckpt.exists():   # 0 iterations: the checkpoint still exists
        save_checkpoint(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": start,
                               "methods": [m.state_dict() for m in methods], "config": plain_dict(cfg)})
    if world > 1:   # BN running statistics of the head: rank 0's (DDP also broadcasts them at each forward)
        for buf in model.buffers():
            dist.broadcast(buf, 0)
    return {"iterations": cfg.iterations, "seconds": time.time() - t0, "losses": smooth}


def _no_labels(i: int, sample: dict) -> np.ndarray:
    return np.full(np.shape(sample["label"])[:2], 255, np.uint8)


def run_stages(methods, model: nn.Module, source, target, cfg: TrainConfig, target_labels=None,
               progress: bool = False, iterations: int | None = None, checkpoint=None) -> dict[str, dict]:
    """Run the post-hoc stages of ``methods`` (``post_hoc``; e.g. CR, the CRA stage, IA's priors) in
    order after fit; ``{method name: results}``. Each method's ``plan_stage`` measures what it needs
    and returns a StagePlan; its training runs here with ``fit`` (``iterations``: overrides the
    plan's, which overrides ``cfg.iterations``), with the model frozen as the plan says
    (``Segmentor.freezing``) and its own scope restored after."""
    device = resolve_device(cfg.device)
    model.to(device)
    out = {}
    for m in methods:
        if not m.post_hoc:
            continue
        plan = m.plan_stage(model, source, target, cfg, device)
        if isinstance(plan, dict):
            out[m.name] = plan
            continue
        n = iterations or plan.iterations or cfg.iterations
        frozen = model.freezing(plan.freeze) if plan.freeze else contextlib.nullcontext()
        with frozen:
            res = fit(model, replace(cfg, iterations=n), source, target if plan.use_target else None,
                      target_labels if plan.use_target else None, methods=plan.methods, checkpoint=checkpoint,
                      progress=progress, desc=plan.desc)
        out[m.name] = {**plan.result, **res}
    return out
