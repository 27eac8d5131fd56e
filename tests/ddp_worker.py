"""Run under torchrun by tests/test_train.py: 2 gloo ranks train, each saves its final weights."""
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from core.models import Segmentor
from core.train import TrainConfig, fit
from tests.toy import ToyDataset

out = Path(sys.argv[1])
rank = int(os.environ["RANK"])
torch.manual_seed(0)  # identical init on both ranks (DDP also broadcasts rank 0's weights)
model = Segmentor(19, output_stride=16, weights=None)
if rank == 0:
    torch.save(model.state_dict(), out / "init.pt")
cfg = TrainConfig(iterations=3, crop_size=(32, 64), lr=1e-2)
if len(sys.argv) > 2 and sys.argv[2] == "uneven":
    # ranks make different numbers of forwards per iteration: only rank 0's target crops carry active
    # labels (its student target forward runs, rank 1's is skipped) and CPSL's CutMix coin is per rank
    import numpy as np

    from core.methods import build_methods

    def labels(i, s):
        return np.asarray(s["label"]) if rank == 0 else np.full(np.shape(s["label"]), 255, np.uint8)

    fit(model, cfg, ToyDataset(n=6, size=(32, 64)), ToyDataset(n=6, size=(32, 64), seed=1), labels,
        methods=build_methods(sys.argv[3]), progress=False)
else:
    fit(model, cfg, ToyDataset(n=6, size=(32, 64)), progress=False)
torch.save(model.state_dict(), out / f"rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
