"""Annotation effort on the embedded benchmark: target-val mIoU against simulated human seconds, for
square regions, superpixels and pixels at equal time, with and without ``--cost-aware``.

    python bench/effort.py [--budget 2h] [--rounds 2] [--round-iterations 300] [--init CKPT]
                           [--runs square,square+ca,superpixel,pixel] [--out DIR] [--plot docs/effort.png]
    python bench/effort.py --fit-default [--init CKPT] [--images 120]

Every run is the real loop (``app.session.run``, ``--oracle``) from one shared warm-up checkpoint with a
pooled time budget (``--budget``, over the 300 target-train images and all rounds). The oracle's clock
is core.acquisition.cost's: clicks counted by Cai et al.'s rule (CVPR 2021: one per dominant-class
superpixel or pixel; for a drawn region one per class component, per boundary crossing of its edge and
per polygon vertex inside) x 1.75 s per click (Papadopoulos et al., ICCV 2017: 7 s for 4 clicks). A
run spends what its cost model predicts, and is charged what the oracle logged.

``--fit-default`` fits the shipped cost model (core.acquisition.cost.DEFAULT_WEIGHTS) on that clock: the
warm-up model predicts ``--images`` target-train images; per unit, RIPU's and random candidates are
timed by the oracle's rule; weights are fitted on the even images and the median absolute error is
measured on the odd ones (held out), then refitted on all; prints the weights to paste.
"""
import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import storage  # noqa: E402
from app.config import RunConfig, validate  # noqa: E402
from app.session import build_model, load_data, run, segments_for  # noqa: E402
from bench.common import machine  # noqa: E402
from core.acquisition import CostModel, pick_queries, region_clicks, seconds_of_clicks  # noqa: E402
from core.acquisition.cost import FEATURES, median_abs_error  # noqa: E402
from core.evaluate import predict_logits  # noqa: E402
from core.train import load_checkpoint, resolve_device  # noqa: E402

RUNS = {   # name -> (unit, cost-aware, oracle answer)
    "square": ("square", False, "dominant"),
    "square+ca": ("square", True, "dominant"),
    "superpixel": ("superpixel", False, "dominant"),
    "superpixel+ca": ("superpixel", True, "dominant"),
    "superpixel-exact": ("superpixel", False, "exact"),
    "superpixel-exact+ca": ("superpixel", True, "exact"),
    "pixel": ("pixel", False, "dominant"),
    "pixel+ca": ("pixel", True, "dominant"),
}


def simulated_seconds(pick: dict, gt: np.ndarray, answer: str = "dominant") -> float:
    """The oracle's seconds for a pick of core.acquisition.pick_queries (as app/oracle.py times it)."""
    if "y" in pick:
        return seconds_of_clicks(1)
    box = gt[pick["y0"]:pick["y1"], pick["x0"]:pick["x1"]]
    shape = pick.get("shape")
    if shape is None:
        return seconds_of_clicks(region_clicks(box))
    return seconds_of_clicks(1 if answer == "dominant" else region_clicks(box, shape))


def fit_default(ck: str, n_images: int, cache: Path) -> None:
    cfg = RunConfig()
    _, target, _ = load_data(cfg)
    device = resolve_device("auto")
    model = build_model(cfg, 19)
    model.load_state_dict(load_checkpoint(ck)["model"])
    model.to(device).eval()
    radius = 8
    data = {u: {"f": [], "s": [], "img": []} for u in ("square", "superpixel", "pixel")}
    for i in range(min(n_images, len(target))):
        s = target[i]
        gt = s["label"]
        H, W = gt.shape
        prob = predict_logits(model, s["image"], (H, W), window=cfg.infer_window,
                              device=device).softmax(0).cpu().numpy().astype(np.float32)
        seg = segments_for(cfg, s["name"], s["image"], H, W, cache)
        for unit in data:
            for strategy in ("ripu", "rand"):
                picks, _ = pick_queries(prob, np.zeros((H, W), bool), unit, strategy, radius, n=16, segments=seg,
                                        rng=np.random.default_rng([i, 1]))
                for p in picks:
                    data[unit]["f"].append(p["features"])
                    data[unit]["s"].append(simulated_seconds(p, gt))
                    data[unit]["img"].append(i)
    print(f"\nCost model fitted on the simulated clock ({n_images} target-train images, RIPU + random "
          f"candidates, 16 each per image and unit; {machine()})\n")
    print("| unit | queries | mean simulated s | held-out median abs. error (s) | default-free baseline: "
          "median abs. error of the training mean (s) |")
    print("|---|---:|---:|---:|---:|")
    weights = {}
    for unit, d in data.items():
        f, sec, img = np.asarray(d["f"]), np.asarray(d["s"]), np.asarray(d["img"])
        train, test = img % 2 == 0, img % 2 == 1
        cm = CostModel()
        cm.fit(unit, f[train], sec[train], min_answers=1)
        err = median_abs_error(cm.predict(unit, f[test]), sec[test])
        base = median_abs_error(np.full(test.sum(), sec[train].mean()), sec[test])
        cm.fit(unit, f, sec, min_answers=1)
        weights[unit] = tuple(round(float(v), 3) for v in cm.weights[unit])
        print(f"| {unit} | {len(sec)} | {sec.mean():.1f} | {err:.2f} | {base:.2f} |")
    print(f"\nDEFAULT_WEIGHTS (features {FEATURES}):\n")
    print("{\n" + ",\n".join(f'    "{u}": {w}' for u, w in weights.items()) + ",\n}")


def label_noise(db, target) -> float:
    """% of labeled target-train pixels (ground truth not void) whose label differs from the ground truth."""
    wrong = total = 0
    for i, name in enumerate(target.names):
        gt = target[i]["label"]
        lab = storage.label_mask(db, name, *gt.shape)
        m = (lab != 255) & (gt != 255)
        wrong += int(np.count_nonzero(lab[m] != gt[m]))
        total += int(np.count_nonzero(m))
    return 100.0 * wrong / max(total, 1)


def plot(results: dict, warm_miou: float, path: str, budget: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name, rows in results.items():
        xs = [0.0] + [r["seconds"] / 60 for r in rows]
        ys = [warm_miou] + [r["miou"] for r in rows]
        ax.plot(xs, ys, marker="o", linestyle="--" if name.endswith("+ca") else "-", label=name)
    ax.set_xlabel("simulated human time spent (minutes, whole pool)")
    ax.set_ylabel("target-val mIoU")
    ax.set_title(f"Effort on the embedded benchmark (budget {budget})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    print(f"\nplot: {path}")


def main():
    d = RunConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--budget", default="2h", help="pooled time budget over all rounds (default %(default)s)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--round-iterations", type=int, default=d.round_iterations)
    p.add_argument("--iterations", type=int, default=d.iterations, help="warm-up iterations when no --init")
    p.add_argument("--runs", default="square,square+ca,superpixel,pixel", help=f"any of {', '.join(RUNS)}")
    p.add_argument("--init", default=None, help="warm-up checkpoint (default: train one in --out)")
    p.add_argument("--out", default="/tmp/bench_effort")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument("--plot", default=None, help="write the mIoU-vs-seconds plot (PNG) here")
    p.add_argument("--fit-default", action="store_true", help="fit and print the default cost model, then stop")
    p.add_argument("--images", type=int, default=120, help="--fit-default: target-train images used")
    a = p.parse_args()
    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    warm = out / "warmup"
    ck = a.init or str(warm / "checkpoints" / "warmup.pt")
    if a.init is None and (not Path(ck).exists() or not storage.step_done(storage.open_store(warm), 1, "warmup")):
        run(validate(RunConfig(workdir=str(warm), budget=None, iterations=a.iterations, resume=warm.exists())))
    if a.fit_default:
        fit_default(ck, a.images, out / "fit")
        return
    base = dict(budget=a.budget, rounds=a.rounds, round_iterations=a.round_iterations, oracle=True, init=ck)
    results, extra = {}, {}
    warm_miou = None
    for name in a.runs.split(","):
        unit, aware, answer = RUNS[name]
        w = out / name
        t0 = time.time()
        s = run(validate(RunConfig(workdir=str(w), unit=unit, cost_aware=aware, oracle_answer=answer,
                                   resume=w.exists(), **base)))
        rows = storage.metrics_table(s.db, s.run_id)
        warm_miou = rows[0]["miou"]
        def num(v):   # a metric stored as NaN reads back as None (SQL NULL)
            return float("nan") if v is None else v

        results[name] = [dict(round=r["round"], miou=r["miou"], seconds=num(r.get("seconds_spent")),
                              labeled=r["labeled_pct"], mae=num(r.get("cost_mae_s"))) for r in rows[1:]]
        extra[name] = dict(noise=label_noise(s.db, s.target), queries=storage.query_kinds(s.db),
                           minutes=(time.time() - t0) / 60)
        print(f"{name}: {results[name]} {extra[name]}", flush=True)
    print(f"\nEffort: pooled budget {a.budget} over {a.rounds} rounds, {a.round_iterations} iterations per round, "
          f"oracle clock = Cai et al. clicks x 1.75 s; warm-up {warm_miou:.1f} mIoU; {machine()}\n")
    print("| run | round | simulated minutes spent | labeled pixels (% of pool) | label noise (% of labeled px) "
          "| cost model: median abs. error (s) | mIoU |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for r in rows:
            print(f"| {name} | {r['round']} | {r['seconds'] / 60:.1f} | {r['labeled']:.3f} | {extra[name]['noise']:.1f} "
                  f"| {r['mae']:.2f} | {r['miou']:.1f} |")
    if a.plot:
        plot(results, warm_miou, a.plot, a.budget)


if __name__ == "__main__":
    main()
