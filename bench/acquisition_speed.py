"""Speed of core.acquisition: RIPU score + greedy selection, milliseconds per image.

    python bench/acquisition_speed.py [--repeat 3] [--sizes 512x1024,1024x2048]

Prints a markdown table. Maps are 19-class float32 softmaxes from a fixed seed, two kinds:
``iid``    Dirichlet(0.3) per pixel, independent: every window is impure (worst case);
``smooth`` softmax of random stride-8 logits upsampled bilinearly (like a real network output,
           which the official code upsamples to label resolution before scoring).
RA: r = 1, picks = the per-round count of 2.2 % over 5 rounds. PA: r = 32, picks = the official
per-round count (40 px defined at 1280x640, i.e. 21 per round at 1024x2048).
Reported time = best of ``--repeat`` runs (the machine may be shared: the table also gives the
process CPU time, summed over threads, and the load average).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.acquisition import queries_per_round, ripu_score, select_queries  # noqa: E402

C = 19
TARGETS = {("region", (1024, 2048)): 500.0, ("pixel", (512, 1024)): 1000.0}


def iid_prob(rng, H, W):
    g = rng.standard_gamma(0.3, size=(C, H, W), dtype=np.float32)
    g += np.float32(1e-12)
    g /= g.sum(0, keepdims=True)
    return g


def smooth_prob(rng, H, W, stride=8):
    from scipy.ndimage import zoom

    h, w = -(-H // stride), -(-W // stride)
    z = (rng.standard_normal((C, h, w)) * 3.0).astype(np.float32)
    z = zoom(z, (1, H / h, W / w), order=1, prefilter=False)[:, :H, :W]
    z -= z.max(0, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(0, keepdims=True)
    return np.ascontiguousarray(z, dtype=np.float32)


def best_of(fn, repeat):
    """(best wall ms, best process-CPU ms, result). CPU time sums all threads."""
    best, best_cpu, out = float("inf"), float("inf"), None
    for _ in range(repeat):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, time.perf_counter() - t)
        best_cpu = min(best_cpu, time.process_time() - c)
    return best * 1000.0, best_cpu * 1000.0, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="512x1024,1024x2048")
    ap.add_argument("--kinds", default="iid,smooth")
    args = ap.parse_args(argv)
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    kinds = args.kinds.split(",")

    print(f"### core.acquisition speed: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPU cores, numpy {np.__version__}, Python {platform.python_version()}")
    print()
    try:
        load = "load average %.2f at start" % os.getloadavg()[0]
    except OSError:
        load = "load average unknown"
    print(f"best of {args.repeat} runs; {load}; CPU ms = process CPU time over all threads")
    print()
    print("| size | map | mode | r | picks | score ms | select ms | total ms | total CPU ms | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for H, W in sizes:
        for kind in kinds:
            rng = np.random.default_rng(0)
            prob = iid_prob(rng, H, W) if kind == "iid" else smooth_prob(rng, H, W)
            for mode, r, budget, ref in (("region", 1, "2.2%", None), ("pixel", 32, "40px", (640, 1280))):
                n = queries_per_round(budget, H, W, 5, r, pixel_ref_hw=ref)[0]
                t_score, c_score, out = best_of(lambda: ripu_score(prob, mode, r), args.repeat)
                t_sel, c_sel, (picks, _) = best_of(lambda: select_queries(out["score"], None, n, mode, r),
                                                   args.repeat)
                target = TARGETS.get((mode, (H, W)))
                tgt = ""
                if target is not None:
                    tgt = f"< {target:.0f} ms " + ("ok" if t_score + t_sel < target else "MISSED")
                name = "RA" if mode == "region" else "PA"
                print(f"| {H}x{W} | {kind} | {name} | {r} | {len(picks)} | {t_score:.0f} | {t_sel:.0f} | "
                      f"{t_score + t_sel:.0f} | {c_score + c_sel:.0f} | {tgt} |", flush=True)
            del prob


if __name__ == "__main__":
    main()
