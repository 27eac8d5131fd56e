"""The domain gap of the embedded benchmark, measured with the default model on target val:
source-only vs. the same model trained on target-train labels. Prints a markdown table.

Also prints the ceiling that the output resolution puts on any model: the mIoU of a *perfect*
prediction made at the logit resolution (image size / output stride), i.e. the ground truth
area-averaged to that grid and upsampled bilinearly like the model's logits.

    python bench/domain_gap.py [--iterations N] [--target-iterations N] [--head NAME] [--crop HxW]
                               [--lr LR --warmup N --grad-clip X] [--workdir DIR] [--ceiling-only]

Defaults are the run's (RunConfig: the "cpu" recipe); evaluation predicts the full stored images.
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from app.config import RunConfig, parse_size  # noqa: E402
from app.session import build_model, load_data, train_config  # noqa: E402
from bench.common import fit_curve, machine  # noqa: E402
from core.data.synthcity import VERSION as SYNTHCITY_VERSION  # noqa: E402
from core.evaluate import confusion_matrix, evaluate, iou_per_class, mean_iou  # noqa: E402
from core.train import load_checkpoint  # noqa: E402


def resolution_ceiling(val, grid: tuple[int, int], num_classes: int) -> np.ndarray:
    """Confusion matrix of the perfect prediction at ``grid`` (h, w) logits: per-class label
    fractions averaged over each cell, upsampled bilinearly to the label size, argmax."""
    conf = np.zeros((num_classes, num_classes), np.int64)
    for i in range(len(val)):
        lab = torch.from_numpy(val[i]["label"].astype(np.int64))
        onehot = F.one_hot(lab.clamp(max=num_classes - 1), num_classes).permute(2, 0, 1).float()
        onehot[:, lab == 255] = 0
        cells = F.adaptive_avg_pool2d(onehot[None], grid)
        pred = F.interpolate(cells, size=lab.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        conf += confusion_matrix(pred.numpy(), lab.numpy(), num_classes)
    return conf


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=d.iterations, help="source-only iterations")
    p.add_argument("--target-iterations", type=int, default=None, help="target-supervised iterations "
                   "(default: --iterations)")
    p.add_argument("--head", default=d.head)
    p.add_argument("--crop", default="x".join(map(str, d.crop)))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--output-stride", type=int, default=d.output_stride)
    p.add_argument("--warmup", type=int, default=d.warmup, help="linear lr warm-up iterations")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="clip the gradient norm (0: off)")
    p.add_argument("--synth-size", default="x".join(map(str, d.synth_size)))
    p.add_argument("--eval-every", type=int, default=0, help="also evaluate every N iterations (learning curve)")
    p.add_argument("--ceiling-only", action="store_true", help="only the output-resolution ceiling")
    p.add_argument("--workdir", default="/tmp/domain_gap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("source-only", "target-supervised"), default=None,
                   help="train one of the two (e.g. two processes with OMP_NUM_THREADS=1 side by side); "
                        "checkpoints in --workdir make reruns resume, and the table uses whatever is finished")
    a = p.parse_args()
    cfg = RunConfig(iterations=a.iterations, crop=parse_size(a.crop), lr=a.lr, seed=a.seed, head=a.head,
                    output_stride=a.output_stride, workdir=a.workdir, warmup=a.warmup, grad_clip=a.grad_clip or None,
                    synth_size=parse_size(a.synth_size, "--synth-size"))
    window = cfg.infer_window
    source, target, val = load_data(cfg)
    names = val.label_space.names
    C = val.label_space.num_classes
    H, W = cfg.synth_size
    grids = [(H // s, W // s) for s in (16, 8, 4)]   # DeepLabV2 at OS16 / OS8, DeepLabV3+ (stride 4)
    ceil = {g: resolution_ceiling(val, g, C) for g in grids}
    print(f"\nperfect prediction at the logit resolution (target val, {len(val)} images):\n")
    print("| logits | " + " | ".join(names) + " | mIoU |\n|---|" + "---:|" * (len(names) + 1))
    for g, conf in ceil.items():
        print(f"| {g[0]}x{g[1]} | " + " | ".join(f"{100 * v:.0f}" for v in iou_per_class(conf))
              + f" | **{mean_iou(conf):.1f}** |")
    if a.ceiling_only:
        return
    rows = {}
    sched = f"_wu{a.warmup}_clip{a.grad_clip}"
    iters = {"source-only": a.iterations, "target-supervised": a.target_iterations or a.iterations}
    for name, train_set in (("source-only", source), ("target-supervised", target)):
        n = iters[name]
        ck = Path(a.workdir) / (f"{name}_{n}_{a.head}_{a.crop}_os{a.output_stride}_lr{a.lr}{sched}_s{a.seed}"
                                f"_v{SYNTHCITY_VERSION}.pt")   # never reuse another synthcity version's model
        if a.only not in (None, name) and not ck.exists():
            continue
        model = build_model(cfg, val.label_space.num_classes)
        t0 = time.time()
        if a.only in (None, name):
            def report(it):   # learning curve: points of the same schedule
                print(f"{name} @ {it}: {evaluate(model, val, window, progress=False)['miou']:.1f}", flush=True)

            fit_curve(model, train_config(cfg, n), train_set, desc=name, checkpoint=ck, eval_every=a.eval_every,
                      report=report)
        else:
            state = load_checkpoint(ck)
            if state["iteration"] < n:
                continue
            model.load_state_dict(state["model"])
        res = evaluate(model, val, window, desc=f"eval {name}")
        rows[name] = (res, time.time() - t0)
        print(f"{name}: target-val mIoU {res['miou']:.1f}", flush=True)
    if len(rows) < 2:
        return
    print(f"\n{machine()}\n\n{iters} iterations, head {a.head}, crops {a.crop}, output stride {a.output_stride}, "
          f"lr {a.lr}, warm-up {a.warmup}, grad clip {a.grad_clip}\n")
    print("| model | target-val mIoU | seconds |\n|---|---:|---:|")
    for k, (res, s) in rows.items():
        print(f"| {k} | {res['miou']:.1f} | {s:.0f} |")
    ratio = rows["source-only"][0]["miou"] / rows["target-supervised"][0]["miou"]
    print(f"\nsource-only / target-supervised = {ratio:.2f} (the benchmark asks <= 0.60, target >= 60 mIoU)\n")
    print("| class | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows))
    ious = {k: iou_per_class(r[0]["confusion"]) for k, r in rows.items()}
    for i, n in enumerate(names):
        print(f"| {n} | " + " | ".join(f"{100 * ious[k][i]:.1f}" for k in rows) + " |")


if __name__ == "__main__":
    main()
