"""Source-only training speed per head, crop size and output stride (iterations/s, images/s, and
seconds per iteration as a ratio to the default), printed as a markdown table headed by the machine's
description. The same script on a GPU machine reports CUDA speed (``--device cuda``) and the peak GPU
memory of the timed iterations (autocast as in training).

    python bench/train_speed.py [--iterations 30] [--crops 128x256,256x512] [--output-stride 16,8]
                                [--heads deeplabv3plus,deeplabv2]
"""
import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.config import RunConfig, parse_size  # noqa: E402
from app.session import build_model, load_data, train_config  # noqa: E402
from bench.common import machine  # noqa: E402
from core.train import fit, resolve_device  # noqa: E402


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--iterations", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    p.add_argument("--crops", default="128x256,256x512")
    p.add_argument("--output-stride", default="16,8")
    p.add_argument("--heads", default="deeplabv3plus,deeplabv2")
    p.add_argument("--device", default="auto")
    a = p.parse_args()
    cfg = RunConfig(device=a.device)
    source, _, val = load_data(cfg)
    rows = []
    for head in a.heads.split(","):
        for os_ in (int(v) for v in a.output_stride.split(",")):
            for size in (parse_size(s) for s in a.crops.split(",")):
                cfg.crop, cfg.output_stride, cfg.head = size, os_, head
                model = build_model(cfg, val.label_space.num_classes)
                fit(model, train_config(cfg, a.warmup), source, progress=False)
                dev = resolve_device(cfg.device)
                if dev.type == "cuda":
                    import torch

                    torch.cuda.synchronize(dev)
                    torch.cuda.reset_peak_memory_stats(dev)
                t0 = time.time()
                fit(model, train_config(cfg, a.iterations), source, progress=False)
                peak = ""
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                    peak = f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}"
                dt = time.time() - t0
                rows.append((head, f"{size[0]}x{size[1]}", os_, dt / a.iterations, a.iterations * cfg.batch_size / dt,
                             peak))
    base = rows[0][3]
    print(f"\n**{machine()}**; {d.backbone}, batch {d.batch_size}, random scale {d.scale} + crop, "
          f"fwd+bwd+SGD step, {a.iterations} timed iterations\n")
    print("| head | crop | output stride | s/iteration | x first row | images/s | peak GPU MB |\n"
          "|---|---|---:|---:|---:|---:|---:|")
    for head, size, os_, spi, ims, peak in rows:
        print(f"| {head} | {size} | {os_} | {spi:.3f} | {spi / base:.2f} | {ims:.2f} | {peak} |")


if __name__ == "__main__":
    main()
