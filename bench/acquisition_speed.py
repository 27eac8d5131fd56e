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

``--pool N`` adds the loop's whole scoring step on a pool of N random images (the default model's
forward + RIPU + greedy selection + the cost model's features per image, ``app.session.score_and_pick``), sharded by image over
1 and 2 ranks (``--ranks``; gloo processes on the CPU, one per GPU with ``--device cuda``) exactly as
the torchrun loop shards it: images per second and the ratio to one rank, in one run. Each CPU rank
gets ``cores / ranks`` threads, so the ratio says what sharding buys on the same machine. On a GPU
the same code runs with channels_last and autocast, and the table gives the peak GPU memory.
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


def _pool_rank(rank: int, world: int, args, port: int, out) -> None:
    """One rank of the pool bench: score images ``i % world == rank``; rank 0 puts (seconds, peak MB)."""
    import torch
    import torch.distributed as dist

    from app.session import score_and_pick
    from core.models import Segmentor

    threads = max(1, (os.cpu_count() or 1) // world)
    torch.set_num_threads(threads)
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo", rank=rank, world_size=world)
    device = torch.device("cuda", rank) if args.device == "cuda" else torch.device("cpu")
    torch.manual_seed(0)
    model = Segmentor(C, weights=None).to(device).eval()
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    H, W = args.pool_size
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(args.pool)]
    n = queries_per_round("2.2%", H, W, 5, 1)[0]
    labeled = np.zeros((H, W), bool)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), amp:
        score_and_pick(model, images[0], labeled, "square", "ripu", 1, n=n, device=device)   # warm-up
        if world > 1:
            dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        t = time.perf_counter()
        for i in range(rank, args.pool, world):
            score_and_pick(model, images[i], labeled, "square", "ripu", 1, n=n, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if world > 1:
            dist.barrier()
        seconds = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    if rank == 0:
        out.put((seconds, peak))
    if world > 1:
        dist.destroy_process_group()


def pool_bench(args) -> None:
    import torch.multiprocessing as mp

    print()
    print(f"### scoring a pool of {args.pool} images of {args.pool_size[0]}x{args.pool_size[1]} "
          f"({args.device}; default model, random weights, RIPU 2.2 % r=1), sharded by image")
    print()
    print("| ranks | threads per rank | seconds | images/s | x 1 rank | peak GPU MB per rank |")
    print("|---:|---:|---:|---:|---:|---:|")
    ctx = mp.get_context("spawn")
    base = None
    for world in args.ranks:
        q = ctx.SimpleQueue()
        port = 29500 + (os.getpid() % 1000) + world
        procs = [ctx.Process(target=_pool_rank, args=(r, world, args, port, q)) for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        if any(p.exitcode for p in procs):
            raise SystemExit(f"the {world}-rank pool run failed")
        seconds, peak = q.get()
        ips = args.pool / seconds
        base = base or ips
        mb = "" if peak != peak else f"{peak:.0f}"
        print(f"| {world} | {max(1, (os.cpu_count() or 1) // world)} | {seconds:.1f} | {ips:.2f} | "
              f"{ips / base:.2f} | {mb} |", flush=True)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", default="512x1024,1024x2048")
    ap.add_argument("--kinds", default="iid,smooth")
    ap.add_argument("--pool", type=int, default=0, help="also time scoring a pool of N images with --ranks ranks")
    ap.add_argument("--pool-size", default="256x512", help="HxW of the pool's images")
    ap.add_argument("--ranks", default="1,2", help="rank counts for --pool")
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--skip-maps", action="store_true", help="only the --pool table")
    args = ap.parse_args(argv)
    args.pool_size = tuple(int(v) for v in args.pool_size.split("x"))
    args.ranks = [int(v) for v in args.ranks.split(",")]
    if args.skip_maps:
        pool_bench(args)
        return
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
    if args.pool:
        pool_bench(args)


if __name__ == "__main__":
    main()
