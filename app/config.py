"""RunConfig: every setting of a run as plain values, validated once (a user mistake is a ConfigError
with one clear line; the CLI prints it and exits 2)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path


class ConfigError(ValueError):
    """A user mistake in the run configuration."""


@dataclass
class RunConfig:
    workdir: str = "workdir"
    cache_dir: str = os.environ.get("SEGSTUDIO_CACHE", str(Path.home() / ".cache" / "segstudio"))
    source: str = "synthcity"
    target: str = "synthcity"
    device: str = "auto"
    seed: int = 0
    train_seed: int | None = None     # training init/batches/augmentation and random selection; None = seed
    backbone: str = "efficientnet_lite0"
    weights: str | None = None        # None: packaged ImageNet weights (lite0); "none": random init
    recipe: str = "cpu"               # "cpu" (these defaults) or "paper" (RECIPES["paper"] over them)
    head: str = "deeplabv3plus"       # segmentation head: deeplabv3plus (stride-4 decoder) | deeplabv2
    output_stride: int = 16           # backbone output stride; 8 as in the papers costs 4x on CPU
    crop: tuple[int, int] | None = (128, 256)   # training crop (H, W) at the stored resolution; None = whole image
    scale: tuple[float, float] = (0.75, 1.5)    # random scale range before the crop
    infer_window: tuple[int, int] | None = (512, 1024)   # evaluation/scoring/prefill predict the full stored
                                      # image, with a sliding window of this size (H, W) when it is larger
    iterations: int = 900             # source-only warm-up iterations (fits `launch.py --budget none` in 8 min)
    init: str | None = None           # start from this checkpoint instead of training the warm-up
    batch_size: int = 2
    lr: float = 2.5e-3                # backbone learning rate (SGD, poly 0.9); the head gets 10x
    warmup: int = 50                  # linear lr warm-up iterations (the 10x-the-papers' lr diverges without)
    grad_clip: float | None = 5.0     # gradient-norm clip; None = off (the papers)
    skip_bad: bool = False
    mask_format: str = "ids"          # folder targets: "ids" (classes.json ids / Cityscapes labelIds) | "train_ids"
    source_size: tuple[int, int] | None = None   # real datasets: image size (H, W); None = the papers'
    target_size: tuple[int, int] | None = None
    synth_size: tuple[int, int] = (256, 512)   # embedded benchmark: stored size (H, W)
    synth_counts: tuple[int, int, int] = (600, 300, 100)   # source, target train, target val images
    # active learning (used from the active-loop issue on)
    budget: str | None = "2.2%"       # "none": warm-up and evaluation only
    rounds: int = 5
    budget_rounds: int | None = None  # not an option: the rounds --budget was given for, when --resume --rounds
                                      # extended the run (each round keeps budget / budget_rounds); None = rounds
    strategy: str = "ripu"
    region_radius: int | None = None
    round_iterations: int = 300
    method: str = "ripu"
    oracle: bool = False
    resume: bool = False
    # the browser annotator (when not --oracle)
    host: str = "127.0.0.1"
    port: int = 7860
    auth: str | None = None
    users_file: str | None = None

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# Named recipes: values that replace RunConfig's defaults (options given on the command line win).
# "cpu" is RunConfig itself: DeepLabV3+ on efficientnet_lite0, 128x256 crops at the stored resolution,
# lr 2.5e-3 with warm-up and clip, measured in README ("Domain gap"). "paper" restores the papers'
# DeepLabV2 protocol for GPU users (RIPU/AdvEnt/DACS: SGD lr 2.5e-4, head x10, poly 0.9, output
# stride 8, no warm-up or clip, resize-only inputs: GTA5 720x1280, Cityscapes 640x1280, no crop or scale).
RECIPES: dict[str, dict] = {
    "cpu": {},
    "paper": dict(head="deeplabv2", output_stride=8, crop=None, scale=(1.0, 1.0), infer_window=None, lr=2.5e-4,
                  warmup=0, grad_clip=None, iterations=40000, round_iterations=4000, target_size=(640, 1280)),
}


def parse_size(text: str, what: str = "--crop") -> tuple[int, int]:
    """'128x256' (H x W) -> (128, 256)."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise ConfigError(f"{what} must look like HxW, e.g. 128x256 (got {text!r})") from None
    if h < 32 or w < 32 or h % 8 or w % 8:
        raise ConfigError(f"{what} {text}: both sides must be multiples of 8 and at least 32")
    return h, w


def parse_counts(text: str) -> tuple[int, int, int]:
    """'600,300,100' -> (600, 300, 100)."""
    try:
        c = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        c = ()
    if len(c) != 3 or min(c) < 1:
        raise ConfigError(f"--synth-counts must be three positive integers SOURCE,TRAIN,VAL (got {text!r})")
    return c


def validate(cfg: RunConfig) -> RunConfig:
    """Check everything that can be checked before work starts."""
    import timm

    if cfg.iterations < 0:
        raise ConfigError(f"--iterations must be 0 or more (got {cfg.iterations})")
    if cfg.round_iterations < 0:
        raise ConfigError(f"--round-iterations must be 0 or more (got {cfg.round_iterations})")
    if cfg.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1 (got {cfg.batch_size})")
    if not cfg.lr > 0:
        raise ConfigError(f"--lr must be positive (got {cfg.lr})")
    if cfg.rounds < 1:
        raise ConfigError(f"--rounds must be at least 1 (got {cfg.rounds})")
    if cfg.output_stride not in (8, 16):
        raise ConfigError("--output-stride must be 8 or 16")
    from core.models.segmentor import HEADS

    if cfg.head not in HEADS:
        raise ConfigError(f"unknown --head {cfg.head!r} (choose from {', '.join(HEADS)})")
    if cfg.recipe not in RECIPES:
        raise ConfigError(f"unknown --recipe {cfg.recipe!r} (choose from {', '.join(RECIPES)})")
    if not 0 < cfg.scale[0] <= cfg.scale[1]:
        raise ConfigError(f"--scale must be LOW,HIGH with 0 < LOW <= HIGH (got {cfg.scale})")
    if cfg.warmup < 0:
        raise ConfigError(f"--warmup must be 0 or more (got {cfg.warmup})")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        cfg.grad_clip = None
    if not timm.is_model(cfg.backbone):
        raise ConfigError(f"unknown backbone {cfg.backbone!r} (any timm model name, e.g. efficientnet_lite0, resnet101)")
    if cfg.weights is None and cfg.backbone != "efficientnet_lite0":
        raise ConfigError(f"backbone {cfg.backbone} needs --weights PATH (a local ImageNet state_dict) "
                          "or --weights none; nothing is downloaded")
    if cfg.init is not None and not Path(cfg.init).is_file():
        raise ConfigError(f"--init: checkpoint not found: {cfg.init}")
    if cfg.weights not in (None, "none") and not Path(cfg.weights).is_file():
        raise ConfigError(f"--weights: file not found: {cfg.weights}")
    dev = cfg.device
    if not (dev in ("auto", "cpu", "cuda") or dev.startswith("cuda:")):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N (got {dev!r})")
    if dev.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"--device {dev}: no CUDA GPU is available on this machine")
    if cfg.region_radius is not None and cfg.region_radius < 0:
        raise ConfigError(f"--region-radius must be 0 or more (got {cfg.region_radius})")
    if cfg.budget is not None and cfg.budget.lower() == "none":
        cfg.budget = None
    if not 0 < cfg.port < 65536:
        raise ConfigError(f"--port must be 1..65535 (got {cfg.port})")
    if cfg.host not in ("127.0.0.1", "localhost", "::1") and not (cfg.auth or cfg.users_file):
        raise ConfigError(f"binding the annotator to {cfg.host} requires --auth user:password or --users-file")
    if cfg.users_file and not Path(cfg.users_file).is_file():
        raise ConfigError(f"--users-file: file not found: {cfg.users_file}")
    if cfg.budget is not None:
        from core.acquisition import parse_budget

        parse_budget(cfg.budget)          # BudgetError: one clear line
    from core.methods import build_methods

    try:
        methods = build_methods(cfg.method)
    except ValueError as e:
        raise ConfigError(f"--method: {e}") from None
    if cfg.crop is None and tuple(cfg.scale) != (1.0, 1.0) and cfg.batch_size > 1:
        raise ConfigError("--crop none trains on whole images, which a random --scale makes of different sizes "
                          "within a batch: add --scale 1,1 or give a --crop")
    if cfg.crop is None and any("mix" in m.exclusive for m in methods):
        raise ConfigError(f"--method {cfg.method} mixes source and target images, which needs one training size "
                          "for both domains: give a --crop (e.g. --crop 512x512, as DACS)")
    check_writable(Path(cfg.workdir), "--workdir")
    return cfg


def check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what} {path} is not writable ({e.strerror or e})") from None
