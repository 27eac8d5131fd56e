"""Source-only training speed of the default model at two image sizes (iterations/s, images/s),
printed as a markdown table headed by the machine's description.

    python bench/train_speed.py [--iterations 30] [--sizes 128x256,256x512] [--output-stride 8]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import RunConfig, parse_size  # noqa: E402
from app.session import build_model, load_data, train_config  # noqa: E402
from bench.common import machine  # noqa: E402
from core.train import fit  # noqa: E402


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--sizes", default="128x256,256x512")
    p.add_argument("--output-stride", default="8,16")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    cfg = RunConfig(device=a.device)
    source, _, val = load_data(cfg)
    rows = []
    for os_ in (int(v) for v in a.output_stride.split(",")):
        for size in (parse_size(s) for s in a.sizes.split(",")):
            cfg.image_size, cfg.output_stride = size, os_
            model = build_model(cfg, val.label_space.num_classes)
            fit(model, train_config(cfg, a.warmup), source, progress=False)
            t0 = time.time()
            fit(model, train_config(cfg, a.iterations), source, progress=False)
            dt = time.time() - t0
            rows.append((f"{size[0]}x{size[1]}", os_, a.iterations / dt, a.iterations * cfg.batch_size / dt))
    print(f"\n**{machine()}**; {d.backbone} + DeepLabV2 head, batch {d.batch_size}, fwd+bwd+SGD step, "
          f"{a.iterations} timed iterations\n")
    print("| input | output stride | iterations/s | images/s |\n|---|---:|---:|---:|")
    for size, os_, its, ims in rows:
        print(f"| {size} | {os_} | {its:.2f} | {ims:.2f} |")


if __name__ == "__main__":
    main()
