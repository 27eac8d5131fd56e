"""The command line: ``python launch.py [options]`` runs the studio; see ``--help``.

User mistakes print one line ``error: ...`` on stderr and exit with code 2 (no traceback).
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from dataclasses import fields

from app.config import RECIPES, ConfigError, RunConfig, shown
from storage.interchange import FORMATS as TOOL_FORMATS

EPILOG = """commands:
  python launch.py [options]                      the run (below)
  python launch.py annotate --workdir W           open the annotator for W's newest round
  python launch.py export --workdir W --out DIR   write Cityscapes-format masks (see: export --help)
  python launch.py export --format label-studio|cvat --workdir W --out DIR
                                                  the open round's queries for Label Studio or CVAT
  python launch.py import --format label-studio|cvat --workdir W FILE
                                                  that tool's export back as answers (docs/TOOLS.md)

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


def _as_argument_type(parse):
    """argparse shows a type function's ArgumentTypeError message as is (a ConfigError would become
    'invalid <lambda> value')."""
    def convert(text):
        try:
            return parse(text)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = getattr(parse, "__name__", "value")
    return convert


def add_options(p: argparse.ArgumentParser, names=None) -> None:
    """Add RunConfig's fields (all command-line ones, or only ``names``) as ``--field-name`` options, in
    their argument groups, with help, parsing and choices from each field's metadata. Options default
    to argparse.SUPPRESS: only what the user gave appears in the parsed namespace."""
    d = RunConfig()
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f in fields(RunConfig):
        md = f.metadata
        if not md.get("cli", False) or (names is not None and f.name not in names):
            continue
        g = groups.get(md["group"]) or groups.setdefault(md["group"], p.add_argument_group(md["group"]))
        default = (md["default_text"] or shown(getattr(d, f.name))).replace("%", "%%")
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{md['help']} (default: {default})"
        kind = str(f.type)      # the annotation as text (from __future__ import annotations)
        if kind == "bool":
            g.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=help_text)
            continue
        choices = md["choices"]() if callable(md["choices"]) else md["choices"]
        parse = md["parse"] or (int if kind.startswith("int") else float if kind.startswith("float") else str)
        g.add_argument(flag, type=_as_argument_type(parse), choices=choices, default=argparse.SUPPRESS, metavar=md["metavar"],
                       help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The run's parser, generated from RunConfig's fields (app/config.py)."""
    p = _Parser(prog="launch.py", description="Active-annotation studio for domain-adaptive semantic "
                "segmentation: source-only warm-up, UDA, RIPU acquisition, annotation, retraining.",
                epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(p)
    return p


_REOPEN = ("workdir", "cache_dir")
_ANNOTATOR = ("host", "port", "auth", "users_file")


def build_annotate_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch.py annotate", description="Open the browser annotator for the newest round of "
                "the run in --workdir (the loop need not be running).")
    add_options(p, _REOPEN + _ANNOTATOR)
    return p


def build_export_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch.py export", description="Write the run's labels as Cityscapes-format masks: "
                "<stem>_gtFine_labelTrainIds.png (255 unlabeled), _labelIds.png, _color.png and manifest.json.")
    add_options(p, _REOPEN)
    p.add_argument("--out", required=True, help="output folder; nothing is written outside it")
    p.add_argument("--dense", action="store_true", help="fill unlabeled pixels with the final model's "
                   "prediction where its confidence is at least --threshold (255 below)")
    p.add_argument("--threshold", type=float, default=0.9, help="confidence threshold of --dense (default: "
                   "%(default)s)")
    p.add_argument("--format", default="cityscapes", choices=("cityscapes",) + TOOL_FORMATS,
                   help="cityscapes: the labels as masks (default); label-studio | cvat: the open round's queries, "
                   "images and the model's pre-annotation for that tool (docs/TOOLS.md)")
    return p


def build_import_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="launch.py import", description="Read a labeling tool's export (Label Studio JSON, or CVAT "
                "for images 1.1 XML) of the tasks 'launch.py export --format ...' wrote, as answers to the open "
                "round's queries; all or nothing, with the browser's checks (docs/TOOLS.md).")
    add_options(p, _REOPEN)
    p.add_argument("file", help="the tool's export: Label Studio JSON, or CVAT annotations.xml")
    p.add_argument("--format", required=True, choices=TOOL_FORMATS)
    p.add_argument("--annotator", default=None, help="the name stored with the answers (default: "
                   "label-studio:<user> from each annotation, or cvat)")
    p.add_argument("--accept-unchanged", action="store_true", help="cvat: also import answers equal to the "
                   "exported pre-annotation (by default they are left out: CVAT cannot tell an untouched box)")
    return p


def config_from_args(a: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed options: RunConfig's defaults, then the --recipe's values, then every option
    given explicitly (the namespace holds only those, see ``add_options``)."""
    given = vars(a)
    recipe = given.get("recipe", RunConfig.recipe if isinstance(RunConfig.recipe, str) else "cpu")
    cfg = RunConfig(**RECIPES[recipe], recipe=recipe)
    for k, v in given.items():
        if hasattr(cfg, k):
            setattr(cfg, k, v)
    return cfg


def given_options(args: argparse.Namespace) -> set[str]:
    """The RunConfig fields the user set explicitly on the command line (``--resume`` compares only
    these with the stored run)."""
    return set(vars(args))


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean 'the user asked for something impossible' (printed as one line)."""
    from core.data.base import DatasetError
    from core.data.labels import LabelSpaceError
    from core.acquisition import BudgetError
    from core.models.weights import WeightsError
    from core.train import CheckpointError
    from annotator.context import AnnotatorError
    from annotator.provider import ProviderError
    from storage import StoreError

    return (ConfigError, DatasetError, LabelSpaceError, WeightsError, BudgetError, StoreError, AnnotatorError,
            CheckpointError, ProviderError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = None
    try:
        if argv[:1] == ["export"]:
            a = args = build_export_parser().parse_args(argv[1:])
            from app.commands import export_run, export_tool

            d = RunConfig()
            workdir, cache_dir = getattr(a, "workdir", d.workdir), getattr(a, "cache_dir", d.cache_dir)
            if a.format == "cityscapes":
                export_run(workdir, a.out, dense=a.dense, threshold=a.threshold, cache_dir=cache_dir)
            else:
                export_tool(workdir, a.out, a.format, cache_dir=cache_dir)
            return 0
        if argv[:1] == ["import"]:
            a = args = build_import_parser().parse_args(argv[1:])
            from app.commands import import_tool

            d = RunConfig()
            import_tool(getattr(a, "workdir", d.workdir), a.file, a.format, annotator=a.annotator,
                        cache_dir=getattr(a, "cache_dir", d.cache_dir), accept_unchanged=a.accept_unchanged)
            return 0
        if argv[:1] == ["annotate"]:
            a = args = build_annotate_parser().parse_args(argv[1:])
            from app.commands import annotate_only

            c = config_from_args(a)
            annotate_only(c.workdir, c.cache_dir, host=c.host, port=c.port, auth=c.auth, users_file=c.users_file)
            return 0
        args = build_parser().parse_args(argv)
        from app.config import validate
        from app.session import run

        cfg = validate(config_from_args(args))
        run(cfg, given=given_options(args))
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:   # found after opening (locked too long, disk full, damage open_store missed)
        from storage.db import DB_NAME, describe_error

        print(f"error: {describe_error(Path(getattr(args, 'workdir', '.')) / DB_NAME, e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; continue with --resume", file=sys.stderr)
        return 130
    return 0
