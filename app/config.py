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
    backbone: str = "efficientnet_lite0"
    weights: str | None = None        # None: packaged ImageNet weights (lite0); "none": random init
    output_stride: int = 16           # 8 as in the papers costs 4x on CPU
    image_size: tuple[int, int] = (128, 256)   # training/inference input (H, W)
    iterations: int = 1200            # source-only warm-up iterations
    init: str | None = None           # start from this checkpoint instead of training the warm-up
    batch_size: int = 2
    lr: float = 2.5e-4
    skip_bad: bool = False
    source_size: tuple[int, int] | None = None   # real datasets: image size (H, W); None = the papers'
    target_size: tuple[int, int] | None = None
    synth_size: tuple[int, int] = (256, 512)   # embedded benchmark: stored size (H, W)
    synth_counts: tuple[int, int, int] = (600, 300, 100)   # source, target train, target val images
    # active learning (used from the active-loop issue on)
    budget: str | None = "2.2%"       # "none": warm-up and evaluation only
    rounds: int = 5
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


def parse_size(text: str, what: str = "--image-size") -> tuple[int, int]:
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
        build_methods(cfg.method)
    except ValueError as e:
        raise ConfigError(f"--method: {e}") from None
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
