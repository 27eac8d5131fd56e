"""UDA methods on the embedded benchmark (synthcity): target-val mIoU and seconds per iteration.

    python bench/methods.py [--iters 1000] [--warmup-iters 2000] [--crop 128x256] \
        [--methods "source_only,minent,advent,fada,cra,dacs,ia,cr,fada>cra"] [--set minent.lambda_ent=0.1]
        [--init CKPT] [--lr 2.5e-3 --lr-warmup 50 --grad-clip 5] [--columns uda,labels] [--eval-every N] \
        [--save-models DIR]

One shared source-only warm-up checkpoint (``--warmup-iters``, reused when it exists), then every
method spec trains ``--iters`` more iterations from it with *no target labels* (pure UDA), runs its
post-hoc stages (``--stage-iters``: CR, the CRA stage; IA's prior estimate) and is evaluated on the
target val split (with the methods' logit adjustment, i.e. IA). ``source_only`` gets the same
``--iters`` extra source iterations, so every row has seen the same number of source batches.
Prints a markdown table: mIoU, the difference to source_only, seconds per training iteration
(the loop only; stages are timed separately; with ``--columns labels`` alone, of the labeled runs) and that
time relative to source_only. Specs with the same online part (``fada``, ``fada>cra``, ``fada>sd``)
train it once per process and share its s/it; each runs its own stages on a copy.

Defaults are the run's ("cpu" recipe of app/config.py: DeepLabV3+ head, random scale + 128x256 crops of
the 256x512 synthcity set, lr 2.5e-3 with warm-up and clip, evaluation on the full stored images).
The papers' loss weights are kept (``--set`` overrides them).

The column "with RIPU 2.2% oracle labels" trains every row again with active labels: the warm-up
model scores the target-train pool once with RIPU (region mode, 17x17 regions), the whole 2.2% budget
is picked in one round and answered from ground truth (``ripu_oracle_labels``). ``--columns uda``
skips it, ``--columns labels`` runs only it.

A spec with ``hrda`` (e.g. ``hrda+dacs``) trains the HRDA wrapper (core/models/hrda.py) from the plain
warm-up (its attention head starts fresh) and adds a table of the mean scale attention per class on
target val (``attention_by_class``: small classes such as pole, light, sign, person vs road, sky,
building; the uda column's model, else the labels column's).
"""
from __future__ import annotations

import argparse
import ast
import copy
import hashlib
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.data.synthcity import VERSION as SYNTHCITY_VERSION, SynthCity, ensure_synthcity  # noqa: E402
import numpy as np  # noqa: E402

from app.config import RunConfig  # noqa: E402
from app.session import region_radius, score_and_pick  # noqa: E402

from core.acquisition import queries_per_round  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from bench.common import fit_curve  # noqa: E402
from core.methods import build_methods, compose_adjust  # noqa: E402
from core.methods.base import wrap_model  # noqa: E402
from core.models.hrda import attention_by_class  # noqa: E402
from core.models import Segmentor  # noqa: E402
from core.train import (TrainConfig, fit, load_checkpoint, resolve_device, run_stages,  # noqa: E402
                        save_checkpoint)

DEFAULT_METHODS = "source_only,minent,advent,fada,cra,dacs,ia,cr,fada>cra"
# HRDA's scale attention is reported on small classes (detail) vs large ones (context)
SMALL = ["pole", "traffic light", "traffic sign", "person", "rider", "bicycle"]
LARGE = ["road", "sky", "building"]


def size_arg(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def parse_sets(items: list[str]) -> dict[str, dict]:
    """['minent.lambda_ent=0.1', ...] -> {'minent': {'lambda_ent': 0.1}}."""
    out: dict[str, dict] = {}
    for it in items:
        key, _, val = it.partition("=")
        name, _, arg = key.partition(".")
        if not (name and arg and val):
            raise SystemExit(f"--set expects METHOD.ARG=VALUE, got {it!r}")
        try:
            v = ast.literal_eval(val)
        except (ValueError, SyntaxError):
            v = val
        out.setdefault(name, {})[arg] = v
    return out


class Bench:
    """Data, model factory and configs shared by every row."""

    def __init__(self, args):
        self.args = args
        root = ensure_synthcity(args.cache_dir, seed=args.seed, size=args.data_size,
                                counts={"source": args.counts[0], "target_train": args.counts[1],
                                        "target_val": args.counts[2]}, workers=2, progress=args.progress)
        self.source = SynthCity(root, "source", "train")
        self.target = SynthCity(root, "target", "train")
        self.val = SynthCity(root, "target", "val")
        self.options = parse_sets(args.set)
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.fitted = {}   # (online spec, with labels) -> (model state after fit, fit's results): see run_method

    def model(self) -> Segmentor:
        torch.manual_seed(self.args.train_seed)
        return Segmentor(19, output_stride=self.args.output_stride, head=self.args.head,
                         weights=None if self.args.weights == "none" else self.args.weights)

    def cfg(self, iterations: int) -> TrainConfig:
        a = self.args
        return TrainConfig(iterations=iterations, batch_size=a.batch_size, lr=a.lr, crop_size=a.crop,
                           seed=a.train_seed, device=a.device, checkpoint_every=10 ** 9, warmup=a.lr_warmup,
                           grad_clip=a.grad_clip)

    def evaluate(self, model, methods=()) -> dict:
        return evaluate(model, self.val, RunConfig().infer_window, device=resolve_device(self.args.device),
                        adjust=compose_adjust(methods), progress=False)


def warmup(bench: Bench) -> Path:
    """The shared source-only warm-up checkpoint (trained once per configuration, then reused)."""
    a = bench.args
    if a.init:
        return Path(a.init)
    key = json.dumps([a.seed, a.train_seed, a.data_size, a.counts, a.crop, a.head, a.batch_size, a.lr, a.lr_warmup,
                      a.grad_clip,
                      a.warmup_iters, a.weights, a.output_stride,
                      SYNTHCITY_VERSION])   # a warm-up trained on another synthcity version is never reused
    ck = bench.workdir / f"warmup-{hashlib.sha1(key.encode()).hexdigest()[:10]}.pt"
    if not (ck.exists() and load_checkpoint(ck)["iteration"] >= a.warmup_iters):
        model = bench.model()
        cfg = bench.cfg(a.warmup_iters)
        cfg.checkpoint_every = 100
        out = fit(model, cfg, bench.source, checkpoint=ck, progress=a.progress, desc="warm-up")
        print(f"warm-up: {a.warmup_iters} iterations in {out['seconds']:.0f} s", file=sys.stderr)
    return ck


def save_model(bench: Bench, model, method_spec: str, target_labels=None, at: int | None = None) -> Path:
    """``--save-models DIR``: DIR/<spec>-<uda|labels>-<iters>it-s<seed>.pt, or ``...@<at>.pt`` for the
    model at iteration ``at`` of a learning curve."""
    a = bench.args
    tag = "labels" if target_labels is not None else "uda"
    Path(a.save_models).mkdir(parents=True, exist_ok=True)
    path = Path(a.save_models) / (f"{method_spec.replace('>', '_')}-{tag}-{a.iters}it-s{a.train_seed}"
                                  + (f"@{at}" if at is not None else "") + ".pt")
    save_checkpoint(path, {"model": model.state_dict(), "iteration": a.iters if at is None else at})
    return path


def fit_with_curve(bench: Bench, model, methods, method_spec: str, target_labels=None) -> dict:
    """``fit`` for ``--iters``; with ``--eval-every N`` a learning curve of the run (``bench.common.fit_curve``:
    one schedule paused every N iterations, a temporary checkpoint in the workdir) whose target-val mIoU
    and per-class IoU at each pause go to stderr."""
    a = bench.args
    ck = bench.workdir / f"curve-{os.getpid()}-{hashlib.sha1(method_spec.encode()).hexdigest()[:8]}.pt"

    def report(it):
        ev = bench.evaluate(model, methods)
        print(f"{method_spec} @ {it}: mIoU {ev['miou']:.1f} | "
              + " ".join("-" if v != v else f"{100 * v:.0f}" for v in ev["iou"]), file=sys.stderr, flush=True)
        if a.save_models:   # each point of the curve too, to see where a run starts to go wrong
            save_model(bench, model, method_spec, target_labels, at=it)

    try:
        return fit_curve(model, bench.cfg(a.iters), bench.source, bench.target, target_labels, methods=methods,
                         checkpoint=ck if 0 < a.eval_every < a.iters else None, eval_every=a.eval_every, report=report,
                         progress=a.progress, desc=method_spec)
    finally:
        ck.unlink(missing_ok=True)


def run_method(method_spec: str, warm_ckpt: Path, target_labels=None, *, bench: Bench) -> dict:
    """Train ``method_spec`` for ``--iters`` from the warm-up checkpoint, run its stages, evaluate.

    ``target_labels``: None for pure UDA, or ``(i, sample) -> uint8 (H,W)`` active labels (255 =
    unlabeled) for the "with RIPU 2.2% oracle labels" column. Returns {"miou", "iou",
    "sec_per_it", "stage_seconds", "losses", and with hrda "attention" (``attention_by_class``)}."""
    a = bench.args
    methods = build_methods(method_spec, bench.options)
    model = wrap_model(bench.model(), methods)    # hrda: the wrapper (the plain warm-up loads into its base)
    # Specs with the same online part ('fada', 'fada>cra', 'fada>sd') train it once per process: a
    # StageOnly method has no hooks during fit, so the fit is the same; its stage runs on a copy.
    key = (method_spec.split(">")[0].strip(), target_labels is not None)
    if key in bench.fitted:
        state, out = bench.fitted[key]
        model.load_state_dict(state)
    else:
        model.load_state_dict(load_checkpoint(warm_ckpt)["model"])
        out = fit_with_curve(bench, model, methods, method_spec, target_labels)
        if sum(s.split(">")[0].strip() == key[0] for s in getattr(a, "specs", [])) > 1:
            bench.fitted[key] = (copy.deepcopy(model.state_dict()), out)
    t = time.time()
    run_stages(methods, model, bench.source, bench.target, bench.cfg(a.stage_iters), target_labels=target_labels,
               progress=a.progress, iterations=a.stage_iters)
    stage_s = time.time() - t
    if a.save_models:   # the run's final model, e.g. to inspect its confusion matrix later
        save_model(bench, model, method_spec, target_labels)
    ev = bench.evaluate(model, methods)
    att = {}
    if any(m.name == "hrda" for m in methods):
        att = attention_by_class(model, bench.val, SMALL + LARGE, n_images=a.attention_images,
                                 device=resolve_device(a.device))
    return {"miou": ev["miou"], "iou": ev["iou"], "sec_per_it": out["seconds"] / max(a.iters, 1),
            "stage_seconds": stage_s, "losses": out["losses"], "attention": att}


def ripu_oracle_labels(bench: Bench, warm_ckpt: Path, budget: str = "2.2%"):
    """RIPU-selected oracle labels for the "with RIPU 2.2% oracle labels" column: the warm-up model
    scores every target-train image once (region mode, the loop's default radius), ``select_queries``
    picks the whole budget in one round, and the picked regions are answered from ground truth.
    Returns ``target_labels(i, sample) -> uint8 (H,W)`` (255 outside the regions) and the % labeled."""
    a = bench.args
    model = bench.model()
    model.load_state_dict(load_checkpoint(warm_ckpt)["model"])
    model.eval()
    device = resolve_device(a.device)
    model.to(device)
    radius = region_radius(RunConfig(), "region")   # the loop's default (17x17 regions)
    masks, labeled, total = {}, 0, 0
    for i in range(len(bench.target)):
        s = bench.target[i]
        gt = s["label"]
        H, W = gt.shape
        n = queries_per_round(budget, H, W, 1, radius)[0]
        picks = score_and_pick(model, s["image"], np.zeros((H, W), bool), "square", "ripu", radius, n=n,
                               window=RunConfig().infer_window, device=device)[1]
        newly = np.zeros((H, W), bool)
        for p in picks:
            newly[p["y0"]:p["y1"], p["x0"]:p["x1"]] = True
        masks[i] = np.where(newly, gt, 255).astype(np.uint8)
        labeled += int(newly.sum())
        total += gt.size
    return (lambda i, sample: masks[i]), 100.0 * labeled / total


def main(argv=None) -> None:
    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method specs (default: %(default)s)")
    p.add_argument("--iters", type=int, default=1000, help="adaptation iterations per method")
    p.add_argument("--warmup-iters", type=int, default=d.iterations, help="source-only warm-up iterations")
    p.add_argument("--eval-every", type=int, default=0,
                   help="also evaluate every N iterations of each run (a learning curve on stderr; "
                   "0: only at the end)")
    p.add_argument("--save-models", default=None, metavar="DIR",
                   help="save each run's final model (after its stages) as "
                   "DIR/<spec>-<uda|labels>-<iters>it-s<seed>.pt (with --eval-every also ...@<it>.pt at each point)")
    p.add_argument("--stage-iters", type=int, default=200, help="iterations of post-hoc training stages (CR, CRA)")
    p.add_argument("--crop", type=size_arg, default=d.crop, help="training crop HxW (after random scale)")
    p.add_argument("--head", default=d.head)
    p.add_argument("--data-size", type=size_arg, default=d.synth_size, help="synthcity image size HxW")
    p.add_argument("--counts", type=lambda s: tuple(int(v) for v in s.split(",")), default=d.synth_counts,
                   help="synthcity source,target_train,target_val image counts")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr, help="SGD lr (head 10x)")
    p.add_argument("--output-stride", type=int, default=d.output_stride)
    p.add_argument("--lr-warmup", type=int, default=d.warmup, help="linear lr warm-up iterations of each run")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the gradient norm")
    p.add_argument("--init", default=None, help="an existing source-only checkpoint of the same model "
                   "(e.g. from bench/domain_gap.py) instead of the warm-up")
    p.add_argument("--weights", default="imagenet", help="imagenet | none | PATH")
    p.add_argument("--set", action="append", default=[], metavar="METHOD.ARG=VALUE",
                   help="method constructor option, e.g. minent.lambda_ent=0.1 (repeatable)")
    p.add_argument("--seed", type=int, default=0, help="benchmark (data) seed")
    p.add_argument("--train-seed", type=int, default=None, help="training seed (default: --seed)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (the machine may be shared)")
    p.add_argument("--cache-dir", default=os.environ.get("SEGSTUDIO_CACHE", str(Path.home() / ".cache" / "segstudio")))
    p.add_argument("--workdir", default=str(Path.home() / ".cache" / "segstudio" / "bench-methods"),
                   help="where the warm-up checkpoint is kept")
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.add_argument("--attention-images", type=int, default=50,
                   help="target-val images for HRDA's mean scale attention per class (rows with hrda)")
    p.add_argument("--columns", default="uda,labels",
                   help="uda (no target labels), labels (with RIPU 2.2%% oracle labels), or both (default)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.train_seed is None:
        args.train_seed = args.seed
    columns = set(args.columns.split(","))
    if not columns or columns - {"uda", "labels"}:
        raise SystemExit(f"--columns expects uda, labels or uda,labels; got {args.columns!r}")
    specs = args.specs = [s.strip() for s in args.methods.split(",") if s.strip()]
    for s in specs:   # fail fast on a bad spec, before any training
        build_methods(s, parse_sets(args.set))

    bench = Bench(args)
    t0 = time.time()
    warm = warmup(bench)
    wm = bench.model()
    wm.load_state_dict(load_checkpoint(warm)["model"])
    warm_miou = bench.evaluate(wm)["miou"]
    oracle, oracle_pct = ripu_oracle_labels(bench, warm) if "labels" in columns else (None, 0.0)
    rows = {}
    for s in specs:
        rows[s] = run_method(s, warm, bench=bench) if "uda" in columns else \
            {"miou": float("nan"), "sec_per_it": float("nan"), "stage_seconds": float("nan")}
        if oracle is not None:
            with_labels = run_method(s, warm, oracle, bench=bench)
            rows[s]["ripu"] = with_labels["miou"]
            if "uda" not in columns:   # the s/it columns then time the labeled run
                rows[s]["sec_per_it"] = with_labels["sec_per_it"]
            rows[s]["attention"] = rows[s].get("attention") or with_labels["attention"]
        print(f"{s}: mIoU {rows[s]['miou']:.1f} / with labels {rows[s].get('ripu', float('nan')):.1f}, "
              f"{rows[s]['sec_per_it']:.2f} s/it", file=sys.stderr, flush=True)

    base = rows.get("source_only")
    print(f"\n## UDA methods on synthcity (target val, {len(bench.val)} images)\n")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s); "
          f"{args.head}, crops {args.crop[0]}x{args.crop[1]} of the {args.data_size[0]}x"
          f"{args.data_size[1]} data (evaluated on full images), batch {args.batch_size}+{args.batch_size}, lr {args.lr}, warm-up "
          + (f"from {args.init}" if args.init else f"{args.warmup_iters} it (source only)")
          + f", then {args.iters} it per method (lr warm-up {args.lr_warmup}, grad clip {args.grad_clip}), "
          f"stages {args.stage_iters} it"
          + (f"; options {bench.options}" if bench.options else "")
          + (f"; RIPU column: {oracle_pct:.2f}% of target-train pixels (17x17 regions picked once by the "
             "warm-up model, answered from ground truth)" if oracle is not None else "") + ".\n")
    print("| method | target-val mIoU | vs source_only | s/it | x source_only | stage s | "
          "with RIPU 2.2% oracle labels |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| warm-up checkpoint | {warm_miou:.1f} | | | | | |")
    def num(v, fmt):   # '-' for a column that was not run
        return "-" if v != v else format(v, fmt)

    for s, r in rows.items():
        d = "" if base is None else num(r["miou"] - base["miou"], "+.1f")
        rel = "" if base is None else num(r["sec_per_it"] / base["sec_per_it"], ".2f")
        print(f"| {s} | {num(r['miou'], '.1f')} | {d} | {num(r['sec_per_it'], '.2f')} | {rel} | "
              f"{num(r['stage_seconds'], '.0f')} | {num(r.get('ripu', float('nan')), '.1f')} |")
    iou_rows = {s: r["iou"] for s, r in rows.items() if r.get("iou") is not None}
    if iou_rows:   # per class, to see what a method gains or loses (the uda column)
        names = bench.val.label_space.names
        print("\nPer class (target-val IoU %, the uda column):\n")
        print("| method | " + " | ".join(names) + " |\n|---|" + "---:|" * len(names))
        for s, iou in iou_rows.items():
            print(f"| {s} | " + " | ".join("-" if v != v else f"{100 * v:.0f}" for v in iou) + " |")
    att_rows = {s: r["attention"] for s, r in rows.items() if r.get("attention")}
    if att_rows:
        print(f"\nHRDA scale attention (mean of the ground-truth class's channel over its pixels, eval mode, "
              f"first {args.attention_images} target-val images; 1 = the detail view decides):\n")
        print("| method | small classes (" + ", ".join(SMALL) + ") | large classes (" + ", ".join(LARGE) + ") | "
              + " | ".join(SMALL + LARGE) + " |")
        print("|---|---:|---:|" + "---:|" * len(SMALL + LARGE))
        for s, att in att_rows.items():
            small, large = (np.nanmean([att[n] for n in g]) for g in (SMALL, LARGE))
            print(f"| {s} | {small:.3f} | {large:.3f} | " + " | ".join(f"{att[n]:.3f}" for n in SMALL + LARGE) + " |")
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
