"""The paper's selection-strategy table on the embedded benchmark: target-val mIoU after the full
active loop (oracle answers) for ripu / rand / ent / sconf at 2.2 % (RA) and 40 px (PA), over
several training seeds (mean and spread), with the source-only warm-up and a fully supervised
reference (every target-train pixel labeled, same iterations). All runs start from one shared
warm-up checkpoint; a seed changes training (batch order, augmentation) and random selection, not
the data. Prints markdown tables, plus the per-class share of labeled pixels and IoU per strategy.

    python bench/selection.py [--budgets 2.2%,2.2%@1,40px] [--strategies ripu,rand,ent,sconf]
                              [--seeds 0,1] [--rounds 5] [--round-iterations N] [--init CKPT] [--out DIR]

``--strategies none`` runs only the reference rows (source only and fully supervised).

A budget ``B@r`` runs with ``--region-radius r`` (``2.2%@1``: the official 3x3 regions).
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
from app.session import build_model, load_data, run, train_config  # noqa: E402
from bench.common import machine  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.methods import build_methods  # noqa: E402
from core.train import fit, load_checkpoint  # noqa: E402


def label_shares(db, target, names) -> np.ndarray:
    """Share (%) of each class among the labeled target-train pixels of a finished run."""
    counts = np.zeros(len(names), np.int64)
    for i, name in enumerate(target.names):
        H, W = target[i]["label"].shape
        lab = storage.label_mask(db, name, H, W)
        counts += np.bincount(lab[lab != 255].ravel(), minlength=256)[:len(names)]
    return 100.0 * counts / max(counts.sum(), 1)


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--budgets", default="2.2%,2.2%@1,40px")
    p.add_argument("--strategies", default="ripu,rand,ent,sconf", help="comma-separated; 'none' for only the "
                   "reference rows")
    p.add_argument("--seeds", default="0,1", help="training seeds (--train-seed of each run)")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--round-iterations", type=int, default=d.round_iterations)
    p.add_argument("--out", default="/tmp/bench_selection")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    p.add_argument("--init", default=None, help="an existing warm-up checkpoint of the same model "
                   "(e.g. from bench/domain_gap.py) instead of training one")
    p.add_argument("--no-references", action="store_true", help="skip the source-only / fully supervised rows "
                   "(e.g. when another process computes them)")
    a = p.parse_args()
    out = Path(a.out)
    if a.fresh and out.exists():
        shutil.rmtree(out)
    base = dict(iterations=a.iterations, round_iterations=a.round_iterations, rounds=a.rounds, oracle=True)
    warm = out / "warmup"
    ck = a.init or str(warm / "checkpoints" / "warmup.pt")
    if a.init is None and (not Path(ck).exists() or not storage.step_done(storage.open_store(warm), 1, "warmup")):
        run(validate(RunConfig(workdir=str(warm), budget=None, resume=warm.exists(), **base)))
    seeds = [int(v) for v in a.seeds.split(",")]
    budgets = a.budgets.split(",")
    strategies = [] if a.strategies == "none" else a.strategies.split(",")
    results, shares, ious = {}, {}, {}
    names = None
    for cell in budgets:
        budget, _, radius = cell.partition("@")
        for strategy in strategies:
            for seed in seeds:
                w = out / f"{cell.replace('%', 'pct').replace('@', '_r')}_{strategy}_s{seed}"
                t0 = time.time()
                s = run(validate(RunConfig(workdir=str(w), budget=budget, strategy=strategy, init=ck, train_seed=seed,
                                           region_radius=int(radius) if radius else None, resume=w.exists(),
                                           **base)))
                rows = storage.metrics_table(s.db, s.run_id)
                results[(cell, strategy, seed)] = (rows[-1]["miou"], rows[-1]["labeled_pct"], time.time() - t0)
                names = s.names
                if seed == seeds[0]:
                    shares[(cell, strategy)] = label_shares(s.db, s.target, names)
                    ious[(cell, strategy)] = 100 * np.asarray([np.nan if v is None else v for v in rows[-1]["iou"]],
                                                              float)
                print(f"{cell} {strategy} seed {seed}: mIoU {results[(cell, strategy, seed)][0]:.1f}, labeled "
                      f"{rows[-1]['labeled_pct']:.3f} %, {time.time() - t0:.0f} s", flush=True)
    refs = {}
    if not a.no_references:   # warm-up (source only) and full supervision for the same number of iterations
        cfg = RunConfig(**{k: v for k, v in base.items() if k != "oracle"})
        source, target, val = load_data(cfg)
        model = build_model(cfg, val.label_space.num_classes)
        model.load_state_dict(load_checkpoint(ck)["model"])
        refs["source only"] = [evaluate(model, val, cfg.infer_window, desc="source-only")["miou"]]
        full = []
        for seed in seeds:
            cfg.train_seed = seed
            model = build_model(cfg, val.label_space.num_classes)
            model.load_state_dict(load_checkpoint(ck)["model"])
            fit(model, train_config(cfg, a.rounds * a.round_iterations), source, target=target,
                target_labels=lambda i, s: s["label"], methods=build_methods(cfg.method), desc="fully supervised",
                checkpoint=out / f"full_s{seed}.pt")
            full.append(evaluate(model, val, cfg.infer_window, desc="fully supervised")["miou"])
        refs["fully supervised"] = full

    def cell_text(vals):
        v = np.asarray(vals, float)
        return f"{v.mean():.1f}" + (f" ± {v.std():.1f}" if len(v) > 1 else "")

    print(f"\n**{machine()}**; synthcity 256x512, warm-up {ck}, {a.rounds} rounds x {a.round_iterations} "
          f"iterations, oracle answers, method {d.method}, training seeds {seeds} (mean ± std)\n")
    print("| strategy | " + " | ".join(budgets) + " |")
    print("|---|" + "---:|" * len(budgets))
    for k, v in refs.items():
        print(f"| {k} | " + " | ".join(cell_text(v) for _ in budgets) + " |")
    for strategy in strategies:
        print(f"| {strategy} | " + " | ".join(
            cell_text([results[(b, strategy, s)][0] for s in seeds]) + " ("
            + f"{np.mean([results[(b, strategy, s)][1] for s in seeds]):.2f} %)" for b in budgets) + " |")
    if names is not None:
        for b in budgets:
            print(f"\n{b}, seed {seeds[0]}: share of labeled pixels (%) / IoU after the last round\n")
            print("| class | " + " | ".join(strategies) + " |\n|---|" + "---:|" * len(strategies))
            for c, n in enumerate(names):
                print(f"| {n} | " + " | ".join(f"{shares[(b, st)][c]:.1f} / {ious[(b, st)][c]:.0f}"
                                               for st in strategies) + " |")


if __name__ == "__main__":
    main()
