"""Run every ``launch.py`` command of docs/GPU.md with tiny settings on the CPU: none of them is broken.

    python bench/gpu_doc_commands.py [--workdir /tmp/gpu-doc]

Each command is taken from the page as written, then: the dataset paths point at small GTA5- and
Cityscapes-layout folders made here (tests/fixtures_datasets.py), the ResNet-101 weight file is a
state dict of a randomly initialised timm resnet101 (what a user saves, minus the ImageNet training),
and tiny settings are appended (``--device cpu``, 2 warm-up and 1 round iterations, 1 round, small
sizes); torchrun commands run with 2 processes on this machine (the multi-node one as one node with
its c10d rendezvous on localhost). Prints a markdown table: command, exit code, seconds.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ["--device", "cpu", "--iterations", "2", "--round-iterations", "1", "--rounds", "1", "--workers", "0",
        "--source-size", "40x72", "--target-size", "32x64"]


def commands(page: Path) -> list[list[str]]:
    blocks = re.findall(r"(?:^    .*\n?)+", page.read_text(), flags=re.M)
    out = []
    for b in blocks:
        cmd = " ".join(line.strip().rstrip("\\") for line in b.splitlines())
        if "launch.py" in cmd:
            out.append(shlex.split(cmd))
    return out


def tiny(words: list[str], data: dict, work: Path, k: int) -> list[str]:
    """The page's command with local data, weights and tiny settings (options given later win)."""
    i = words.index("launch.py")
    pre, args = words[:i], words[i + 1:]
    if pre and pre[0] == "torchrun":
        pre = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2"]
        if "--rdzv_endpoint" in words:   # the multi-node command, as one node on localhost
            pre += ["--nnodes=1", "--rdzv_backend=c10d", "--rdzv_endpoint=localhost:29477", "--rdzv_id=doc"]
        else:
            pre += ["--standalone"]
    else:
        pre = [sys.executable]
    fixed = []
    for a in args:
        if a.startswith("gta5:"):
            a = f"gta5:{data['gta5']}"
        elif a.startswith("cityscapes:"):
            a = f"cityscapes:{data['cityscapes']}"
        elif a.endswith(".pth"):
            a = str(data["weights"])
        elif a.startswith(("runs/", "/shared/")):
            a = str(work / f"run{k}")
        fixed.append(a)
    return [*pre, str(ROOT / "launch.py"), *fixed, *TINY]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", default="/tmp/gpu-doc-commands")
    a = ap.parse_args(argv)
    work = Path(a.workdir)
    work.mkdir(parents=True, exist_ok=True)
    import timm
    import torch

    from tests.fixtures_datasets import make_cityscapes, make_gta5

    data = {"gta5": make_gta5(work / "gta5", n=4, size=(40, 72)),
            "cityscapes": make_cityscapes(work / "cityscapes", n_train=3, n_val=2, size=(64, 128)),
            "weights": work / "resnet101.pth"}
    if not data["weights"].exists():
        torch.save(timm.create_model("resnet101", pretrained=False).state_dict(), data["weights"])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    print("| command (docs/GPU.md) | exit code | seconds |")
    print("|---|---:|---:|")
    failed = 0
    for k, words in enumerate(commands(ROOT / "docs" / "GPU.md")):
        cmd = tiny(words, data, work, k)
        t = time.time()
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        failed += r.returncode != 0
        shown = " ".join(words[:4]) + " ... " + " ".join(w for w in words if w.startswith("--budget") or w in
                                                        ("2.2%", "40px"))
        print(f"| `{shown}` | {r.returncode} | {time.time() - t:.0f} |", flush=True)
        if r.returncode:
            print("\n    " + "\n    ".join(r.stderr.strip().splitlines()[-5:]) + "\n")
    raise SystemExit(1 if failed else 0)


if __name__ == "__main__":
    main()
