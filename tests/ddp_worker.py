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
fit(model, cfg, ToyDataset(n=6, size=(32, 64)), progress=False)
torch.save(model.state_dict(), out / f"rank{rank}.pt")
dist.barrier()
dist.destroy_process_group()
