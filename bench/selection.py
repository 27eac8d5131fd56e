"""The paper's selection-strategy table on the embedded benchmark: target-val mIoU after the full
active loop (oracle answers) for ripu / rand / ent / sconf at 2.2 % (RA) and 40 px (PA), with the
source-only warm-up and a fully supervised reference (every target-train pixel labeled, same
iterations). All runs start from one shared warm-up checkpoint. Prints markdown tables.

    python bench/selection.py [--budgets 2.2%,40px] [--strategies ripu,rand,ent,sconf]
                              [--rounds 5] [--round-iterations N] [--iterations N] [--out DIR]
"""
import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import storage  # noqa: E402
from app.config import RunConfig, validate  # noqa: E402
from app.session import build_model, load_data, run, train_config  # noqa: E402
from bench.common import machine  # noqa: E402
from core.evaluate import evaluate  # noqa: E402
from core.methods import build_methods  # noqa: E402
from core.train import fit, load_checkpoint  # noqa: E402


def main():
    d = RunConfig()
    p = argparse.ArgumentParser()
    p.add_argument("--budgets", default="2.2%,40px")
    p.add_argument("--strategies", default="ripu,rand,ent,sconf")
    p.add_argument("--rounds", type=int, default=d.rounds)
    p.add_argument("--iterations", type=int, default=d.iterations)
    p.add_argument("--round-iterations", type=int, default=d.round_iterations)
    p.add_argument("--region-radius", type=int, default=None)
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
    base = dict(iterations=a.iterations, round_iterations=a.round_iterations, rounds=a.rounds,
                region_radius=a.region_radius, oracle=True)
    warm = out / "warmup"
    ck = a.init or str(warm / "checkpoints" / "warmup.pt")
    if a.init is None and (not Path(ck).exists() or not storage.step_done(storage.open_store(warm), 1, "warmup")):
        run(validate(RunConfig(workdir=str(warm), budget=None, resume=warm.exists(), **base)))
    results = {}
    for budget in a.budgets.split(","):
        for strategy in a.strategies.split(","):
            w = out / f"{budget.replace('%', 'pct')}_{strategy}"
            t0 = time.time()
            s = run(validate(RunConfig(workdir=str(w), budget=budget, strategy=strategy, init=ck,
                                       resume=w.exists(), **base)))
            rows = storage.metrics_table(s.db, s.run_id)
            results[(budget, strategy)] = (rows[-1]["miou"], rows[-1]["labeled_pct"], time.time() - t0)
    for (b, strategy), (miou, pct, sec) in results.items():
        print(f"{b} {strategy}: mIoU {miou:.1f}, labeled {pct:.3f} %, {sec:.0f} s", flush=True)
    if a.no_references:
        return
    # references: warm-up (source only) and full supervision for the same number of iterations
    cfg = RunConfig(**{k: v for k, v in base.items() if k != "oracle"})
    source, target, val = load_data(cfg)
    model = build_model(cfg, val.label_space.num_classes)
    model.load_state_dict(load_checkpoint(ck)["model"])
    src_only = evaluate(model, val, tuple(cfg.infer_window), desc="source-only")["miou"]
    fit(model, train_config(cfg, a.rounds * a.round_iterations), source, target=target,
        target_labels=lambda i, s: s["label"], methods=build_methods(cfg.method), desc="fully supervised",
        checkpoint=out / "full.pt")
    full = evaluate(model, val, tuple(cfg.infer_window), desc="fully supervised")["miou"]

    print(f"\n**{machine()}**; synthcity 256x512, {a.iterations} warm-up iterations, {a.rounds} rounds x "
          f"{a.round_iterations} iterations, oracle answers, method {cfg.method}\n")
    budgets = a.budgets.split(",")
    print("| strategy | " + " | ".join(f"{b} mIoU (labeled %)" for b in budgets) + " |")
    print("|---|" + "---:|" * len(budgets))
    print(f"| source only | " + " | ".join(f"{src_only:.1f}" for _ in budgets) + " |")
    for strategy in a.strategies.split(","):
        cells = []
        for b in budgets:
            miou, pct, _ = results[(b, strategy)]
            cells.append(f"{miou:.1f} ({pct:.2f} %) = {100 * miou / full:.0f} % of full")
        print(f"| {strategy} | " + " | ".join(cells) + " |")
    print(f"| fully supervised | " + " | ".join(f"{full:.1f} (100 %)" for _ in budgets) + " |")


if __name__ == "__main__":
    main()
