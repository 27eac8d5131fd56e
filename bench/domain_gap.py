"""The domain gap of the embedded benchmark, measured with the default model on target val:
source-only vs. the same model trained on target-train labels. Prints a markdown table.

    python bench/domain_gap.py [--iterations N] [--image-size HxW] [--workdir DIR]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import RunConfig, parse_size  # noqa: E402
from app.session import build_model, load_data, train_config  # noqa: E402
from bench.common import machine  # noqa: E402
from core.evaluate import evaluate, iou_per_class  # noqa: E402
from core.train import fit  # noqa: E402


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--image-size", default="x".join(map(str, d.image_size)))
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--output-stride", type=int, default=d.output_stride)
    p.add_argument("--workdir", default="/tmp/domain_gap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=("source-only", "target-supervised"), default=None,
                   help="train one of the two (e.g. two processes with OMP_NUM_THREADS=1 side by side); "
                        "checkpoints in --workdir make reruns resume, and the table uses whatever is finished")
    a = p.parse_args()
    cfg = RunConfig(iterations=a.iterations, image_size=parse_size(a.image_size), lr=a.lr, seed=a.seed,
                    output_stride=a.output_stride, workdir=a.workdir)
    source, target, val = load_data(cfg)
    rows = {}
    for name, train_set in (("source-only", source), ("target-supervised", target)):
        ck = Path(a.workdir) / f"{name}_{a.iterations}_{a.image_size}_os{a.output_stride}_lr{a.lr}.pt"
        if a.only not in (None, name) and not ck.exists():
            continue
        model = build_model(cfg, val.label_space.num_classes)
        t0 = time.time()
        if a.only in (None, name):
            fit(model, train_config(cfg, cfg.iterations), train_set, desc=name, checkpoint=ck)
        else:
            from core.train import load_checkpoint
            state = load_checkpoint(ck)
            if state["iteration"] < cfg.iterations:
                continue
            model.load_state_dict(state["model"])
        res = evaluate(model, val, cfg.image_size, desc=f"eval {name}")
        rows[name] = (res, time.time() - t0)
        print(f"{name}: target-val mIoU {res['miou']:.1f}", flush=True)
    if len(rows) < 2:
        return
    names = val.label_space.names
    print(f"\n{machine()}\n\n{cfg.iterations} iterations, input {a.image_size}, output stride {a.output_stride}, "
          f"lr {a.lr}\n")
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
