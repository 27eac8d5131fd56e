"""One run of the studio, top to bottom: data -> model -> source-only warm-up -> evaluation
(-> active rounds, once a budget is given)."""
from __future__ import annotations

from pathlib import Path

import torch

from app.config import RunConfig
from core.data.labels import SYNTHIA16
from core.data.registry import build_dataset, parse_dataset_spec
from core.evaluate import evaluate, iou_table
from core.models import Segmentor
from core.train import TrainConfig, fit, resolve_device


def load_data(cfg: RunConfig):
    """(source, target train, target val) datasets for the run."""
    common = dict(cache_dir=cfg.cache_dir, skip_bad=cfg.skip_bad)
    src_kind, _ = parse_dataset_spec(cfg.source)
    tgt_kind, _ = parse_dataset_spec(cfg.target)
    src_kw = {"seed": cfg.seed} if src_kind == "synthcity" else {}
    tgt_kw = {"seed": cfg.seed} if tgt_kind == "synthcity" else {}
    if src_kind == "synthia" and tgt_kind == "cityscapes":
        tgt_kw["label_space"] = SYNTHIA16   # evaluate the 16 shared classes (+ mIoU* over 13)
    source = build_dataset(cfg.source, "source", "train", **common, **src_kw)
    target = build_dataset(cfg.target, "target", "train", **common, **tgt_kw)
    val = build_dataset(cfg.target, "target", "val", **common, **tgt_kw)
    return source, target, val


def build_model(cfg: RunConfig, num_classes: int) -> Segmentor:
    weights = "imagenet" if cfg.weights is None else (None if cfg.weights == "none" else cfg.weights)
    torch.manual_seed(cfg.seed)
    return Segmentor(num_classes, cfg.backbone, cfg.output_stride, weights=weights)


def train_config(cfg: RunConfig, iterations: int, lr: float | None = None) -> TrainConfig:
    return TrainConfig(iterations=iterations, batch_size=cfg.batch_size, lr=lr or cfg.lr,
                       image_size=tuple(cfg.image_size), seed=cfg.seed, device=cfg.device)


def run(cfg: RunConfig) -> dict:
    workdir = Path(cfg.workdir)
    source, target, val = load_data(cfg)
    names = val.label_space.names
    model = build_model(cfg, val.label_space.num_classes)
    device = resolve_device(cfg.device)
    print(f"source {cfg.source}: {len(source)} images | target {cfg.target}: {len(target)} train, "
          f"{len(val)} val | {cfg.backbone} on {device}")
    fit(model, train_config(cfg, cfg.iterations), source, checkpoint=workdir / "checkpoints" / "warmup.pt",
        desc="source-only warm-up")
    res = evaluate(model, val, cfg.image_size, device=device, desc="evaluate target val")
    print(f"\nTarget val after source-only warm-up ({cfg.iterations} iterations):\n")
    print(iou_table(names, res["confusion"]))
    return res
