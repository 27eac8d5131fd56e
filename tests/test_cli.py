"""The command line end to end: error paths (one line, exit 2) and tiny real runs of the loop."""
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.toy import step_marked

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--synth-size", "64x128", "--synth-counts", "6,6,4", "--crop", "64x128", "--output-stride", "16",
        "--iterations", "3", "--round-iterations", "2", "--device", "cpu"]


def launch(args, cache, timeout=600, **kw):
    env = {**os.environ, "SEGSTUDIO_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, str(ROOT / "launch.py"), *args], capture_output=True, text=True,
                          env=env, timeout=timeout, cwd=kw.get("cwd", ROOT))


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.mark.parametrize("args,msg", [
    (["--backbone", "no_such_net"], "unknown backbone"),
    (["--iterations", "-1"], "--iterations must be 0 or more"),
    (["--no-such-option"], "unrecognized arguments"),
    (["--budget", "40pz"], "invalid budget"),
    (["--budget=-1%"], "invalid budget"),
    (["--budget", "120%"], "invalid budget"),
    (["--budget", "0px"], "invalid budget"),
    (["--budget", "2.2"], "invalid budget"),
    (["--backbone", "resnet101"], "needs --weights"),
    (["--weights", "/nonexistent/w.pth"], "file not found"),
    (["--crop", "12x7"], "--crop"),
    (["--infer-window", "big"], "--infer-window"),
    (["--scale", "1.5"], "--scale"),
    (["--scale", "2,1"], "--scale"),
    (["--head", "unet"], "invalid choice"),
    (["--recipe", "gpu"], "invalid choice"),
    (["--method", "nope"], "unknown method"),
    (["--budget", "0clicks"], "invalid budget"),
    (["--budget", "3days"], "invalid budget"),
    (["--budget", "40px", "--unit", "superpixel"], "only --unit pixel spends"),
    (["--budget", "2.2%", "--unit", "pixel"], "pixel queries take"),
    (["--budget", "200clicks", "--unit", "square"], "give squares a time"),
    (["--unit", "superpixel", "--superpixel-size", "2"], "--superpixel-size must be at least 4"),
    (["--unit", "hexagon"], "invalid choice"),
    (["--oracle-answer", "exact"], "add --unit superpixel"),
    (["--unit", "superpixel", "--honeypot-rate", "0.1"], "drop it with --unit superpixel"),
])
def test_user_mistakes_print_one_line_and_exit_2(tmp_path, capsys, args, msg):
    from app.cli import main

    try:
        rc = main(["--workdir", str(tmp_path / "w"), *args])
    except SystemExit as e:   # argparse's own errors exit from inside parse_args
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and msg in lines[0], err
    assert "Traceback" not in err


def test_unwritable_workdir_in_a_real_process(tmp_path, cache):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = launch(["--workdir", str(blocker / "w")], cache, timeout=120)
    assert r.returncode == 2 and "not writable" in r.stderr and "Traceback" not in r.stderr


def test_every_option_is_a_runconfig_field_in_help_and_in_readme(cache):
    """The parser is generated from RunConfig; every option it has is in `launch.py --help` (a real
    process) and in README's option table, and README's table lists no option the parser lacks."""
    import re
    from dataclasses import fields

    from app.cli import build_parser
    from app.config import RunConfig

    parser_opts = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    cli_fields = {"--" + f.name.replace("_", "-") for f in fields(RunConfig) if f.metadata.get("cli")}
    assert parser_opts == cli_fields and len(parser_opts) > 30
    r = launch(["--help"], cache, timeout=60)
    assert r.returncode == 0
    assert not [o for o in parser_opts if o not in r.stdout]
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("## Command line"):readme.index("## The annotator")]
    in_readme = set(re.findall(r"`(--[a-z][a-z-]*)", "\n".join(ln.split("|")[1] for ln in table.splitlines()
                                                             if ln.startswith("| `--"))))
    assert parser_opts - in_readme == set(), "options missing from README's table"
    assert in_readme - parser_opts == set(), "README's table lists options the parser lacks"


def _labeled(workdir):
    con = sqlite3.connect(workdir / "project.db")
    n = con.execute("SELECT count(*), coalesce(sum((y1-y0)*(x1-x0)), 0) FROM queries WHERE status='done'").fetchone()
    con.close()
    return n


def _boxes(workdir):
    """Every query as (round, image, y0, x0, y1, x1, y, x, status), sorted."""
    con = sqlite3.connect(workdir / "project.db")
    rows = sorted(con.execute("SELECT r.idx, i.name, q.y0, q.x0, q.y1, q.x1, q.y, q.x, q.status FROM queries q "
                              "JOIN rounds r ON r.id = q.round JOIN images i ON i.id = q.image").fetchall(),
                  key=repr)
    con.close()
    return rows


def test_region_budget_oracle_run_end_to_end(tmp_path, cache):
    w = tmp_path / "ra"
    r = launch([*TINY, "--workdir", str(w), "--budget", "2.2%", "--oracle", "--rounds", "2",
                "--region-radius", "1"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| round | labeled pixels (% of target) | mIoU | seconds |" in r.stdout
    assert "| **mIoU** |" in r.stdout
    n, area = _labeled(w)
    # 2.2% of 64x128 = 180 px = 20 3x3 regions per image, over 6 images (border clipping may lose a few)
    assert n == 6 * round(64 * 128 * 0.022 / 9)
    assert 0.9 * 6 * 180 <= area <= 6 * 180 + 9
    assert (w / "checkpoints" / "round2.pt").exists()
    # export: sparse masks equal the stored labels; --dense fills the rest from the final model
    exp = launch(["export", "--workdir", str(w), "--out", str(tmp_path / "out")], cache)
    assert exp.returncode == 0, exp.stderr[-2000:]
    import cv2
    import json

    import storage

    db = storage.open_store(w)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert len(manifest["images"]) == 6
    for name in list(storage.labeled_pixel_count(db))[:2]:
        png = cv2.imread(str(tmp_path / "out" / f"{name}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
        assert (png == storage.label_mask(db, name)).all()
    dense = launch(["export", "--workdir", str(w), "--out", str(tmp_path / "dense"), "--dense", "--threshold", "0"],
                   cache)
    assert dense.returncode == 0, dense.stderr[-2000:]
    name = next(iter(storage.labeled_pixel_count(db)))
    png = cv2.imread(str(tmp_path / "dense" / f"{name}_gtFine_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    human = storage.label_mask(db, name)
    assert (png[human == 255] != 255).all()    # threshold 0: every unlabeled pixel takes the prediction
    assert (png[human != 255] == human[human != 255]).all()
    bad = launch(["export", "--workdir", str(w), "--out", str(tmp_path / "o2"), "--threshold", "2"], cache)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    # a second plain run refuses to overwrite; --resume of a finished run does nothing new
    again = launch([*TINY, "--workdir", str(w), "--budget", "2.2%", "--oracle"], cache)
    assert again.returncode == 2 and "--resume" in again.stderr


def test_superpixel_queries_and_a_time_budget_end_to_end(tmp_path, cache):
    """--unit superpixel with a percentage: every query carries its SLIC shape, the oracle answers its
    dominant class in one simulated click and only the shape's pixels are labeled; then squares under a
    pooled time budget with --cost-aware: a round's predicted seconds fit what is left of the budget,
    and the logged seconds are what the oracle's click rule gives."""
    import numpy as np

    import storage
    from core.acquisition import SECONDS_PER_CLICK

    w = tmp_path / "sp"
    r = launch([*TINY, "--workdir", str(w), "--budget", "5%", "--unit", "superpixel", "--oracle", "--rounds", "1",
                "--region-radius", "2"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    db = storage.open_store(w)
    qs = list(db.query("SELECT q.*, i.name FROM queries q JOIN images i ON i.id = q.image"))
    assert qs and all(q["shape"] is not None and q["kind"] == "region" for q in qs)
    assert (w / "cache" / "superpixels" / "size25").is_dir()   # (2r+1)^2 = 25 px superpixels, cached
    per_image = {}
    for q in qs:
        shape = storage.decode_patch(q["shape"]).astype(bool)
        assert q["area"] == shape.sum()
        per_image[q["name"]] = per_image.get(q["name"], 0) + q["area"]
        lab = storage.label_mask(db, q["name"])[q["y0"]:q["y1"], q["x0"]:q["x1"]]
        label = list(db.query("SELECT point_class, ms, edits FROM labels WHERE query = ?", [q["id"]]))[0]
        assert label["edits"] == 1 and label["ms"] == round(SECONDS_PER_CLICK * 1000)
        assert (lab[shape] == label["point_class"]).all() or label["point_class"] == 255
    for area in per_image.values():   # about 5 % of each 64x128 image, within one superpixel
        assert abs(area - 0.05 * 64 * 128) <= 3 * 25 + 40, per_image
    assert storage.labeled_pixels(db, 1) == sum(per_image.values())

    w2 = tmp_path / "time"
    r = launch([*TINY, "--workdir", str(w2), "--budget", "4min", "--unit", "square", "--cost-aware", "--oracle",
                "--rounds", "2", "--region-radius", "2"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    db = storage.open_store(w2)
    spent = 0.0
    for rnd in (1, 2):
        rid = db.execute("SELECT id FROM rounds WHERE idx = ?", [rnd]).fetchone()[0]
        qs = list(db.query("SELECT q.cost_s, q.features, q.status, q.reason, q.score, l.ms FROM queries q "
                           "LEFT JOIN labels l ON l.query = q.id WHERE q.round = ?", [rid]))
        assert qs and all(q["features"] and q["cost_s"] > 0 for q in qs)
        left = 240 * rnd / 2 - spent
        # the oracle is asked for 1.5x the predicted allowance, answers in score-per-second order and stops
        # once its clock reaches the allowance: the rest is skipped, unanswered
        assert sum(q["cost_s"] for q in qs) <= 1.5 * left + 1e-6
        done = [q for q in qs if q["status"] == "done"]
        rest = [q for q in qs if q["status"] != "done"]
        assert all(q["status"] == "skipped" and q["reason"] == "budget spent" for q in rest)
        used = sum(q["ms"] for q in done) / 1000
        assert used - max(q["ms"] for q in done) / 1000 < left
        if rest:
            assert used >= left and min(q["score"] / q["cost_s"] for q in done) >= \
                max(q["score"] / q["cost_s"] for q in rest) - 1e-9
        spent += used
        assert all(q["ms"] % round(SECONDS_PER_CLICK * 1000) == 0 for q in done)   # whole simulated clicks
    metrics = {(m["round"], k): v for m in storage.metrics_table(db, 1) for k, v in m.items()}
    assert np.isclose(metrics[(2, "seconds_spent")], spent)
    rid = db.execute("SELECT id FROM rounds WHERE idx = 2").fetchone()[0]
    errors = [abs(q["cost_s"] - q["ms"] / 1000) for q in db.query(
        "SELECT q.cost_s, l.ms FROM queries q JOIN labels l ON l.query = q.id WHERE q.round = ?", [rid])]
    assert metrics[(2, "cost_mae_s")] == pytest.approx(float(np.median(errors)), rel=1e-6)


def test_pixel_budget_oracle_run(tmp_path, cache):
    w = tmp_path / "pa"
    r = launch([*TINY, "--workdir", str(w), "--budget", "40px", "--oracle", "--rounds", "2",
                "--region-radius", "2", "--strategy", "ent"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    con = sqlite3.connect(w / "project.db")
    per_image = con.execute("SELECT count(*) FROM queries WHERE kind='pixel' AND status='done' GROUP BY image").fetchall()
    assert [c for (c,) in per_image] == [40] * 6


def test_uda_methods_in_the_loop(tmp_path, cache):
    w = tmp_path / "dacs_cra"
    r = launch([*TINY, "--workdir", str(w), "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "1",
                "--method", "dacs+cra", "--workers", "2"], cache)   # spawned loader workers: data and labels pickle
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| round | labeled pixels" in r.stdout
    bad = launch([*TINY, "--workdir", str(tmp_path / "x"), "--method", "advent+fada"], cache, timeout=120)
    assert bad.returncode == 2 and "cannot be combined" in bad.stderr


@pytest.mark.parametrize("spec,terms", [("t2s+bida>sd", ["t2s=", "fwd_t=", "sd stage"]),
                                        ("cpsl>kd", ["sl_t=", "kd stage"]),
                                        ("depth>sprior", ["dens_t=", "spatial-prior"])])
def test_uda_methods_part2_end_to_end(tmp_path, cache, spec, terms):
    """Every method of part 2 through the CLI (HRDA: tests/test_hrda.py): an oracle round trains with
    the method's terms and runs its stage."""
    r = launch([*TINY, "--workdir", str(tmp_path / "w"), "--budget", "2.2%", "--oracle", "--rounds", "1",
                "--region-radius", "1", "--method", spec], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| round | labeled pixels" in r.stdout
    assert all(t in r.stderr for t in terms), [t for t in terms if t not in r.stderr]


def test_kill_during_round_two_then_resume_matches_uninterrupted(tmp_path, cache):
    args = [*TINY, "--budget", "2.2%", "--oracle", "--rounds", "3", "--region-radius", "1",
            "--round-iterations", "6"]
    ref = tmp_path / "ref"
    assert launch([*args, "--workdir", str(ref)], cache).returncode == 0
    w = tmp_path / "killed"
    env = {**os.environ, "SEGSTUDIO_CACHE": str(cache), "OMP_NUM_THREADS": "2"}
    p = subprocess.Popen([sys.executable, str(ROOT / "launch.py"), *args, "--workdir", str(w)], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    try:
        while time.time() < deadline:   # kill once round 2's queries exist but before it has finished
            time.sleep(0.05)
            if step_marked(w, "round2.score"):
                break
        assert p.poll() is None, "the run ended before it could be killed"
        p.send_signal(signal.SIGKILL)
    finally:
        p.wait()
    con = sqlite3.connect(w / "project.db")
    assert con.execute("SELECT count(*) FROM steps WHERE name = 'round3.train'").fetchone()[0] == 0
    con.close()
    r = launch([*args, "--workdir", str(w), "--resume"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert _labeled(w) == _labeled(ref)
    assert _boxes(w) == _boxes(ref) and len(_boxes(ref)) > 0   # the same regions, not only as many


def test_real_dataset_layouts_gta5_to_cityscapes_and_folder_with_classes_json(tmp_path, cache):
    from tests.fixtures_datasets import make_cityscapes, make_folder, make_gta5, make_synthia

    gta = make_gta5(tmp_path / "gta5", n=4, size=(40, 72))
    cs = make_cityscapes(tmp_path / "cityscapes", n_train=3, n_val=2, size=(64, 128))
    small = ["--crop", "32x64", "--output-stride", "16", "--iterations", "2", "--round-iterations", "2",
             "--source-size", "40x72", "--target-size", "32x64", "--budget", "2.2%", "--oracle", "--rounds", "1",
             "--region-radius", "1", "--device", "cpu"]
    r = launch(["--source", f"gta5:{gta}", "--target", f"cityscapes:{cs}", "--workdir", str(tmp_path / "w1"),
                *small], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    con = sqlite3.connect(tmp_path / "w1" / "project.db")
    # budgets live at the labels' full resolution (64x128), not the 32x64 training size
    assert con.execute("SELECT min(height), min(width) FROM images").fetchone() == (64, 128)
    assert con.execute("SELECT count(*) FROM queries WHERE status='done'").fetchone()[0] == 3 * round(64 * 128 * 0.022 / 9)
    con.close()

    folder = make_folder(tmp_path / "team", n=4, classes=["road", "building", "sky", "car"], size=(32, 64),
                         split=None)
    r = launch(["--source", f"gta5:{gta}", "--target", f"folder:{folder}", "--workdir", str(tmp_path / "w2"),
                *small], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| car |" in r.stdout and "| person |" not in r.stdout   # the folder's own label space
    syn = make_synthia(tmp_path / "synthia", n=3, size=(38, 64))
    r = launch(["--source", f"synthia:{syn}", "--target", f"cityscapes:{cs}", "--workdir", str(tmp_path / "w4"),
                *[v if v != "40x72" else "40x64" for v in small]], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "mIoU* (13 classes)" in r.stdout and "| terrain |" not in r.stdout   # SYNTHIA's 16 classes
    bad = launch(["--source", f"gta5:{tmp_path / 'missing'}", "--workdir", str(tmp_path / "w3")], cache, timeout=120)
    assert bad.returncode == 2 and "not found" in bad.stderr and "Traceback" not in bad.stderr
    # the depth method on GTA5 (no depth maps): one line before any training
    bad = launch(["--source", f"gta5:{gta}", "--target", f"cityscapes:{cs}", "--workdir", str(tmp_path / "w5"),
                  *small, "--method", "depth"], cache, timeout=120)
    assert bad.returncode == 2 and "needs source depth maps" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert "warm-up" not in bad.stdout


def test_resume_after_the_init_checkpoint_was_removed(tmp_path, cache):
    warm = tmp_path / "warm"
    assert launch([*TINY, "--workdir", str(warm), "--budget", "none"], cache).returncode == 0
    init = tmp_path / "init.pt"
    (warm / "checkpoints" / "warmup.pt").rename(init)
    w = tmp_path / "from_init"
    args = [*TINY, "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "1", "--workdir", str(w)]
    r = launch([*args, "--init", str(init)], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    init.unlink()   # the run's warm-up came from a file that is gone now; its round 1 checkpoint is not
    again = launch([*args, "--resume"], cache)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Traceback" not in again.stderr


def test_recipes_set_defaults_and_explicit_options_win():
    from app.cli import build_parser, config_from_args
    from app.config import RunConfig

    def cfg(*argv):
        return config_from_args(build_parser().parse_args(list(argv)))

    cpu = cfg()
    assert (cpu.head, cpu.lr, cpu.crop, cpu.warmup, cpu.grad_clip) == ("deeplabv3plus", 2.5e-3, (128, 256), 50, 5.0)
    assert cpu == RunConfig()   # the cpu recipe is RunConfig's own defaults
    paper = cfg("--recipe", "paper")
    assert (paper.head, paper.output_stride, paper.lr, paper.crop, paper.warmup, paper.grad_clip) == \
        ("deeplabv2", 8, 2.5e-4, None, 0, None)
    assert paper.target_size == (640, 1280) and paper.scale == (1.0, 1.0)
    mixed = cfg("--recipe", "paper", "--lr", "1e-3", "--crop", "256x512", "--head", "deeplabv3plus",
                "--grad-clip", "10", "--infer-window", "none")
    assert (mixed.lr, mixed.crop, mixed.head, mixed.output_stride, mixed.grad_clip, mixed.infer_window) == \
        (1e-3, (256, 512), "deeplabv3plus", 8, 10.0, None)
    assert cfg("--crop", "none", "--grad-clip", "0").crop is None
    assert cfg("--grad-clip", "0").grad_clip is None


def test_resume_of_a_run_made_by_the_old_model_is_one_line(tmp_path, capsys):
    """A project.db whose run was configured by the DeepLabV2-on-resized-inputs version (``image_size``,
    no ``head``) cannot be continued with the new model: one line, exit 2, the run left untouched."""
    import storage
    from app.cli import main
    from app.config import RunConfig

    w = tmp_path / "old"
    db = storage.open_store(w)
    old = {k: v for k, v in RunConfig(workdir=str(w)).to_dict().items() if k not in ("head", "crop", "scale")}
    storage.start_run(db, {**old, "image_size": [128, 256]})
    db.conn.close()
    rc = main(["--workdir", str(w), "--resume", "--budget", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "older version" in err
    assert storage.last_run(storage.open_store(w))["status"] == "running"


def test_resume_refuses_a_unit_the_run_predates(tmp_path, capsys):
    """A run stored before --unit existed asked the default unit: --resume --unit superpixel would switch
    units mid-run, so it is refused by name (one line, exit 2) before any work."""
    import storage
    from app.cli import main
    from app.config import RunConfig

    w = tmp_path / "old"
    db = storage.open_store(w)
    old = {k: v for k, v in RunConfig(workdir=str(w)).to_dict().items()
           if k not in ("unit", "superpixel_size", "cost_aware", "oracle_answer")}
    storage.start_run(db, old)
    db.conn.close()
    rc = main(["--workdir", str(w), "--resume", "--unit", "superpixel"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "--unit superpixel" in err and "was made with --unit auto" in err


def test_gpu_page_commands_are_valid(tmp_path):
    """Every launch.py command of docs/GPU.md (plain or under torchrun) parses and validates with the
    CLI's own parser: a renamed or removed option fails here."""
    import re
    import shlex

    from app.cli import build_parser, config_from_args
    from app.config import validate

    text = (ROOT / "docs" / "GPU.md").read_text()
    blocks = re.findall(r"(?:^    .*\n?)+", text, flags=re.M)
    commands = [" ".join(line.strip().rstrip("\\") for line in b.splitlines()) for b in blocks]
    commands = [c for c in commands if "launch.py" in c]
    assert len(commands) >= 4, commands
    weights = tmp_path / "resnet101.pth"
    weights.write_bytes(b"")
    for cmd in commands:
        words = shlex.split(cmd)
        args = words[words.index("launch.py") + 1:]
        if words[0] == "torchrun":   # torchrun's own options, by torchrun's parser
            from torch.distributed.run import get_args_parser

            ns = get_args_parser().parse_args(words[1:])
            assert ns.training_script == "launch.py" and ns.nproc_per_node, cmd
        args = [str(weights) if a.endswith(".pth") else a for a in args]
        args = [str(tmp_path / "w") if a.startswith(("runs/", "/shared/")) else a for a in args]
        cfg = validate(config_from_args(build_parser().parse_args(args)))
        assert cfg.recipe == "paper" and cfg.head == "deeplabv2" and cfg.output_stride == 8, cmd
        assert cfg.budget in ("2.2%", "40px") and cfg.rounds == 5 and cfg.oracle, cmd


def test_resumed_run_keeps_the_label_shift_adjustment_of_its_last_round(tmp_path, cache):
    """IA's priors are measured in its stage after a round's training; a resumed run (a new process)
    must score and evaluate with them, as the run that trained them did."""
    import torch

    from app.session import reopen
    from core.train import load_checkpoint

    w = tmp_path / "ia"
    r = launch([*TINY, "--workdir", str(w), "--budget", "2.2%", "--oracle", "--rounds", "1", "--region-radius", "1",
                "--method", "ripu+ia"], cache)
    assert r.returncode == 0, r.stderr[-3000:]
    os.environ["SEGSTUDIO_CACHE"], before = str(cache), os.environ.get("SEGSTUDIO_CACHE")
    try:
        s = reopen(str(w))
        s.resume_model()
    finally:
        os.environ.pop("SEGSTUDIO_CACHE") if before is None else os.environ.__setitem__("SEGSTUDIO_CACHE", before)
    assert s.adjust is not None
    bias = next(st["bias"] for st in load_checkpoint(w / "checkpoints" / "round1.pt")["methods"] if "bias" in st)
    logits = torch.zeros(1, 19, 2, 2)
    assert torch.allclose(s.adjust(logits), logits + bias.view(1, -1, 1, 1).float(), atol=1e-6)
